"""The Triplets page: sample pool triplets and inspect them (or human judgments) one by one.

Sources: the current triplets run (read lazily from the project, any size) and each imported
odd-one-out judgment set (scored by the teacher). Everything the inspector computes (opening a
judgment set, filters, sorting, the per-type breakdown) runs as a read-only view job
(:mod:`alignet_app.viewjobs`) beside the engine thread, so it works while a distillation
trains and on a read-only project. Filters apply as they change (debounced).

Layout for laptop screens (1280×800, 1366×768): the side panel and the table's fixed columns
are narrow, the three item columns shrink, the cards scale, and the detail's chart moves under
the cards when the panel is narrow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QItemSelection, Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.pages.base import Page, StageControls, column, error_label, scroll_column
from alignet_app.session import Session
from alignet_app.widgets import figure_export
from alignet_app.widgets.config_form import ConfigForm
from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_app.widgets.triplet_view import (
    HUMAN_COLUMNS,
    SORTABLE,
    Col,
    TripletDetail,
    TripletTable,
    TripletTableModel,
)
from alignet_engine.align.triplet_sampling import STRATEGIES
from alignet_engine.config import SampleConfig
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Job, JobControl
from alignet_engine.stages.triplets import sample
from alignet_engine.views import browse, inspector

#: wait this long after the last change of a filter widget before filtering (ms)
FILTER_DEBOUNCE_MS = 300


def _filter_and_sort(
    view: browse.TripletView,
    spec: browse.TripletFilter,
    sort: tuple[str, bool] | None,
    control: JobControl,
) -> Job[tuple[browse.FilterResult, list[inspector.TypeRow]]]:
    """The view job behind the live filters: filter, sort, then the per-type breakdown."""
    result = yield from browse.filter_triplets(view, spec, control=control)
    if sort is not None:
        result = yield from inspector.sort_rows(
            view, result, sort[0], descending=sort[1], control=control
        )
    rows = yield from inspector.breakdown(view, result, control=control)
    return result, rows


class TripletsPage(Page):
    key = "triplets"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.view: browse.TripletView | None = None
        self.sources: list[browse.TripletSource] = []
        self.breakdown_rows: list[inspector.TypeRow] = []
        self._signature: tuple[Any, ...] | None = None
        self._sort: tuple[str, bool] | None = None
        self.thumbs = ThumbnailCache(size=224, capacity=300, parent=self)
        self.splitter = self.set_panes(self._build_side(), self._build_inspector(), (280, 1000))
        # long entries (source names) must not widen the side panel past the screen
        for box in (
            self.source_box,
            self.kind_box,
            self.cluster_box,
            self.cluster_of,
            self.split_box,
        ):
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(8)
        self._update_filter_widgets()

    # ----------------------------------------------------------------- layout
    def _build_side(self) -> QScrollArea:
        """The side panel: source, filters, breakdown and sampling, scrolling."""
        return scroll_column(
            self._build_source(),
            self._build_filters(),
            self._build_breakdown(),
            self._build_sampling(),
            min_width=250,
            margins=4,
            sideways=False,
        )

    def _build_source(self) -> QGroupBox:
        """The source chooser and what the open source holds."""
        self.source_box = QComboBox()
        self.source_box.setObjectName("source")
        self.source_box.setToolTip(
            "Browse the pool triplets of the current triplet run, or a human judgment set "
            "compared with the teacher's choices."
        )
        self.source_box.activated.connect(self._source_chosen)
        self.source_info = QLabel()
        self.source_info.setWordWrap(True)
        source_group = QGroupBox("Source")
        sl = QVBoxLayout(source_group)
        sl.addWidget(self.source_box)
        sl.addWidget(self.source_info)
        return source_group

    def _build_filters(self) -> QGroupBox:
        """The filters: applied as they change (debounced), as a view job."""
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(FILTER_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.apply_filters)
        self.disagree = QCheckBox("Disagreements only")
        self.disagree.setToolTip("Only rows where the human's odd one differs from the teacher's.")
        self.disagree.toggled.connect(self._filter_changed)
        self.entropy_min = QDoubleSpinBox()
        self.entropy_max = QDoubleSpinBox()
        for spin, value in ((self.entropy_min, 0.0), (self.entropy_max, browse.MAX_ENTROPY)):
            spin.setRange(0.0, round(browse.MAX_ENTROPY, 3))
            spin.setDecimals(3)
            spin.setSingleStep(0.05)
            spin.setValue(value)
            spin.setToolTip(
                "Entropy of the teacher's choice distribution in bits: 0 = certain, "
                "1.585 = all three equally likely."
            )
            spin.valueChanged.connect(self._filter_changed)
            spin.setMinimumWidth(60)  # two must fit the narrow side panel
        entropy_row = QHBoxLayout()
        entropy_row.addWidget(self.entropy_min, 1)
        entropy_row.addWidget(QLabel("to"))
        entropy_row.addWidget(self.entropy_max, 1)
        self.kind_box = QComboBox()
        self.kind_box.setToolTip(
            "The sampling strategy (pool triplets) or triplet type (judgments)."
        )
        self.cluster_box = QComboBox()
        self.cluster_box.setToolTip("Rows involving this cluster of the current clusters run.")
        self.cluster_of = QComboBox()
        self.cluster_of.addItem("any item", "any")
        self.cluster_of.addItem("the odd one", "odd")
        self.cluster_of.setToolTip("Whether any item or the teacher's odd one is in the cluster.")
        self.split_box = QComboBox()
        for text, value in (("all", "all"), ("train", "train"), ("validation", "val")):
            self.split_box.addItem(text, value)
        self.split_box.setToolTip("Training or held-out validation triplets.")
        for box in (self.kind_box, self.cluster_box, self.cluster_of, self.split_box):
            box.currentIndexChanged.connect(self._filter_changed)
        self.apply_button = QPushButton("Apply now")
        self.apply_button.setToolTip("Filters apply by themselves a moment after a change.")
        self.apply_button.clicked.connect(self.apply_filters)
        self.reset_button = QPushButton("Reset")
        self.reset_button.clicked.connect(self.reset_filters)
        self.count_label = QLabel()
        self.count_label.setObjectName("count")
        self.count_label.setWordWrap(True)
        self.filter_notes = QLabel()
        self.filter_notes.setObjectName("filter_notes")
        self.filter_notes.setWordWrap(True)
        self.filter_notes.setStyleSheet("color: palette(placeholder-text);")
        self.filter_error = error_label()
        filter_group = QGroupBox("Filters")
        fl = QFormLayout(filter_group)
        fl.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        fl.addRow(self.disagree)
        fl.addRow("Entropy", entropy_row)
        fl.addRow("Strategy / type", self.kind_box)
        fl.addRow("Cluster", self.cluster_box)
        fl.addRow("… containing", self.cluster_of)
        fl.addRow("Split", self.split_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.reset_button)
        fl.addRow(buttons)
        fl.addRow(self.filter_notes)
        fl.addRow(self.count_label)
        fl.addRow(self.filter_error)
        return filter_group

    def _build_breakdown(self) -> QGroupBox:
        """The breakdown of the rows shown, per triplet type / split."""
        self.breakdown = QTableWidget(0, 4)
        self.breakdown.setObjectName("breakdown")
        self.breakdown.setHorizontalHeaderLabels(["type", "rows", "disagree", "entropy"])
        self.breakdown.verticalHeader().hide()
        bh = self.breakdown.horizontalHeader()
        bh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            bh.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.breakdown.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.breakdown.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.breakdown.setMaximumHeight(150)
        self.breakdown.setToolTip(
            "The rows the filters keep, per triplet type (judgments) or split (pool): how many, "
            "how often the teacher's odd one differs from the human's, and the mean entropy "
            "of the teacher's choice in bits."
        )
        figure_export.install(
            self.breakdown,
            lambda: figure_export.model_csv(self.breakdown.model()),
            name="breakdown",
        )
        breakdown_group = QGroupBox("Breakdown of the rows shown")
        QVBoxLayout(breakdown_group).addWidget(self.breakdown)
        return breakdown_group

    def _build_sampling(self) -> StageControls:
        """The form that samples pool triplets."""
        self.form = ConfigForm(
            SampleConfig,
            choices={"strategy": STRATEGIES},
            labels={"n_triplets": "triplets", "n_val": "validation triplets"},
        )
        controls = StageControls(
            "Sample triplets",
            self.form,
            "Sample triplets",
            self.start_sampling,
            tooltip="Sample triplets from the clustered pool; the teacher picks each odd one out.",
            error=self.error,
        )
        self.sample_button = controls.button
        self.sample_error = self.error
        return controls

    def _build_inspector(self) -> QSplitter:
        """The selected triplet's detail above the table and its go-to-row bar."""
        self.model = TripletTableModel(self)
        self.table = TripletTable()
        self.table.setModel(self.model)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        header = self.table.horizontalHeader()
        header.sectionClicked.connect(self._header_clicked)
        self.jump = QLineEdit()
        self.jump.setPlaceholderText("row number")
        self.jump.setMaximumWidth(140)
        self.jump.setToolTip("Select the triplet with this row number (Enter).")
        self.jump.returnPressed.connect(lambda: self.jump_to(self.jump.text()))
        self.jump_note = QLabel()
        self.sort_note = QLabel("Click a column header (verdict, P, entropy, …) to sort.")
        jump_row = QHBoxLayout()
        jump_row.addWidget(QLabel("Go to row"))
        jump_row.addWidget(self.jump)
        jump_row.addWidget(self.jump_note)
        jump_row.addStretch(1)
        jump_row.addWidget(self.sort_note)
        self.detail = TripletDetail(self.thumbs)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.detail)
        right.addWidget(column(jump_row, self.table, stretch=self.table))
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        right.setSizes([440, 320])
        return right

    # ----------------------------------------------------------------- redraw
    def refresh(self) -> None:
        if not self.session.is_open:
            self._signature = None
            self._set_view(None)
            self.source_box.clear()
            self.source_info.setText("No project open.")
            return
        info = self.session.info()
        signature = (
            info["path"],
            tuple(sorted(info["current"].items())),
            tuple(info["judgments"]),
        )
        if signature == self._signature:
            return  # e.g. another page's job ended: nothing this page shows changed
        old_run = dict(self._signature[1]).get("triplets") if self._signature else None
        self._signature = signature
        previous = self.view.source.name if self.view is not None else None
        try:
            self.sources = browse.triplet_sources(self.session.project)
        except AlignetError as exc:
            self.sources = []
            self.source_info.setText(str(exc))
        self.source_box.clear()
        for s in self.sources:
            self.source_box.addItem(s.label, s.name)
        if not self.sources:
            self._set_view(None)
            self.source_info.setText(
                "No triplets yet: cluster the pool, then sample triplets below (or import "
                "odd-one-out judgments on the Data page)."
            )
            return
        names = [s.name for s in self.sources]
        index = names.index(previous) if previous in names else 0
        if previous is not None and previous not in names and self.sources[0].kind == "pool":
            index = 0  # a new triplet run replaced the one shown
        new_run = info["current"].get("triplets")
        if new_run is not None and new_run != old_run:
            index = 0  # triplets were just sampled: show them, not the judgments shown before
        self.source_box.setCurrentIndex(index)
        self._open(self.sources[index])

    def _source_chosen(self, index: int) -> None:
        if 0 <= index < len(self.sources):
            self._open(self.sources[index])

    def _open(self, source: browse.TripletSource) -> None:
        """Open ``source``: pool triplets at once (lazy), judgments as a view job."""
        self.filter_error.hide()
        if source.kind == "pool":
            try:
                view = browse.open_source(self.session.project, source)
            except AlignetError as exc:
                self._set_view(None)
                self.source_info.setText(str(exc))
                return
            self._set_view(view)
            return
        self._set_view(None)
        self.source_info.setText(f"Scoring '{source.name}' with the teacher…")
        self.view_job(
            "triplets:open",
            lambda project, control: browse.open_source_job(project, source, control),
            self._set_view,
            lambda text: self.source_info.setText(text),
        )

    def _set_view(self, view: browse.TripletView | None) -> None:
        if self.view is not None and self.view is not view:
            self.view.close()
        self.session.views.cancel("triplets:filter")
        self.view = view
        self._sort = None
        self.table.horizontalHeader().setSortIndicatorShown(False)
        self.model.set_view(view)
        # hide the columns a source has no data for (clusters of another image set, humans)
        self.table.setColumnHidden(Col.CLUSTERS, view is None or view.n_clusters == 0)
        for col in HUMAN_COLUMNS:
            self.table.setColumnHidden(col, view is None or not view.has_human)
        self.detail.set_legend(view is not None and view.has_human)
        self._update_filter_widgets()
        self._show_count()
        if view is None:
            self.detail.clear("No source open.")
            self._show_breakdown([])
            return
        text = f"{view.n:,} triplets over image set '{view.source.image_set}'."
        if isinstance(view, browse.JudgmentTriplets):
            s = browse.judgment_summary(view)
            text += (
                f"<br>Teacher: {s['teacher']}. It agrees with {s['teacher_agreement']:.1%} of "
                f"the responses ({s['n_disagreements']:,} disagreements)."
            )
            if s["human_agreement"] is not None:
                text += (
                    f"<br>Repeated triplets ({s['n_repeated_rows']:,} rows): people agree "
                    f"with each other {s['human_agreement']:.1%} of the time."
                )
        self.source_info.setText(text)
        if view.n:
            self.table.select_row(0)
        else:
            self.detail.clear("No triplets.")
        self.apply_filters()  # the breakdown of all rows (and any filter still set)

    # ----------------------------------------------------------------- filters
    def _update_filter_widgets(self) -> None:
        view = self.view
        widgets = (self.kind_box, self.cluster_box, self.cluster_of, self.split_box)
        for w in (self.disagree, *widgets):
            w.blockSignals(True)
        self.kind_box.clear()
        self.kind_box.addItem("any", None)
        self.cluster_box.clear()
        self.cluster_box.addItem("any", None)
        if view is not None:
            for kind in view.kinds:
                self.kind_box.addItem(kind, kind)
            for c in range(view.n_clusters):
                self.cluster_box.addItem(str(c), c)
        has = view is not None
        human = has and view.has_human
        clusters = has and view.n_clusters > 0
        split = has and view.is_split
        kinds = has and len(view.kinds) > 1
        self.disagree.setEnabled(human)
        if not human:
            self.disagree.setChecked(False)
        self.kind_box.setEnabled(kinds)
        self.cluster_box.setEnabled(clusters)
        self.cluster_of.setEnabled(clusters)
        self.split_box.setEnabled(split)
        if not split:
            self.split_box.setCurrentIndex(0)
        self.apply_button.setEnabled(has)
        self.reset_button.setEnabled(has)
        for w in (self.disagree, *widgets):
            w.blockSignals(False)
        # why a filter is off, in words on the page (not only in a tooltip)
        notes = []
        if has and not human:
            notes.append("Disagreements: needs human answers (choose a human judgment set).")
        if has and not clusters:
            notes.append(
                f"Cluster: no current clusters run on image set '{view.source.image_set}'."
            )
        if has and not split:
            notes.append("Split: this source has no train / validation split.")
        if has and not kinds:
            only = view.kinds[0] if view.kinds else "no types"
            notes.append(f"Strategy / type: one value only ({only}).")
        self.filter_notes.setText("<br>".join(f"<i>{n}</i>" for n in notes))
        self.filter_notes.setVisible(bool(notes))

    def current_filter(self) -> browse.TripletFilter:
        """The filter the widgets describe (open-ended bounds at 0 and log2 3)."""
        lo, hi = self.entropy_min.value(), self.entropy_max.value()
        return browse.TripletFilter(
            entropy_min=lo if lo > 0 else None,
            entropy_max=hi if hi < self.entropy_max.maximum() else None,
            cluster=self.cluster_box.currentData(),
            cluster_of=self.cluster_of.currentData(),
            kind=self.kind_box.currentData(),
            split=self.split_box.currentData(),
            disagreements=self.disagree.isChecked(),
        )

    def _filter_changed(self, *_args: object) -> None:
        if self.view is not None:
            self._debounce.start()

    def apply_filters(self) -> None:
        """Filter (and sort) the source as a view job; the table follows when it ends."""
        self._debounce.stop()
        view = self.view
        if view is None:
            return
        self.filter_error.hide()
        spec = self.current_filter()
        try:
            browse.check_filter(view, spec)
        except AlignetError as exc:
            self._filter_failed(str(exc))
            return
        sort = self._sort
        self.count_label.setText(f"Filtering {view.n:,} triplets…")
        self.session.views.submit(
            "triplets:filter",
            lambda control: _filter_and_sort(view, spec, sort, control),
            lambda out: self._filtered(view, *out),
            self._filter_failed,
        )

    def reset_filters(self) -> None:
        widgets = (
            self.disagree,
            self.entropy_min,
            self.entropy_max,
            self.kind_box,
            self.cluster_box,
            self.cluster_of,
            self.split_box,
        )
        for w in widgets:
            w.blockSignals(True)
        self.disagree.setChecked(False)
        self.entropy_min.setValue(0.0)
        self.entropy_max.setValue(self.entropy_max.maximum())
        for box in (self.kind_box, self.cluster_box, self.cluster_of, self.split_box):
            box.setCurrentIndex(0)
        for w in widgets:
            w.blockSignals(False)
        self.apply_filters()

    def _filtered(
        self,
        view: browse.TripletView,
        result: browse.FilterResult,
        rows: list[inspector.TypeRow],
    ) -> None:
        if view is not self.view:
            return  # the source changed while the filter ran
        self.model.set_filter(None if result.indices is None and not result.info else result)
        self._show_count()
        self._show_breakdown(rows)
        if self.model.rowCount():
            self.table.select_row(0)
        else:
            self.detail.clear("No triplet passes these filters.")

    def _filter_failed(self, text: str) -> None:
        self.filter_error.setText(text)
        self.filter_error.show()
        self._show_count()

    def _show_count(self) -> None:
        view = self.view
        if view is None:
            self.count_label.setText("")
            return
        shown = self.model.rowCount()
        text = f"{shown:,} of {view.n:,} triplets" if shown != view.n else f"{view.n:,} triplets"
        total = self.breakdown_rows[0] if self.breakdown_rows else None
        if total is not None and total.disagreement_rate is not None and total.n == shown:
            text += f"; the teacher disagrees with {total.disagreement_rate:.1%} of them"
        self.count_label.setText(text)

    def _show_breakdown(self, rows: list[inspector.TypeRow]) -> None:
        self.breakdown_rows = rows
        table = self.breakdown
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            rate = row.disagreement_rate
            cells = (
                row.kind,
                f"{row.n:,}",
                "—" if rate is None else f"{rate:.1%}",
                f"{row.mean_entropy:.3f}" if np.isfinite(row.mean_entropy) else "—",
            )
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                table.setItem(r, c, item)
        self._show_count()

    # ----------------------------------------------------------------- sort and jump
    def _header_clicked(self, col: int) -> None:
        key = SORTABLE.get(col)
        if key is None or self.view is None:
            self.sort_note.setText(f"'{self.model.COLUMNS[col]}' cannot be sorted.")
            return
        descending = self._sort == (key, False)  # a second click reverses
        self.sort_by(key, descending=descending)
        header = self.table.horizontalHeader()
        header.setSortIndicatorShown(True)
        header.setSortIndicator(
            col, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder
        )

    def sort_by(self, key: str, *, descending: bool = False) -> None:
        """Order the rows shown by ``key`` (:data:`inspector.SORT_KEYS`), as a view job."""
        self._sort = (key, descending)
        order = "descending" if descending else "ascending"
        self.sort_note.setText(f"Sorted by {inspector.SORT_KEYS[key]} ({order}).")
        self.apply_filters()

    def jump_to(self, text: str) -> bool:
        """Select the row with source row number ``text``; False (with a note) if not shown."""
        try:
            row = int(str(text).replace(",", "").strip())
        except ValueError:
            self.jump_note.setText("type a row number")
            return False
        at = self.model.table_row(row)
        if at is None:
            n = self.view.n if self.view is not None else 0
            self.jump_note.setText(
                f"row {row:,} is not shown (the source has rows 0–{n - 1:,}; filters may hide it)"
            )
            return False
        self.jump_note.setText("")
        self.table.select_row(at)
        return True

    # ----------------------------------------------------------------- detail
    def _selection_changed(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        indexes = selected.indexes()
        if not indexes or self.view is None:
            return
        row = indexes[0].row()
        rows, i = self.model.rows_at(row)
        self.detail.show_row(self.view, rows, i, f"{row + 1:,} of {self.model.rowCount():,}")

    # ----------------------------------------------------------------- sampling
    def start_sampling(self) -> bool:
        """Validate the form and sample triplets; False (inline error) if it cannot start."""
        return self.start_job(
            self.form.config, lambda c: f"Sample {c.n_triplets + c.n_val:,} triplets", sample
        )
