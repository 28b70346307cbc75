"""The Triplets page: sample pool triplets and inspect them (or human judgments) one by one.

Sources: the current triplets run (read lazily from the project, any size) and each imported
odd-one-out judgment set (scored by the teacher on the engine thread). Filters are engine calls
(:func:`~alignet_engine.stages.browse.filter_triplets`): on the GUI thread for small sources,
as a job on the engine thread for large ones, so the window never freezes on 10 M rows.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from alignet_app.pages.base import Page, error_label
from alignet_app.session import Session
from alignet_app.widgets.config_form import ConfigForm
from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_app.widgets.triplet_view import TripletDetail, TripletTable, TripletTableModel
from alignet_engine.align.triplet_sampling import STRATEGIES
from alignet_engine.config import SampleConfig
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import run_job
from alignet_engine.stages import browse
from alignet_engine.stages.triplets import sample

#: Sources up to this many rows are filtered on the GUI thread (well under ~50 ms); larger
#: ones as a job on the engine thread, with progress and cancel in the status bar.
SYNC_FILTER_ROWS = 100_000

SAMPLE_TIPS = {
    "n_triplets": "Training triplets to sample (AligNet uses 10 million).",
    "n_val": "Extra held-out triplets for validation during distillation.",
    "strategy": (
        "How items are drawn: cluster_boundary (AligNet's default) takes two items from one "
        "cluster and the odd one from another; within / between clusters, random, and the "
        "class_* variants use the pool's categories instead of clusters."
    ),
    "teacher_temperature": "Divides the teacher's logits: above 1 makes its choices softer.",
    "random_state": "Seed: the same seed gives the same triplets.",
}


class TripletsPage(Page):
    key = "triplets"
    title = "Triplets"
    stage = "triplets"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.view: browse.TripletView | None = None
        self.sources: list[browse.TripletSource] = []
        self._signature: tuple[Any, ...] | None = None
        self.thumbs = ThumbnailCache(size=224, capacity=300, parent=self)

        # --- source
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

        # --- filters
        self.disagree = QCheckBox("Disagreements only")
        self.disagree.setToolTip("Only rows where the human's odd one differs from the teacher's.")
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
        entropy_row = QHBoxLayout()
        entropy_row.addWidget(self.entropy_min)
        entropy_row.addWidget(QLabel("to"))
        entropy_row.addWidget(self.entropy_max)
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
        self.apply_button = QPushButton("Apply filters")
        self.apply_button.clicked.connect(self.apply_filters)
        self.reset_button = QPushButton("Reset")
        self.reset_button.clicked.connect(self.reset_filters)
        self.count_label = QLabel()
        self.count_label.setObjectName("count")
        self.filter_error = error_label()
        filter_group = QGroupBox("Filters")
        fl = QFormLayout(filter_group)
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
        fl.addRow(self.count_label)
        fl.addRow(self.filter_error)

        # --- sampling
        self.form = ConfigForm(
            SampleConfig,
            tooltips=SAMPLE_TIPS,
            choices={"strategy": STRATEGIES},
            labels={"n_triplets": "triplets", "n_val": "validation triplets"},
        )
        self.sample_button = QPushButton("Sample triplets")
        self.sample_button.setToolTip(
            "Sample triplets from the clustered pool; the teacher picks each odd one out."
        )
        self.sample_button.clicked.connect(self.start_sampling)
        self.sample_error = error_label()
        sample_group = QGroupBox("Sample triplets")
        sgl = QVBoxLayout(sample_group)
        sgl.addWidget(self.form)
        sgl.addWidget(self.sample_button)
        sgl.addWidget(self.sample_error)

        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(source_group)
        side_layout.addWidget(filter_group)
        side_layout.addWidget(sample_group)
        side_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(310)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        # --- table and detail
        self.model = TripletTableModel(self)
        self.table = TripletTable()
        self.table.setModel(self.model)
        for col, width in enumerate((80, 150, 150, 150, 105, 60, 100, 110, 80, 90)):
            self.table.setColumnWidth(col, width)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.detail = TripletDetail(self.thumbs)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.table)
        right.addWidget(self.detail)
        right.setSizes([330, 420])
        splitter = QSplitter()
        splitter.addWidget(scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([330, 1000])
        QVBoxLayout(self).addWidget(splitter)
        self._update_filter_widgets()

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
            return  # e.g. a filter job ended: nothing this page shows changed
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
        """Open ``source``: pool triplets at once (lazy), judgments as an engine job."""
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
        if not self.session.run(
            f"Open {source.name}",
            lambda project, control: browse.open_source_job(project, source, control),
            self._set_view,
        ):
            self.source_info.setText(
                f"'{self.session.runner.label}' is running; choose the source again when it ends."
            )

    def _set_view(self, view: browse.TripletView | None) -> None:
        if self.view is not None and self.view is not view:
            self.view.close()
        self.view = view
        self.model.set_view(view)
        # hide the columns a source has no data for (clusters of another image set, humans)
        self.table.setColumnHidden(8, view is None or view.n_clusters == 0)
        self.table.setColumnHidden(9, view is None or not view.has_human)
        self.table.setColumnHidden(10, view is None or not view.has_human)
        self._update_filter_widgets()
        self._show_count()
        if view is None:
            self.detail.clear("No source open.")
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
        elif isinstance(view, browse.PoolTriplets) and view.n_clusters == 0:
            text += "<br>No current clusters of this pool: the cluster filter is off."
        self.source_info.setText(text)
        if view.n:
            self.table.select_row(0)
        else:
            self.detail.clear("No triplets.")

    # ----------------------------------------------------------------- filters
    def _update_filter_widgets(self) -> None:
        view = self.view
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
        self.disagree.setEnabled(has and view.has_human)
        if not (has and view.has_human):
            self.disagree.setChecked(False)
        self.kind_box.setEnabled(has and bool(view.kinds))
        self.cluster_box.setEnabled(has and view.n_clusters > 0)
        self.cluster_of.setEnabled(has and view.n_clusters > 0)
        self.split_box.setEnabled(has and view.is_split)
        if not (has and view.is_split):
            self.split_box.setCurrentIndex(0)
        self.apply_button.setEnabled(has)
        self.reset_button.setEnabled(has)

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

    def apply_filters(self) -> None:
        """Filter the source: here for small sources, on the engine thread for large ones."""
        view = self.view
        if view is None:
            return
        self.filter_error.hide()
        spec = self.current_filter()
        try:
            browse.check_filter(view, spec)
            if view.n <= SYNC_FILTER_ROWS or spec.empty:
                self._filtered(view, run_job(browse.filter_triplets(view, spec)))
                return
        except AlignetError as exc:
            self._filter_failed(str(exc))
            return
        self.count_label.setText(f"Filtering {view.n:,} triplets…")
        started = self.session.run(
            "Filter triplets",
            lambda _project, control: browse.filter_triplets(view, spec, control=control),
            lambda result: self._filtered(view, result),
        )
        if not started:
            self._filter_failed(
                f"'{self.session.runner.label}' is running: apply the filter when it ends."
            )
            self._show_count()

    def reset_filters(self) -> None:
        self.disagree.setChecked(False)
        self.entropy_min.setValue(0.0)
        self.entropy_max.setValue(self.entropy_max.maximum())
        for box in (self.kind_box, self.cluster_box, self.cluster_of, self.split_box):
            box.setCurrentIndex(0)
        self.apply_filters()

    def _filtered(self, view: browse.TripletView, result: browse.FilterResult) -> None:
        if view is not self.view:
            return  # the source changed while the filter ran
        self.model.set_filter(result)
        self._show_count()
        if self.model.rowCount():
            self.table.select_row(0)
        else:
            self.detail.clear("No triplet passes these filters.")

    def _filter_failed(self, text: str) -> None:
        self.filter_error.setText(text)
        self.filter_error.show()

    def _show_count(self) -> None:
        view = self.view
        if view is None:
            self.count_label.setText("")
            return
        shown = self.model.rowCount()
        self.count_label.setText(
            f"{shown:,} of {view.n:,} triplets" if shown != view.n else f"{view.n:,} triplets"
        )

    # ----------------------------------------------------------------- detail
    def _selection_changed(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        indexes = selected.indexes()
        if not indexes or self.view is None:
            return
        row = indexes[0].row()
        rows, i = self.model.rows_at(row)
        self.detail.show_row(self.view, rows, i, f"{row + 1:,} of {self.model.rowCount():,}")

    # ----------------------------------------------------------------- sampling
    def start_sampling(self) -> None:
        self.sample_error.hide()
        try:
            config = self.form.config()
        except (ValueError, AlignetError) as exc:
            self.sample_error.setText(str(exc))
            self.sample_error.show()
            return
        self.run_job(
            f"Sample {config.n_triplets + config.n_val:,} triplets",
            lambda project, control: sample(project, config, control),
        )
