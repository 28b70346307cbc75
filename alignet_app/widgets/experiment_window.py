"""The participant's screen: consent, instructions, odd-one-out trials, breaks, the end.

Answers go to the session file (:class:`alignet_engine.experiment.ExperimentLog`) the moment
they are given, so closing the window, a crash or a power cut loses at most the trial on
screen; the session resumes at the first unanswered trial. The window decides nothing about
which trials are shown: the plan comes from the engine.
"""

from __future__ import annotations

from PySide6.QtCore import QElapsedTimer, QRect, Qt, QTimer, Signal
from PySide6.QtGui import (
    QFont,
    QFontMetrics,
    QImageReader,
    QKeyEvent,
    QMouseEvent,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from alignet_engine.experiment import ExperimentLog

_ANSWER_KEYS = {
    Qt.Key.Key_1: 0,
    Qt.Key.Key_2: 1,
    Qt.Key.Key_3: 2,
    Qt.Key.Key_Left: 0,
    Qt.Key.Key_Down: 1,
    Qt.Key.Key_Right: 2,
}


class _ImageChoice(QLabel):
    """One of the three images; a click chooses it."""

    clicked = Signal(int)

    def __init__(self, position: int) -> None:
        super().__init__()
        self.position = position
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(120, 120)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setStyleSheet("background: #202020; border: 3px solid #202020;")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.position)


#: the text's font size range (points): as large as fits, never smaller than the minimum
MAX_POINTS = 18.0
MIN_POINTS = 10.0
#: the text column's widest measure (px): long lines are hard to read
MAX_TEXT_WIDTH = 900


