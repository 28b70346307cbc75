"""The Clusters page: k-means on the teacher's pool representation, and what it found.

The form runs :func:`alignet_engine.stages.clusters.cluster` (as ``alignet-cli cluster``); the
page shows the run's k diagnostics (inertia and silhouette against k), a 2-D PCA map of the
pool coloured by cluster (computed by the engine on the engine thread; click a point to see
its image) and each cluster's most typical images.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from alignet_app.defaults import judged_image_set, models_of_runs
from alignet_app.pages.base import Page, StageControls, column, scroll_column
from alignet_app.session import Session
from alignet_app.widgets import theme
from alignet_app.widgets.cluster_views import DiagnosticsView, PoolMapView, TypicalGrid
from alignet_app.widgets.config_form import ConfigForm
from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_engine.config import ClusterConfig
from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.stages.clusters import cluster
from alignet_engine.store import Project
from alignet_engine.views import browse

NO_TRANSFORM = "none (raw features)"


def parse_ks(text: str) -> tuple[int, ...]:
    """``"2-6, 8, 10"`` → (2, 3, 4, 5, 6, 8, 10); raises ValueError naming the bad part."""
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(
                f"diagnose ks: '{part}' is not a number or a range like 2-12"
            ) from None
    return tuple(out)


def _load_overview(project: Project, _control: JobControl) -> Job[browse.ClusterOverview]:
    """The view job reading the current clusters run (labels and paths: seconds at 1M)."""
    yield Progress("clusters", 0, 1, "loading the clusters run")
    return browse.cluster_overview(project)


class ClustersPage(Page):
    key = "clusters"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.overview: browse.ClusterOverview | None = None
        self.pool_map: browse.PoolMap | None = None
        self.selected: int | None = None
        self._signature: tuple[Any, ...] | None = None
        self._form_run: str | None = None
        self.grid_thumbs = ThumbnailCache(size=72, capacity=4000, parent=self)
        self.big_thumbs = ThumbnailCache(size=224, capacity=50, parent=self)
        self.set_panes(self._build_side(), self._build_results(), widths=(320, 1000))

    # ----------------------------------------------------------------- layout
    def _build_side(self) -> QScrollArea:
        """The side panel: the run's summary, the k-means settings and the selected image."""
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        return scroll_column(
            self.summary,
            self._build_settings(),
            self._build_item(),
            min_width=300,
            sideways=False,
        )

    def _build_settings(self) -> StageControls:
        """The k-means form, with the transform and the ks to diagnose under it."""
        self.form = ConfigForm(
            ClusterConfig,
            fields=["image_set", "model", "k", "n_nearest", "device", "random_state"],
            choices={"image_set": [], "model": []},
            labels={"image_set": "pool image set", "n_nearest": "typical images"},
        )
        self.form.editors["k"].setRange(2, 1_000_000)
        self.form.editors["n_nearest"].setRange(1, 1000)
        self.transform_box = QComboBox()
        self.transform_box.setObjectName("field_transform")
        self.transform_box.setToolTip(
            "Cluster the teacher's human-aligned representation (a fitted transform, as "
            "AligNet does) or the raw features."
        )
        self.ks_edit = QLineEdit()
        self.ks_edit.setObjectName("field_diagnose_ks")
        self.ks_edit.setPlaceholderText("e.g. 2-12 (optional)")
        self.ks_edit.setToolTip(
            "Also fit k-means for these k and record inertia and silhouette, to choose k. "
            "Write numbers and ranges: 2-12, 16, 20."
        )
        self.ks_edit.textEdited.connect(lambda _text: self.clear_error())
        extra = QFormLayout()
        extra.addRow("transform", self.transform_box)
        extra.addRow("diagnose ks", self.ks_edit)
        controls = StageControls(
            "k-means",
            self.form,
            "Cluster the pool",
            self.start_clustering,
            rows=[extra],
            error=self.error,
        )
        self.run_button = controls.button
        self.form_error = self.error
        return controls

    def _build_item(self) -> QGroupBox:
        """The selected item: its image and caption."""
        self.item_image = QLabel()
        self.item_image.setFixedSize(236, 236)
        self.item_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.item_image.setStyleSheet(f"background: {theme.colours().panel};")
        self.item_caption = QLabel("Click a point of the map or a typical image.")
        self.item_caption.setWordWrap(True)
        self.item_caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        item_group = QGroupBox("Selected image")
        il = QVBoxLayout(item_group)
        il.addWidget(self.item_image, 0, Qt.AlignmentFlag.AlignHCenter)
        il.addWidget(self.item_caption)
        self.big_thumbs.ready.connect(self._on_big_thumbnail)
        return item_group

    def _build_results(self) -> QSplitter:
        """The k diagnostics and the pool map above the grid of typical images."""
        self.diagnostics = DiagnosticsView()
        self.map_view = PoolMapView()
        self.map_view.picked.connect(self.select_item)
        self.map_status = QLabel()
        self.map_button = QPushButton("Compute map")
        self.map_button.setToolTip("Project the pool on its first two principal components.")
        self.map_button.clicked.connect(self.compute_map)
        self.map_button.hide()
        top = QSplitter()
        top.addWidget(self.diagnostics)
        top.addWidget(
            column(self.map_view, self.map_status, self.map_button, stretch=self.map_view)
        )
        top.setSizes([380, 620])
        self.grid = TypicalGrid(self.grid_thumbs)
        self.grid.picked.connect(self.select_item)
        grid_scroll = QScrollArea()
        grid_scroll.setWidget(self.grid)
        grid_scroll.setWidgetResizable(True)
        grid_group = QGroupBox("Most typical images of each cluster (nearest its centre)")
        QVBoxLayout(grid_group).addWidget(grid_scroll)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(top)
        right.addWidget(grid_group)
        right.setSizes([430, 370])
        return right

    # ----------------------------------------------------------------- redraw
    def refresh(self) -> None:
        if not self.session.is_open:
            self._signature = None
            self.session.views.cancel("clusters:overview")
            self._show(None)
            self.summary.setText("No project open.")
            return
        info = self.session.info()
        signature = (info["path"], tuple(sorted(info["current"].items())))
        if signature == self._signature:
            return
        self._signature = signature
        slots = info["current"]
        models = sorted({s.split(":", 2)[2] for s in slots if s.startswith("features:")})
        transforms = sorted(s.split(":", 1)[1] for s in slots if s.startswith("transform:"))
        # the pool: an image set people did not judge (clusters group the teacher's pool)
        judged = judged_image_set(info) if info["judgments"] else None
        pool = next((s for s in info["imagesets"] if s != judged), None)
        self.form.set_choices("image_set", list(info["imagesets"]), preferred=pool, strict=True)
        self.form.set_choices("model", models, preferred=(models_of_runs(info) or [None])[0])
        current_t = self.transform_box.currentText()
        self.transform_box.clear()
        self.transform_box.addItems([*transforms, NO_TRANSFORM])
        if current_t:
            self.transform_box.setCurrentText(current_t)
        if "clusters" not in slots:
            self.session.views.cancel("clusters:overview")  # a pending load is out of date
            self._show(None)
            return
        # read on a view worker: a pool of a million images' labels and paths is seconds of
        # reading the GUI thread must not wait for (issue 9: browsing at real size)
        self.summary.setText("Loading the clusters…")
        self.view_job(
            "clusters:overview",
            _load_overview,
            self._overview_ready,
            self.summary.setText,
        )

    def _overview_ready(self, overview: browse.ClusterOverview) -> None:
        if self._form_run != overview.ref:
            self._form_run = overview.ref  # show the parameters of the run on screen
            params = overview.params
            for name in self.form.names:
                if name in params:
                    self.form.set_value(name, params[name])
            self.transform_box.setCurrentText(params.get("transform") or NO_TRANSFORM)
            self.ks_edit.setText(", ".join(str(k) for k in params.get("diagnose_ks", [])))
        self._show(overview)

    def _show(self, overview: browse.ClusterOverview | None) -> None:
        self.overview = overview
        self.diagnostics.set_overview(overview)
        self.grid.set_overview(overview)
        if overview is None:
            self.pool_map = None
            self.map_view.set_map(None)
            self.map_status.setText("")
            self.map_button.hide()
            if self.session.is_open:
                self.summary.setText(
                    "No clusters yet: fit the teacher's transform (Alignment), then cluster "
                    "the pool here."
                )
            return
        p = overview.params
        rep = p["model"] + (f" + transform '{p['transform']}'" if p.get("transform") else " (raw)")
        self.summary.setText(
            f"<b>{overview.k} clusters</b> of {overview.labels.size:,} images of "
            f"'{p['image_set']}' ({rep}); sizes {int(overview.sizes.min())}–"
            f"{int(overview.sizes.max())}."
        )
        if self.pool_map is None or self.pool_map.ref != overview.ref:
            self.pool_map = None
            self.map_view.set_map(None)
            self.compute_map()

    # ----------------------------------------------------------------- map
    def compute_map(self) -> None:
        """Compute the PCA map of the current clusters run as a read-only view job (it never
        waits for a training job on the engine thread)."""
        overview = self.overview
        if overview is None:
            return
        ref = overview.ref
        self.view_job(
            "clusters:map",
            lambda project, control: browse.pool_map_job(project, ref, control),
            self._map_ready,
            self._map_failed,
        )
        self.map_status.setText("Computing the map…")
        self.map_button.hide()

    def _map_failed(self, text: str) -> None:
        self.map_status.setText(f"Cannot map the pool: {text}")
        self.map_button.show()

    def _map_ready(self, pool_map: browse.PoolMap) -> None:
        if self.overview is None or pool_map.ref != self.overview.ref:
            return  # clustered again meanwhile
        self.pool_map = pool_map
        self.map_view.set_map(pool_map, self.overview.k, self.overview.categories)
        n = self.overview.labels.size  # the pool (the engine's map may be a sample of it)
        shown = self.map_view.shown.size
        self.map_status.setText(
            "Hover a point for its item, click it to see its image."
            + (f" Showing a fixed sample of {shown:,} of {n:,} images." if shown < n else "")
        )
        self.map_button.hide()
        if self.selected is not None:
            self.map_view.mark(self.selected)

    # ----------------------------------------------------------------- selection
    def select_item(self, item: int) -> None:
        """Show item ``item`` of the clustered pool (its image, category and cluster)."""
        ov = self.overview
        if ov is None or not 0 <= item < len(ov.paths):
            return
        self.selected = item
        path = ov.paths[item]
        pixmap = self.big_thumbs.get(path)
        self.item_image.setPixmap(pixmap if pixmap is not None else self.big_thumbs.placeholder())
        c = int(ov.labels[item])
        lines = [f"<b>Item {item}</b> · cluster {c} ({int(ov.sizes[c])} items)"]
        if ov.categories[item]:
            lines.append(f"category: {ov.categories[item]}")
        if item in ov.nearest[c][:3]:
            lines.append("one of the cluster's most typical images")
        lines.append(f"<small>{path}</small>")
        self.item_caption.setText("<br>".join(lines))
        self.map_view.mark(item)

    def _on_big_thumbnail(self, path: str) -> None:
        ov = self.overview
        if ov is not None and self.selected is not None and ov.paths[self.selected] == path:
            pixmap = self.big_thumbs.get(path)
            if pixmap is not None:
                self.item_image.setPixmap(pixmap)

    # ----------------------------------------------------------------- run
    def config(self) -> ClusterConfig:
        """The k-means configuration on the page (raises ValueError / AlignetError)."""
        transform = self.transform_box.currentText()
        return self.form.config(  # type: ignore[no-any-return]
            transform=None if transform in ("", NO_TRANSFORM) else transform,
            diagnose_ks=parse_ks(self.ks_edit.text()),
        )

    def start_clustering(self) -> bool:
        """Validate the form and cluster the pool; False (inline error) if it cannot start."""
        return self.start_job(self.config, lambda c: f"Cluster '{c.image_set}' (k={c.k})", cluster)
