"""A form built from a stage's configuration dataclass: one editor per field, with tooltips.

Each field's tooltip is the help text of its declaration (``alignet_engine.params.param``,
the text ``alignet-cli --help`` shows for the field's flag) and its spin box's range the
declared ``bounds``. The form only edits values; the engine's dataclass validates them.
:meth:`ConfigForm.config` builds the dataclass and raises the engine's error, which the page
shows next to the form.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, Literal

from PySide6.QtCore import QLocale
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from alignet_engine.params import Interval, field_default, type_hints
from alignet_engine.params import unwrap_optional as _unwrap

_NONE_TEXT = "auto"
_INT_LIMIT = 1_000_000_000  # a QSpinBox holds a C int; no count here comes near it


def tooltip(cls: type, name: str) -> str:
    """The tooltip of field ``name`` of ``cls``: its declared help, then its code name in
    brackets (the name the CLI's flag and the config files use)."""
    help_ = {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("help", "")
    return f"{help_} [{name}]" if help_ else ""


class ConfigForm(QWidget):
    """Editors for ``fields`` of dataclass ``cls``.

    Parameters
    ----------
    cls : a frozen stage configuration dataclass (``from_dict`` / ``to_dict``).
    fields : which fields to show, in order (default: all).
    choices : field → allowed values for a string field without a ``Literal`` type
        (e.g. the project's image sets); shown as an editable combo box.
    labels : field → label text (default: the field name with spaces).
    """

    def __init__(
        self,
        cls: type,
        *,
        fields: Sequence[str] | None = None,
        choices: Mapping[str, Sequence[str]] | None = None,
        labels: Mapping[str, str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.cls = cls
        hints = type_hints(cls)
        all_fields = {f.name: f for f in dataclasses.fields(cls)}
        self.names = list(fields) if fields is not None else list(all_fields)
        self.editors: dict[str, QWidget] = {}
        self._kinds: dict[str, tuple[Any, bool]] = {}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        # a narrow side panel (laptop screens) puts long rows' fields under their labels
        layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        labels = labels or {}
        for name in self.names:
            f = all_fields[name]
            default = field_default(f)
            tp, optional = _unwrap(hints[name])
            self._kinds[name] = (tp, optional)
            editor = self._editor(tp, optional, (choices or {}).get(name), f.metadata.get("bounds"))
            editor.setObjectName(f"field_{name}")
            _narrowable(editor)
            editor.setToolTip(tooltip(cls, name))
            self.editors[name] = editor
            self.set_value(name, None if default is dataclasses.MISSING else default)
            label = labels.get(name, name.replace("_", " "))
            layout.addRow(label, editor)
            layout.labelForField(editor).setToolTip(editor.toolTip())

    @staticmethod
    def _editor(
        tp: Any, optional: bool, choices: Sequence[str] | None, bounds: Interval | None
    ) -> QWidget:
        if tp is bool:
            return QCheckBox()
        if typing.get_origin(tp) is Literal:
            box = QComboBox()
            if optional:
                box.addItem(_NONE_TEXT)
            box.addItems([str(a) for a in typing.get_args(tp)])
            return box
        low, high = _range(bounds)
        if tp is int and not optional:
            spin = QSpinBox()
            spin.setRange(int(max(low, -_INT_LIMIT)), int(min(high, _INT_LIMIT)))
            spin.setGroupSeparatorShown(True)
            return spin
        if choices is not None:
            box = QComboBox()
            box.setEditable(True)
            if optional:
                box.addItem(_NONE_TEXT)
            box.addItems(list(choices))
            return box
        edit = QLineEdit()
        if optional:
            edit.setPlaceholderText(_NONE_TEXT)
        if tp in (int, float) and bounds is not None:
            # refuses a sign the range excludes as it is typed; the config names the rest
            validator = QDoubleValidator(max(low, -1e300), min(high, 1e300), 1000, edit)
            validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
            validator.setLocale(QLocale.c())  # "0.1" in every locale, as the CLI reads it
            edit.setValidator(validator)
        return edit

    # ----------------------------------------------------------------- values
    def set_choices(
        self,
        name: str,
        values: Sequence[str],
        *,
        preferred: str | None = None,
        strict: bool = False,
    ) -> None:
        """Replace the choices of a combo-box field, keeping its current text if possible.

        A required field never shows "auto": when its text is empty (or, with ``strict``,
        not one of ``values``), it takes ``preferred`` if that is a value, else the first
        value. ``strict`` suits fields that must name something that exists (image sets).
        """
        box = self.editors[name]
        if not isinstance(box, QComboBox):
            return
        current = box.currentText()
        _tp, optional = self._kinds[name]
        box.blockSignals(True)
        box.clear()
        if optional:
            box.addItem(_NONE_TEXT)
        box.addItems(list(values))
        box.blockSignals(False)
        known = current in values
        if current and (known or (box.isEditable() and not strict)) and current != _NONE_TEXT:
            box.setCurrentText(current)
        elif optional and current == _NONE_TEXT:
            box.setCurrentText(_NONE_TEXT)
        elif values and not optional:
            box.setCurrentText(preferred if preferred in values else values[0])
        elif not optional:
            box.setCurrentText("")

    def set_value(self, name: str, value: Any) -> None:
        editor = self.editors[name]
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QSpinBox):
            editor.setValue(int(value or 0))
        elif isinstance(editor, QComboBox):
            # a required field without a value stays empty (the page picks a real default)
            none = _NONE_TEXT if self._kinds[name][1] else ""
            editor.setCurrentText(none if value is None else str(value))
        elif isinstance(editor, QLineEdit):
            editor.setText("" if value is None else _format(value))

    def values(self) -> dict[str, Any]:
        """The fields as Python values (strings parsed to the field's type)."""
        out: dict[str, Any] = {}
        for name in self.names:
            tp, optional = self._kinds[name]
            editor = self.editors[name]
            if isinstance(editor, QCheckBox):
                out[name] = editor.isChecked()
                continue
            if isinstance(editor, QSpinBox):
                out[name] = editor.value()
                continue
            text = (
                editor.currentText() if isinstance(editor, QComboBox) else editor.text()  # type: ignore[attr-defined]
            ).strip()
            if optional and text in ("", _NONE_TEXT):
                out[name] = None
            else:
                out[name] = _parse(name, text, tp)
        return out

    def config(self, **extra: Any) -> Any:
        """The dataclass from the form's values plus ``extra`` fields (raises on bad values)."""
        return self.cls.from_dict({**self.values(), **extra})


def _range(bounds: Interval | None) -> tuple[float, float]:
    """The closed range of an editor for ``bounds`` (an open end of an integer range moves
    one step in; a float's open end stays: the config rejects the end value itself)."""
    if bounds is None:
        return -float("inf"), float("inf")
    low = -float("inf") if bounds.left is None else float(bounds.left)
    high = float("inf") if bounds.right is None else float(bounds.right)
    if bounds.kind is Integral and bounds.closed in ("right", "neither"):
        low += 1
    if bounds.kind is Integral and bounds.closed in ("left", "neither"):
        high -= 1
    return low, high


def _format(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse(name: str, text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    try:
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if origin is tuple:
            (inner, *_rest) = typing.get_args(tp) or (str,)
            parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
            return tuple(_parse(name, p, inner) for p in parts)
    except ValueError:
        raise ValueError(f"{name.replace('_', ' ')}: '{text}' is not a valid number") from None
    return text


def _narrowable(editor: QWidget) -> None:
    """Let an editor shrink below its longest entry / widest number (±1e9 with separators
    asks for ~120 px), so forms fit a narrow side panel."""
    if isinstance(editor, QComboBox):
        editor.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        editor.setMinimumContentsLength(8)
        if editor.isEditable():  # a narrowed field shows the start of its text, not the end
            editor.currentTextChanged.connect(
                lambda _t, e=editor: e.lineEdit().setCursorPosition(0)
            )
    elif isinstance(editor, QSpinBox):
        editor.setMinimumWidth(70)
