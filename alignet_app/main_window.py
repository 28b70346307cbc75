"""The main window: menus, the pipeline navigator, one page per stage, job status and log."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QWidget,
)

from alignet_app import settings
from alignet_app.help import HelpDialog
from alignet_app.jobrunner import JobFailure
from alignet_app.notify import dialogs_enabled, inform, warn
from alignet_app.pages import PAGES, SPECS
from alignet_app.session import Session
from alignet_app.widgets import theme
from alignet_app.widgets.welcome import WelcomeScreen, demo_folder
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Message, Progress, StageDone
from alignet_engine.stages.headlines import HEADLINES, RunComparison, compare_headline

if TYPE_CHECKING:  # a page's module imports seconds of libraries: loaded on first show
    from alignet_app.pages import PageSpec
    from alignet_app.pages.base import Page

log = logging.getLogger(__name__)

PROJECT_FILTER = "AligNet projects (*.alignet)"
_STATE_MARK = {
    "not run": "○",
    "running": "▶",
    "done": "●",
    "stale": "◐",
    "interrupted": "✕",
}


class _LogBridge(QObject, logging.Handler):
    """Forwards log records from any thread to the log panel (as a queued signal)."""

    record = Signal(str, str)

    def __init__(self) -> None:
        QObject.__init__(self)
        logging.Handler.__init__(self, level=logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:  # type: ignore[override]
        with contextlib.suppress(RuntimeError):  # the panel is gone (shutdown)
            self.record.emit(record.levelname, self.format(record))


class _Pages(Mapping[str, "Page"]):
    """The window's pages by key, in navigator order; a page is built on first access.

    Iterating gives the keys without building anything (:meth:`built` gives the pages that
    exist), so the window opens without importing any page's module.
    """

    def __init__(self, build: Callable[[PageSpec], Page]) -> None:
        self._build = build
        self._built: dict[str, Page] = {}

    def __getitem__(self, key: str) -> Page:
        if key not in self._built:
            self._built[key] = self._build(SPECS[key])  # KeyError for an unknown page
        return self._built[key]

    def __iter__(self) -> Iterator[str]:
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)

    def built(self) -> dict[str, Page]:
        return dict(self._built)


class MainWindow(QMainWindow):
    """The application window. ``session`` owns the project and the engine thread."""

    def __init__(self, session: Session | None = None) -> None:
        super().__init__()
        self.session = session or Session(self)
        self.setWindowTitle("AligNet Studio")
        self.resize(1280, 800)
        self.setAcceptDrops(True)

        #: comparisons of new runs kept out of their slot, shown when the job has ended
        self.kept_runs: list[tuple[str, str, RunComparison]] = []
        self._build_central()
        self._build_log()
        self._build_status_bar()
        self._connect_session()
        self._build_menus()
        self._update_navigator()
        self.navigator.setCurrentRow(0)
        self._show_welcome()
        self._restore_layout()

    # ----------------------------------------------------------------- layout
    def _build_central(self) -> None:
        """The welcome screen while no project is open, the navigator and pages once one is."""
        self.welcome = WelcomeScreen()
        self.welcome.new_project.connect(self.new_project)
        self.welcome.open_project.connect(self.choose_project)
        self.welcome.open_path.connect(self.open_project)
        self.welcome.demo.connect(self.open_demo)
        self.central = QStackedWidget()
        self.central.addWidget(self.welcome)
        self.central.addWidget(self._build_pages())
        self.setCentralWidget(self.central)
        self.navigator.currentRowChanged.connect(self._show_row)
        self.central.currentChanged.connect(lambda _i: self._show_row(self.navigator.currentRow()))

    def _build_pages(self) -> QSplitter:
        """The navigator beside a stack of page holders (each page is built when first shown)."""
        #: every page by key, each built the first time it is shown or asked for
        self.pages = _Pages(self._build_page)
        self.stack = QStackedWidget()
        self.navigator = QListWidget()
        self.navigator.setObjectName("navigator")
        self.navigator.setMinimumWidth(160)
        self.navigator.setMaximumWidth(260)
        for spec in PAGES:
            # Each page scrolls on its own when the window is smaller than the page's
            # minimum, so no single page sets the window's minimum width (1280×800 and
            # 1366×768 screens); above its minimum a page simply resizes.
            holder = QScrollArea()
            holder.setObjectName(f"page_{spec.key}")
            holder.setWidgetResizable(True)
            holder.setFrameShape(QScrollArea.Shape.NoFrame)
            self.stack.addWidget(holder)
            item = QListWidgetItem(spec.title)
            item.setData(Qt.ItemDataRole.UserRole, spec.key)
            self.navigator.addItem(item)
        splitter = QSplitter()
        splitter.setObjectName("main_splitter")
        splitter.addWidget(self.navigator)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)
        splitter.setCollapsible(1, False)
        splitter.setSizes([170, 1110])  # the navigator narrow: pages need the width
        self.main_splitter = splitter
        return splitter

    def _build_log(self) -> None:
        """The log panel (a dock), fed by the engine's loggers."""
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setObjectName("log")
        self.log_view.setMaximumBlockCount(5000)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("log_dock")
        self.log_dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.resizeDocks([self.log_dock], [150], Qt.Orientation.Vertical)
        self._log_bridge = _LogBridge()
        self._log_bridge.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._log_bridge.record.connect(self.append_log)
        logging.getLogger("alignet_engine").addHandler(self._log_bridge)

    def _build_status_bar(self) -> None:
        """The status bar: the job's label, progress, ETA, pause and cancel."""
        self.job_label = QLabel("Ready")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.eta_label = QLabel()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause the running job at its next step (training)")
        self.pause_button.clicked.connect(self._toggle_pause)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job; the project keeps its last state")
        self.cancel_button.clicked.connect(self.session.runner.cancel)
        for w in (self.pause_button, self.cancel_button):
            w.hide()
        bar = self.statusBar()
        bar.addWidget(self.job_label, 1)
        bar.addPermanentWidget(self.eta_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.pause_button)
        bar.addPermanentWidget(self.cancel_button)
        self._progress_start: tuple[str, float, int] | None = None

    def _connect_session(self) -> None:
        """Follow the runner's jobs and the session's project."""
        runner = self.session.runner
        runner.started.connect(self._job_started)
        runner.progress.connect(self._job_progress)
        runner.message.connect(self._job_message)
        runner.stage_done.connect(self._stage_done)
        runner.finished.connect(lambda label, _r: self._job_ended(f"{label}: done"))
        runner.finished.connect(lambda *_: QTimer.singleShot(0, self._offer_kept_runs))
        runner.cancelled.connect(lambda label: self._job_ended(f"{label}: cancelled"))
        runner.failed.connect(self._job_failed)
        self.session.changed.connect(self._update_navigator)
        self.session.opened.connect(self._project_opened)
        self.session.closed.connect(self._project_closed)
        self.session.busy_changed.connect(lambda _busy: self._show_welcome())

    # ----------------------------------------------------------------- menus
    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(
            self._action("&New Project…", self.new_project, QKeySequence.StandardKey.New)
        )
        file_menu.addAction(
            self._action("&Open Project…", self.choose_project, QKeySequence.StandardKey.Open)
        )
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file_menu.addAction(
            self._action("Save &As…", self.save_as, QKeySequence.StandardKey.SaveAs)
        )
        file_menu.addAction(
            self._action("&Close Project", self.session.close, QKeySequence.StandardKey.Close)
        )
        file_menu.addSeparator()
        file_menu.addAction(
            self._action(
                "&Preferences…", self.edit_preferences, QKeySequence.StandardKey.Preferences
            )
        )
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        view_menu = self.menuBar().addMenu("&View")
        for i, cls in enumerate(PAGES):
            shortcut = f"Ctrl+{i + 1}" if i < 9 else "Ctrl+0"
            view_menu.addAction(
                self._action(cls.title, lambda _=False, k=cls.key: self.show_page(k), shortcut)
            )
        view_menu.addSeparator()
        view_menu.addAction(self.log_dock.toggleViewAction())

        job_menu = self.menuBar().addMenu("&Job")
        job_menu.addAction(self._action("&Pause / Resume", self._toggle_pause, "Ctrl+P"))
        job_menu.addAction(self._action("&Cancel", self.session.runner.cancel, "Ctrl+."))

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(
            self._action(
                "&User Guide",
                lambda: self.show_help("guide"),
                QKeySequence.StandardKey.HelpContents,
            )
        )
        help_menu.addAction(
            self._action("&Keyboard Shortcuts", lambda: self.show_help("shortcuts"), "Ctrl+/")
        )
        help_menu.addAction(self._action("The &Method (README)", lambda: self.show_help("method")))
        help_menu.addSeparator()
        help_menu.addAction(self._action("&About AligNet Studio", self._about))

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        paths = settings.recent_projects()
        if not paths:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for path in paths:
            self.recent_menu.addAction(
                self._action(path, lambda _=False, p=path: self.open_project(p))
            )

    def _about(self) -> None:
        from alignet_engine import __version__

        QMessageBox.about(
            self,
            "AligNet Studio",
            f"<b>AligNet Studio {__version__}</b><p>Align vision models with human similarity "
            "judgments: fit a human-aligned surrogate teacher, sample triplets, distil it into "
            "a student and measure agreement with people (Muttenthaler et al., Nature 2025).</p>",
        )

    # ----------------------------------------------------------------- pages
    def page(self, key: str) -> Page:
        """The page ``key`` (built now if it has not been shown yet)."""
        return self.pages[key]

    def _build_page(self, spec: PageSpec) -> Page:
        page = spec.load()(self.session)
        holder = self.stack.widget(PAGES.index(spec))
        assert isinstance(holder, QScrollArea)
        holder.setWidget(page)
        navigate = getattr(page, "navigate", None)  # the Project page links to the others
        if navigate is not None:
            navigate.connect(self.show_page)
        self._restore_splitters(spec.key, page)
        return page

    def _show_row(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        if self.central.currentIndex() == 1 and row >= 0:  # the pages are on screen
            self.pages[PAGES[row].key]

    def current_page(self) -> Page:
        """The page on show (the stack holds each page in its scroll area)."""
        return self.pages[PAGES[self.stack.currentIndex()].key]

    def show_page(self, key: str) -> None:
        self.navigator.setCurrentRow(list(SPECS).index(key))

    def _update_navigator(self) -> None:
        status = self.session.status()
        running = self.session.runner.label
        for row, page in enumerate(PAGES):
            item = self.navigator.item(row)
            if page.stage is None:
                item.setText(f"    {page.title}")
                item.setToolTip("")
                continue
            state = status.get(page.stage)
            name, why = (state.state, state.why) if state is not None else ("not run", "")
            if running and running.split(":", 1)[0] == page.stage:
                name, why = "running", running
            item.setText(f"{_STATE_MARK[name]}  {page.title}")
            item.setToolTip(f"{page.title}: {name}" + (f" — {why}" if why else ""))

    # ----------------------------------------------------------------- project files
    def _start_folder(self, kind: str = "project") -> str:
        prefs = self.session.preferences
        folder = prefs.project_folder if kind == "project" else prefs.data_folder
        if not folder and self.session.path is not None:
            folder = str(self.session.path.parent)
        return folder

    def new_project(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "New project", self._start_folder(), PROJECT_FILTER
        )
        if not path:
            return
        if not path.endswith(".alignet"):
            path += ".alignet"
        self._guard(lambda: self.session.new(path, overwrite=True), "Cannot create the project")

    def choose_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open project", self._start_folder(), PROJECT_FILTER
        )
        if path:
            self.open_project(path)

    def open_project(self, path: str) -> bool:
        ok = [False]

        def go() -> None:
            writable = self.session.open(path)
            ok[0] = True
            if not writable:
                inform(
                    self,
                    "Opened read-only",
                    f"{path} is open in another AligNet Studio (or a running alignet-cli job), "
                    "so this window can look but not change it.",
                )

        self._guard(go, "Cannot open the project")
        return ok[0]

    def save_as(self) -> None:
        if not self.session.is_open:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save project as", self._start_folder(), PROJECT_FILTER
        )
        if path:
            if not path.endswith(".alignet"):
                path += ".alignet"
            self._guard(lambda: self.session.save_as(path), "Cannot save the project")

    def _guard(self, action, title: str) -> None:
        try:
            action()
        except (AlignetError, OSError) as exc:
            warn(self, title, str(exc))

    def _project_opened(self, path: str) -> None:
        ro = " (read-only)" if self.session.read_only else ""
        self.setWindowTitle(f"AligNet Studio — {Path(path).name}{ro}")
        self.append_log("INFO", f"opened {path}{ro}")
        self.central.setCurrentIndex(1)

    def _project_closed(self) -> None:
        self.setWindowTitle("AligNet Studio")
        self._update_navigator()
        self._show_welcome()

    def _show_welcome(self) -> None:
        if not self.session.is_open:
            self.welcome.refresh(
                busy=self.session.runner.label if self.session.runner.busy else None
            )
            self.central.setCurrentIndex(0)

    def open_demo(self) -> None:
        """Open the demo project; create it first (the demo job) when there is none."""
        demo = self.welcome.demo_path  # what the welcome screen offers to open
        if demo is not None and demo.is_file():
            self.open_project(str(demo))
            return
        from alignet_engine.demo.pipeline import DemoSettings, run_demo

        out = demo_folder()

        def done(_result: object) -> None:
            self.open_project(str(out / "demo.alignet"))

        started = self.session.runner.submit(
            "Create the demo",
            lambda control: run_demo(
                out, DemoSettings(quick=True), overwrite=True, control=control
            ),
            done,
        )
        if started:
            self.welcome.refresh(busy="Create the demo")

    # ----------------------------------------------------------------- help
    def show_help(self, tab: str = "guide") -> HelpDialog:
        shortcuts = [
            (
                a.text().replace("&", ""),
                a.shortcut().toString(QKeySequence.SequenceFormat.NativeText),
            )
            for menu in self.menuBar().findChildren(QMenu)
            for a in menu.actions()
            if not a.shortcut().isEmpty()
        ]
        dialog = HelpDialog(shortcuts, self)
        dialog.show_tab(tab)
        dialog.show()
        self._help = dialog
        return dialog

    # ----------------------------------------------------------------- layout memory
    @staticmethod
    def _page_splitters(key: str, page: Page) -> dict[str, QSplitter]:
        """A page's splitters by a stable key (page key and name or index within it)."""
        return {
            f"{key}/{splitter.objectName() or i}": splitter
            for i, splitter in enumerate(page.findChildren(QSplitter))
        }

    def _restore_splitters(self, key: str, page: Page) -> None:
        store = settings.settings()
        for name, splitter in self._page_splitters(key, page).items():
            state = store.value(f"splitters/{name}")
            if state is not None:
                splitter.restoreState(state)

    def _restore_layout(self) -> None:
        store = settings.settings()
        geometry = store.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = store.value("splitters/main")
        if state is not None:
            self.main_splitter.restoreState(state)

    def save_layout(self) -> None:
        """Remember the window's size and every splitter's position (QSettings); pages
        never shown keep what was stored for them."""
        store = settings.settings()
        store.setValue("window/geometry", self.saveGeometry())
        splitters = {"main": self.main_splitter}
        for key, page in self.pages.built().items():
            splitters.update(self._page_splitters(key, page))
        for name, splitter in splitters.items():
            store.setValue(f"splitters/{name}", splitter.saveState())
        store.sync()

    # ----------------------------------------------------------------- drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        event.acceptProposedAction()
        self.handle_dropped(paths)

    def handle_dropped(self, paths: list[str]) -> None:
        """A project file opens; anything else goes to the data page's import dialog."""
        projects = [p for p in paths if p.endswith(".alignet")]
        if projects:
            self.open_project(projects[0])
            return
        if not paths:
            return
        data_page = self.pages["data"]
        import_paths = getattr(data_page, "import_paths", None)
        if import_paths is None:
            return
        self.show_page("data")
        import_paths(paths)

    # ----------------------------------------------------------------- jobs
    def _job_started(self, label: str) -> None:
        self.job_label.setText(f"{label}…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.eta_label.setText("")
        self.pause_button.setText("Pause")
        self.pause_button.show()
        self.cancel_button.show()
        self._progress_start = None
        self.append_log("INFO", f"started: {label}")
        self._update_navigator()

    def _job_progress(self, p: Progress) -> None:
        if p.total:
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
        else:
            self.progress.setRange(0, 0)
        text = f"{self.session.runner.label}: {p.stage}"
        if p.message:
            text += f" — {p.message}"
        self.job_label.setText(text)
        self.eta_label.setText(self._eta(p))

    def _eta(self, p: Progress) -> str:
        """Remaining time from the rate since this stage's first progress event."""
        if p.stage == "distill":
            # one ETA, not two: the Distillation page's readout shows the run's (it follows
            # pauses and the steps, not the progress events)
            return ""
        now = time.monotonic()
        if self._progress_start is None or self._progress_start[0] != p.stage:
            self._progress_start = (p.stage, now, p.done)
            return ""
        _stage, t0, done0 = self._progress_start
        if not p.total or p.done <= done0 or now - t0 < 1.0:
            return ""
        remaining = (now - t0) / (p.done - done0) * (p.total - p.done)
        return f"ETA {_duration(remaining)}"

    def _job_message(self, m: Message) -> None:
        self.append_log(m.level, f"{m.stage}: {m.text}")

    def _stage_done(self, event: StageDone) -> None:
        self.append_log("INFO", f"{event.stage}: wrote run {event.run_id}")
        if event.stage not in HEADLINES or not self.session.is_open:
            return
        # a run worse than the current one was kept out of its slot by the engine: offer
        # the choice once the job has ended (only the engine thread writes meanwhile)
        ref = f"{event.stage}/{event.run_id}"
        project = self.session.project
        with contextlib.suppress(AlignetError):
            slot = project.run(ref, arrays=False).slot
            current = project.current(slot)
            if current is not None and current != ref:
                old = project.run(current, arrays=False).summary
                comparison = compare_headline(event.stage, event.summary, old, current)
                if comparison is not None and comparison.worse:
                    self.kept_runs.append((slot, ref, comparison))

    def _offer_kept_runs(self) -> None:
        """Ask whether each new run that was kept out of its slot should become current."""
        while self.kept_runs and dialogs_enabled():
            slot, ref, comparison = self.kept_runs.pop(0)
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Question)
            box.setWindowTitle("Keep the better run?")
            box.setText(
                f"{comparison.sentence()}<br><br>The current run stays current until you choose."
            )
            keep = box.addButton("Keep the current run", QMessageBox.ButtonRole.RejectRole)
            use = box.addButton("Use the new run", QMessageBox.ButtonRole.AcceptRole)
            compare = box.addButton("Compare…", QMessageBox.ButtonRole.ActionRole)
            box.setDefaultButton(keep)
            box.exec()
            page = self.pages["project"]
            if box.clickedButton() is use:
                page.make_current(slot, ref)
            elif box.clickedButton() is compare:
                self.show_page("project")
                page.compare([comparison.current_ref, ref])

    def _job_ended(self, text: str) -> None:
        self.job_label.setText(text)
        self.append_log("INFO", text)
        self._hide_job_widgets()

    def _job_failed(self, failure: JobFailure) -> None:
        self._hide_job_widgets()
        self.job_label.setText(f"{failure.label}: failed")
        self.append_log("ERROR", f"{failure.label} failed: {failure.text}")
        if not failure.user_error:
            self.append_log("ERROR", failure.details)
        if dialogs_enabled():
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Warning)
            box.setWindowTitle(f"{failure.label} failed")
            box.setText(failure.text)
            if not failure.user_error:
                box.setInformativeText("This looks like a bug; the details are in the log.")
                box.setDetailedText(failure.details)
            box.open()

    def _hide_job_widgets(self) -> None:
        self.progress.hide()
        self.eta_label.setText("")
        self.pause_button.hide()
        self.cancel_button.hide()
        QTimer.singleShot(0, self._update_navigator)

    def _toggle_pause(self) -> None:
        runner = self.session.runner
        if not runner.busy:
            return
        if runner.paused:
            runner.resume()
            self.pause_button.setText("Pause")
            self.append_log("INFO", f"resumed: {runner.label}")
        else:
            runner.pause()
            self.pause_button.setText("Resume")
            self.append_log("INFO", f"paused: {runner.label}")

    def append_log(self, level: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log_view.appendPlainText(f"{stamp} {level:<7} {text}")

    # ----------------------------------------------------------------- preferences
    def edit_preferences(self) -> None:
        dialog = PreferencesDialog(self.session.preferences, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.session.preferences = dialog.result_preferences()
            settings.save_preferences(self.session.preferences)
            theme.apply_theme(self.session.preferences.theme)
            theme.restyle(self)

    # ----------------------------------------------------------------- closing
    def closeEvent(self, event: QCloseEvent) -> None:
        runner = self.session.runner
        if runner.busy and dialogs_enabled():
            answer = QMessageBox.question(
                self,
                "A job is running",
                f"'{runner.label}' is still running. Cancel it and quit? Training can be "
                "resumed later from its last checkpoint.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        logging.getLogger("alignet_engine").removeHandler(self._log_bridge)
        self.save_layout()
        self.session.shutdown()
        event.accept()


class PreferencesDialog(QDialog):
    """Device, CPU threads and default folders (kept in QSettings)."""

    def __init__(self, prefs: settings.Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setCurrentText(prefs.device)
        self.device.setToolTip("Where models run: auto picks CUDA, then Apple MPS, then the CPU")
        self.threads = QSpinBox()
        self.threads.setRange(0, 512)
        self.threads.setSpecialValueText("all cores but one")
        self.threads.setValue(prefs.cpu_threads)
        self.threads.setToolTip(
            "PyTorch CPU threads for jobs; one core is left to the window by default so it "
            "stays responsive during training"
        )
        self.data_folder = _FolderEdit(prefs.data_folder)
        self.project_folder = _FolderEdit(prefs.project_folder)
        form = QFormLayout(self)
        form.addRow("Device", self.device)
        form.addRow("CPU threads", self.threads)
        form.addRow("Data folder", self.data_folder)
        form.addRow("Project folder", self.project_folder)
        self.theme = QComboBox()
        self.theme.addItems(["system", "light", "dark"])
        self.theme.setCurrentText(prefs.theme)
        self.theme.setToolTip("Colours of the window and of every plot")
        form.addRow("Theme", self.theme)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def result_preferences(self) -> settings.Preferences:
        return settings.Preferences(
            device=self.device.currentText(),
            cpu_threads=self.threads.value(),
            data_folder=self.data_folder.edit.text(),
            project_folder=self.project_folder.edit.text(),
            theme=self.theme.currentText(),
        )


class _FolderEdit(QWidget):
    def __init__(self, value: str) -> None:
        super().__init__()
        self.edit = QLineEdit(value)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(browse)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", self.edit.text())
        if folder:
            self.edit.setText(folder)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
