"""Every stage parameter declared once: its help text, its range and its CLI spellings.

A configuration dataclass field made with :func:`param` carries in ``field.metadata``

- ``help``: what the parameter does, in plain words: the GUI form's tooltip and the
  ``alignet-cli`` flag's ``--help`` text (``alignet_app.widgets.config_form``,
  ``alignet_engine.cli``);
- ``bounds``: an :class:`Interval` (scikit-learn's ``_parameter_constraints`` idea): the
  config validates every value against it on construction, the CLI therefore rejects a value
  out of range with exit status 2, and the GUI's spin boxes take their ranges from it;
- ``aliases``: older CLI spellings kept working (``--seed`` for ``--random-state``).

The choices of a field come from its ``Literal`` type. This module imports only the
standard library, so the CLI can build its parser from the dataclasses without torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from alignet_engine.errors import InputError

_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Interval:
    """The values a numeric parameter may take, as in ``sklearn.utils._param_validation``.

    ``Interval(numbers.Integral, 1, None, closed="left")`` is an integer ≥ 1;
    ``Interval(numbers.Real, 0, 1, closed="left")`` a finite number in [0, 1). ``None`` for
    ``left`` / ``right`` leaves that side open. Booleans are never numbers here.
    """

    kind: type  # numbers.Integral or numbers.Real
    left: float | None
    right: float | None
    closed: Literal["left", "right", "both", "neither"] = "both"

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if not math.isfinite(float(value)):  # type: ignore[arg-type]
            return False
        v = float(value)  # type: ignore[arg-type]
        if self.left is not None and (
            v < self.left or (v == self.left and self.closed in ("right", "neither"))
        ):
            return False
        return not (
            self.right is not None
            and (v > self.right or (v == self.right and self.closed in ("left", "neither")))
        )

    def describe(self) -> str:
        """``"an integer ≥ 1"``, ``"a number in [0, 1)"``: the phrase error messages use."""
        what = "an integer" if self.kind is numbers.Integral else "a finite number"
        lo, hi = _fmt(self.left), _fmt(self.right)
        if self.left is not None and self.right is not None:
            a = "[" if self.closed in ("left", "both") else "("
            b = "]" if self.closed in ("right", "both") else ")"
            return f"{what} in {a}{lo}, {hi}{b}"
        if self.left is not None:
            return f"{what} {'≥' if self.closed in ('left', 'both') else '>'} {lo}"
        if self.right is not None:
            return f"{what} {'≤' if self.closed in ('right', 'both') else '<'} {hi}"
        return what


def _fmt(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else f"{x:g}")


def param(
    default: Any = _MISSING,
    help: str = "",
    *,
    bounds: Interval | None = None,
    aliases: tuple[str, ...] = (),
    default_factory: Any = _MISSING,
) -> Any:
    """A dataclass field with its help, range and CLI aliases (see the module docstring)."""
    metadata = {"help": help, "bounds": bounds, "aliases": tuple(aliases)}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of dataclass ``cls`` (cached: validation runs per instance)."""
    return typing.get_type_hints(cls)


def field_help(cls: type) -> dict[str, str]:
    """``{field: help}`` for the fields of ``cls`` declared with a help text."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if f.metadata.get("help")}


def field_bounds(cls: type) -> dict[str, Interval]:
    """``{field: Interval}`` for the fields of ``cls`` declared with a range."""
    return {
        f.name: f.metadata["bounds"]
        for f in dataclasses.fields(cls)
        if f.metadata.get("bounds") is not None
    }


def field_default(f: dataclasses.Field[Any]) -> Any:
    """The field's default value (``MISSING`` for a required field)."""
    if f.default is not _MISSING:
        return f.default
    factory: Any = f.default_factory
    return factory() if factory is not _MISSING else _MISSING


def check_params(obj: Any) -> None:
    """Check every field of dataclass instance ``obj`` against its declaration.

    ``Literal`` fields must hold one of their values, ``bool`` fields a bool, fields with
    ``bounds`` a number in range (``None`` where the type allows it).

    Raises
    ------
    InputError : naming the config class and the field, with what it must be.
    """
    cls: Any = type(obj)
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        tp, optional = unwrap_optional(hints[f.name])
        if value is None and optional:
            continue
        why = None
        bounds = f.metadata.get("bounds")
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            if value not in allowed:
                why = "must be one of " + ", ".join(map(str, allowed))
        elif tp is bool:
            if not isinstance(value, bool):
                why = "must be true or false"
        elif bounds is not None and value not in bounds:
            why = f"must be {bounds.describe()}"
        if why is not None:
            raise InputError(f"{why}; got {value!r}", source=cls.__name__, field=f.name)