class FittedText(QLabel):
    """Word-wrapped, centred text whose font its :class:`TextScreen` chooses."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def setText(self, text: str) -> None:
        super().setText(text)
        screen = self.parentWidget()
        while screen is not None and not isinstance(screen, TextScreen):
            screen = screen.parentWidget()
        if screen is not None:
            screen.fit()

    def needed_height(self, width: int | None = None, font: QFont | None = None) -> int:
        """Pixels the text needs wrapped at ``width`` (default: the label's own)."""
        width = width or self.contentsRect().width()
        rect = QFontMetrics(font or self.font()).boundingRect(
            QRect(0, 0, max(width, 1), 1_000_000),
            int(Qt.TextFlag.TextWordWrap | Qt.AlignmentFlag.AlignCenter),
            self.text(),
        )
        return rect.height()


class TextScreen(QScrollArea):
    """A screen of text over a row of buttons that re-lays itself out on every resize.

    The text takes the largest font (18 pt down to 10 pt) at which all of it fits above the
    buttons, so no line is ever cut off on any window or screen size; when even 10 pt does
    not fit (a tiny window), the text keeps its full height and the screen scrolls.
    """

    MARGIN = 24
    SPACING = 16

    def __init__(self, text: str, *buttons: QPushButton) -> None:
        super().__init__()
        self.label = FittedText(text)
        self.label.setMaximumWidth(MAX_TEXT_WIDTH)
        self.buttons = QHBoxLayout()
        self.buttons.addStretch(1)
        for b in buttons:
            b.setMinimumHeight(40)
            self.buttons.addWidget(b)
        self.buttons.addStretch(1)
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(self.MARGIN, self.MARGIN, self.MARGIN, self.MARGIN)
        layout.setSpacing(self.SPACING)
        centred = QHBoxLayout()  # the label grows to MAX_TEXT_WIDTH, centred
        centred.addStretch(1)
        centred.addWidget(self.label, 100)
        centred.addStretch(1)
        layout.addLayout(centred, 1)
        layout.addLayout(self.buttons)
        self.setWidget(inner)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit()

    def fit(self) -> None:
        """Choose the label's font from the room the viewport leaves it (not from the label's
        own size, which follows the font: no feedback loop)."""
        viewport = self.viewport().size()
        width = min(viewport.width() - 2 * self.MARGIN, MAX_TEXT_WIDTH)
        buttons = self.buttons.sizeHint().height()
        room = viewport.height() - 2 * self.MARGIN - self.SPACING - buttons
        if width <= 0 or room <= 0:
            return
        font = QFont(self.label.font())
        size = MAX_POINTS
        while size > MIN_POINTS:
            font.setPointSizeF(size)
            if self.label.needed_height(width, font) <= room:
                break
            size -= 1.0
        font.setPointSizeF(size)
        self.label.setFont(font)
        needed = self.label.needed_height(width, font)
        self.label.setMinimumHeight(needed if needed > room else 0)


def _text_screen(text: str, *buttons: QPushButton) -> tuple[TextScreen, FittedText]:
    screen = TextScreen(text, *buttons)
    return screen, screen.label


class ExperimentWindow(QWidget):
    """Runs one participant's session from ``log`` (new or resumed).

    ``paths`` are the image set's files (item id → path). Signals: ``ended(str)`` with
    ``"finished"``, ``"declined"`` or ``"stopped"`` when the window closes.
    """

    ended = Signal(str)

    def __init__(self, log: ExperimentLog, paths: tuple[str, ...], parent=None) -> None:
        super().__init__(parent)
        self.log = log
        self.paths = paths
        self.setWindowTitle(f"Experiment — participant {log.config.participant}")
        self.setStyleSheet("background: #303030; color: #f0f0f0;")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._clock = QElapsedTimer()
        self._trial = -1
        self._outcome = "stopped"
        self._next_pixmaps: dict[int, QPixmap] = {}

        self.stack = QStackedWidget()
        agree, decline = QPushButton("I agree — continue"), QPushButton("I do not agree")
        agree.clicked.connect(self._show_instructions)
        decline.clicked.connect(self._decline)
        self.consent_screen, self.consent_text = _text_screen(log.config.consent, agree, decline)
        start = QPushButton("Start (space)")
        start.clicked.connect(self._next)
        self.instructions_screen, self.instructions_text = _text_screen(
            log.config.instructions, start
        )
        go_on = QPushButton("Continue (space)")
        go_on.clicked.connect(self._show_trial)
        # the break screen's message carries its own progress line: one text, nothing overlaps
        self.break_message = "Take a short break. Continue when you are ready."
        self.break_screen, self.break_text = _text_screen(self.break_message, go_on)
        resume, stop = QPushButton("Continue (space)"), QPushButton("Stop for now")
        resume.clicked.connect(self._show_trial)
        stop.clicked.connect(self.close)
        self.pause_screen, self.pause_text = _text_screen(
            "Paused. Your answers so far are saved; you can stop now and continue later.",
            resume,
            stop,
        )
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        self.end_screen, self.end_text = _text_screen(
            "Thank you! The experiment is complete.", close
        )

        self.trial_screen = QWidget()
        self.choices = [_ImageChoice(i) for i in range(3)]
        images = QHBoxLayout()
        for choice in self.choices:
            choice.clicked.connect(self.answer)
            images.addWidget(choice, 1)
        self.counter = QLabel()
        self.counter.setAlignment(Qt.AlignmentFlag.AlignCenter)
        prompt = QLabel("Which image is the odd one out?  (click, or press 1 / 2 / 3)")
        prompt.setAlignment(Qt.AlignmentFlag.AlignCenter)
        trial_layout = QVBoxLayout(self.trial_screen)
        trial_layout.addWidget(prompt)
        trial_layout.addLayout(images, 1)
        trial_layout.addWidget(self.counter)

        for screen in (
            self.consent_screen,
            self.instructions_screen,
            self.trial_screen,
            self.break_screen,
            self.pause_screen,
            self.end_screen,
        ):
            self.stack.addWidget(screen)
        QVBoxLayout(self).addWidget(self.stack)
        # consent was given when the session started; a resumed session re-shows the
        # instructions only
        resumed = log.next_trial > 0
        self.stack.setCurrentWidget(self.instructions_screen if resumed else self.consent_screen)

    # ----------------------------------------------------------------- flow
    @property
    def screen_name(self) -> str:
        """Which screen shows: consent, instructions, trial, break, pause or end."""
        return {
            self.consent_screen: "consent",
            self.instructions_screen: "instructions",
            self.trial_screen: "trial",
            self.break_screen: "break",
            self.pause_screen: "pause",
            self.end_screen: "end",
        }[self.stack.currentWidget()]

    def _show_instructions(self) -> None:
        self.stack.setCurrentWidget(self.instructions_screen)
        self.setFocus()

    def _decline(self) -> None:
        self._outcome = "declined"
        self.close()

    def _next(self) -> None:
        """Go to the next unanswered trial, through a break when one is due."""
        if self.log.finished:
            self._outcome = "finished"
            self.stack.setCurrentWidget(self.end_screen)
            return
        trial = self.log.next_trial
        if self.log.is_break_before(trial) and self.screen_name == "trial":
            done, total = trial, len(self.log.plan)
            self.break_text.setText(f"{done} of {total} trials done.\n\n{self.break_message}")
            self.stack.setCurrentWidget(self.break_screen)
            return
        self._show_trial()

    def _show_trial(self) -> None:
        trial = self.log.next_trial
        if trial >= len(self.log.plan):
            self._next()
            return
        self._trial = trial
        items = [int(i) for i in self.log.plan.items[trial]]
        for choice, item in zip(self.choices, items, strict=True):
            choice.setStyleSheet("background: #202020; border: 3px solid #202020;")
            choice.setPixmap(self._pixmap(item))
        self.counter.setText(f"Trial {trial + 1} of {len(self.log.plan)}")
        self.stack.setCurrentWidget(self.trial_screen)
        self.setFocus()
        self.repaint()  # the images are on screen before the clock starts
        self._clock.start()
        QTimer.singleShot(0, self._preload_next)

    def _cell_size(self) -> int:
        return max(120, min(self.width() // 3 - 40, self.height() - 160))

    def _load(self, item: int) -> QPixmap:
        reader = QImageReader(self.paths[item])
        reader.setAutoTransform(True)
        size = reader.size()
        side = self._cell_size()
        if size.isValid():
            reader.setScaledSize(size.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
        return QPixmap.fromImage(image) if not image.isNull() else QPixmap()

    def _pixmap(self, item: int) -> QPixmap:
        return self._next_pixmaps.pop(item, None) or self._load(item)

    def _preload_next(self) -> None:
        """Decode the next trial's images while the participant looks at this one."""
        nxt = self._trial + 1
        if nxt < len(self.log.plan):
            self._next_pixmaps = {int(i): self._load(int(i)) for i in self.log.plan.items[nxt]}

    def answer(self, position: int) -> None:
        """The participant chose the image at ``position`` (0 left, 1 middle, 2 right)."""
        if self.screen_name != "trial" or self._trial != self.log.next_trial:
            return
        self.log.record(self._trial, position, float(self._clock.nsecsElapsed()) / 1e6)
        self._next()

    def pause(self) -> None:
        if self.screen_name == "trial":
            self.stack.setCurrentWidget(self.pause_screen)

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Re-lay the trial out for the new size: the images are decoded at the cell size."""
        super().resizeEvent(event)
        self._next_pixmaps = {}
        if self.screen_name == "trial" and 0 <= self._trial < len(self.log.plan):
            for choice, item in zip(self.choices, self.log.plan.items[self._trial], strict=True):
                choice.setPixmap(self._load(int(item)))

    # ----------------------------------------------------------------- input
    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        screen = self.screen_name
        if screen == "trial" and key in _ANSWER_KEYS:
            self.answer(_ANSWER_KEYS[Qt.Key(key)])
        elif key == Qt.Key.Key_Escape:
            self.pause() if screen == "trial" else self.close()
        elif key in (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if screen == "instructions":
                self._next()
            elif screen in ("break", "pause"):
                self._show_trial()
            elif screen == "end":
                self.close()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event) -> None:
        if self.log.finished:
            self._outcome = "finished"
        self.ended.emit(self._outcome)
        super().closeEvent(event)
