"""Help ▸ User Guide, Keyboard Shortcuts and the Method: a short guide, one page per stage."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

#: (page title, what it does, what to look at) — one entry per page, in navigator order.
GUIDE: tuple[tuple[str, str, str], ...] = (
    (
        "Project",
        "The study at a glance: each stage of the pipeline with its state, what to do next, "
        "the headline results and every run of every stage.",
        "The next steps (each links to its page). A ◐ stale stage read an input that has "
        "since changed: re-run it, or press <i>Re-run everything stale</i>. In the run list, "
        "select one run to read its parameters, the data it read and its results; make an "
        "older run current again; Ctrl-click two runs of a stage and press Compare to see "
        "their curves and parameters side by side; delete runs you no longer need.",
    ),
    (
        "Data",
        "Imports the images (a folder whose sub-folders are categories, or a list), the human "
        "judgments about them (odd-one-out or two-alternative triplets), similarity matrices, "
        "precomputed features and transforms. The import dialog previews the file and shows "
        "every problem before anything is written.",
        "The number of images and triplets, whether repeated triplets exist (they give the "
        "noise ceiling), and that the judgments point at the right image set.",
    ),
    (
        "Models & features",
        "Runs a pretrained network (the teacher, later the student) over an image set and "
        "keeps one feature vector per image.",
        "Extract the teacher's features of the stimuli (the images people judged) and of the "
        "pool (the images the teacher will label). After distillation, extract the distilled "
        "student's features of the stimuli to evaluate it.",
    ),
    (
        "Alignment",
        "Fits a small linear map on the teacher's features so that its odd-one-out choices "
        "agree with the people's: the aligned (surrogate) teacher.",
        "Held-out accuracy against the noise ceiling (higher is better, the ceiling is the "
        "most one can expect), the loss curves (validation loss should flatten, not rise) and "
        "the calibration plot (points near the diagonal: the teacher is as unsure as people).",
    ),
    (
        "Clusters",
        "Groups the pool images by the aligned teacher's representation (k-means), the "
        "superordinate groups that triplet sampling uses.",
        "Inertia and silhouette per number of clusters (pick k where the curve bends), the "
        "map of the pool and each cluster's most typical images: do they make sense?",
    ),
    (
        "Triplets",
        "Samples triplets of pool images (many across cluster boundaries); the aligned "
        "teacher picks the odd one out and keeps its three probabilities: the training data "
        "of the student.",
        "The inspector: the teacher's choice and how sure it was, filtered by disagreement or "
        "cluster. Uncertain or odd-looking answers tell you where the teacher is weak.",
    ),
    (
        "Distillation",
        "Fine-tunes the student network on the teacher's triplets, with a pull back to its "
        "pretrained weights so it keeps what it knew.",
        "The loss falls and the validation agreement with the teacher rises, then levels off. "
        "A new run that ends worse than the current one does not replace it: you are asked.",
    ),
    (
        "Evaluation",
        "Scores the base teacher, the aligned teacher, the base student and the distilled "
        "student on held-out human judgments (never the ones the transform was fitted on), "
        "with 95% confidence intervals and the noise ceiling.",
        "The chain base → aligned teacher → distilled student: alignment should raise "
        "agreement toward the ceiling, and distillation should carry it into the student.",
    ),
    (
        "Export",
        "Writes the aligned student (weights, configuration, model card, TorchScript / ONNX), "
        "the transform, the triplets and a report (HTML + JSON + charts).",
        "What each format still needs before it can be exported (shown beside it).",
    ),
    (
        "Experiment",
        "Collects odd-one-out judgments from a participant on the project's images, with "
        "consent, instructions, breaks and repeated trials (for the participant's own "
        "consistency); the answers become a judgment set.",
        "Preview the participant screen before a session; answers are saved as they are given.",
    ),
)


def readme_path() -> Path | None:
    """README.md of a source checkout (not part of an installed wheel)."""
    path = Path(__file__).resolve().parents[1] / "README.md"
    return path if path.is_file() else None


def method_markdown() -> str:
    """The README's "What it does" section (the method, stage by stage)."""
    path = readme_path()
    if path is None:
        return (
            "The AligNet method: Muttenthaler et al., *Aligning Machine and Human Visual "
            "Representations across Abstraction Levels*, Nature 2025 (arXiv 2409.06509)."
        )
    text = path.read_text(encoding="utf-8")
    start = text.find("## What it does")
    end = text.find("\n## ", start + 3)
    return text[start : end if end > 0 else None] if start >= 0 else text


class HelpDialog(QDialog):
    """Tabs: the user guide (one page per stage), keyboard shortcuts, the method."""

    def __init__(self, shortcuts: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("AligNet Studio — Help")
        self.resize(820, 560)
        self.tabs = QTabWidget()

        # ---- guide
        self.topics = QListWidget()
        self.topics.setMaximumWidth(190)
        self.pages = QStackedWidget()
        for title, what, look in GUIDE:
            self.topics.addItem(title)
            text = QTextBrowser()
            text.setHtml(
                f"<h2>{html.escape(title)}</h2><h4>What it does</h4><p>{what}</p>"
                f"<h4>What to look at</h4><p>{look}</p>"
            )
            self.pages.addWidget(text)
        self.topics.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.topics.setCurrentRow(0)
        guide = QWidget()
        guide_layout = QHBoxLayout(guide)
        guide_layout.addWidget(self.topics)
        guide_layout.addWidget(self.pages, 1)
        self.tabs.addTab(guide, "User guide")

        # ---- shortcuts
        self.shortcuts = QTableWidget(len(shortcuts), 2)
        self.shortcuts.setHorizontalHeaderLabels(["Action", "Keys"])
        for row, (action, keys) in enumerate(shortcuts):
            self.shortcuts.setItem(row, 0, QTableWidgetItem(action))
            self.shortcuts.setItem(row, 1, QTableWidgetItem(keys))
        self.shortcuts.horizontalHeader().setStretchLastSection(True)
        self.shortcuts.resizeColumnsToContents()
        self.tabs.addTab(self.shortcuts, "Keyboard shortcuts")

        # ---- method
        method = QWidget()
        self.method = QTextBrowser()
        self.method.setMarkdown(method_markdown())
        self.method.setOpenExternalLinks(True)
        open_readme = QPushButton("Open the README")
        readme = readme_path()
        open_readme.setEnabled(readme is not None)
        if readme is not None:
            open_readme.clicked.connect(
                lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(readme)))
            )
        else:
            open_readme.setText("Open the README (not installed with the app)")
        method_layout = QVBoxLayout(method)
        method_layout.addWidget(self.method, 1)
        method_layout.addWidget(open_readme)
        self.tabs.addTab(method, "Method")

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(buttons)

    def show_tab(self, name: str) -> None:
        self.tabs.setCurrentIndex({"guide": 0, "shortcuts": 1, "method": 2}.get(name, 0))
