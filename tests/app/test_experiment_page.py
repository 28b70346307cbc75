"""Experiment mode in the window: consent, trials by key and click, a break, stop, resume, save."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

from alignet_engine.data.importers import read_image_folder
from alignet_engine.store import Project
from tests.app.conftest import save_screenshot


def _project(tmp_path: Path, shared_data: Path) -> Path:
    """A project whose image set is 6 real photos (2 categories)."""
    folder = tmp_path / "images"
    for cat in ("airplanes", "chair"):
        (folder / cat).mkdir(parents=True)
        for src in sorted((shared_data / "caltech101_mini" / cat).iterdir())[:3]:
            shutil.copy(src, folder / cat / src.name)
    path = tmp_path / "p.alignet"
    with Project.create(path) as project:
        project.write_imageset("photos", read_image_folder(folder), {})
    return path


def test_a_participant_runs_stops_resumes_and_the_answers_are_saved(
    window, qtbot, tmp_path: Path, shared_data: Path
) -> None:
    assert window.open_project(str(_project(tmp_path, shared_data)))
    window.show_page("experiment")
    page = window.page("experiment")
    page.fullscreen = False
    form = page.form
    form.set_value("image_set", "photos")
    form.set_value("participant", 4)
    form.set_value("n_trials", 6)
    form.set_value("repeat_fraction", "0.2")
    form.set_value("break_every", 3)
    save_screenshot(page, "experiment_page")

    screen = page.start_new()
    assert screen is not None and screen.screen_name == "consent"
    qtbot.addWidget(screen)
    agree = next(b for b in screen.consent_screen.findChildren(QPushButton) if "agree" in b.text())
    qtbot.mouseClick(agree, Qt.MouseButton.LeftButton)
    assert screen.screen_name == "instructions"
    qtbot.keyClick(screen, Qt.Key.Key_Space)
    assert screen.screen_name == "trial"
    save_screenshot(screen, "experiment_trial")
    plan = screen.log.plan
    qtbot.keyClick(screen, Qt.Key.Key_1)  # trial 0: left
    qtbot.mouseClick(screen.choices[2], Qt.MouseButton.LeftButton)  # trial 1: right, by click
    qtbot.keyClick(screen, Qt.Key.Key_Down)  # trial 2: middle
    assert screen.screen_name == "break"
    qtbot.keyClick(screen, Qt.Key.Key_Space)
    assert screen.screen_name == "trial"
    qtbot.keyClick(screen, Qt.Key.Key_Escape)
    assert screen.screen_name == "pause"
    screen.close()  # the participant stops for now
    qtbot.waitUntil(lambda: page.table.rowCount() == 1)
    assert page.table.item(0, 2).text() == "3 / 6"

    page.table.selectRow(0)
    again = page.resume(page.selected())
    qtbot.addWidget(again)
    assert again.screen_name == "instructions" and again.log.next_trial == 3
    qtbot.keyClick(again, Qt.Key.Key_Return)
    # the participant looks at trial 3 for a while before answering (Qt's coarse timers may
    # end a wait up to 5 % early: 60 ms waited is at least 57 ms)
    qtbot.wait(60)
    for key in (Qt.Key.Key_3, Qt.Key.Key_2, Qt.Key.Key_1):  # trials 3, 4, 5
        qtbot.keyClick(again, key)
    assert again.screen_name == "end"
    again.close()

    page.table.selectRow(0)
    with qtbot.waitSignal(window.session.runner.idle, timeout=30_000):
        assert page.save(page.selected())
    stored, image_set = window.session.project.judgments("experiment-p4")
    assert image_set == "photos" and len(stored) == 6
    positions = [0, 2, 1, 2, 1, 0]
    for t, pos in enumerate(positions):
        assert stored.triplets[t, 2] == plan.items[t, pos]  # the odd one out is stored last
    # Synthetic key presses can land within 0.05 ms of the images appearing (stored as
    # 0.0 after rounding to 0.1 ms), so only the trial we waited on has a known floor.
    assert np.all(np.isfinite(stored.response_ms)) and np.all(stored.response_ms >= 0)
    assert stored.response_ms[3] >= 50
    assert np.all(stored.participant == 4)
    assert page.table.item(0, 4).text() == "experiment-p4"
    save_screenshot(page, "experiment_sessions")


def test_bad_settings_show_an_error_and_create_no_session(window, tmp_path, shared_data) -> None:
    assert window.open_project(str(_project(tmp_path, shared_data)))
    window.show_page("experiment")
    page = window.page("experiment")
    page.fullscreen = False
    page.form.set_value("image_set", "photos")
    page.form.set_value("repeat_fraction", "0.9")
    assert page.start_new() is None
    assert "repeat_fraction" in page.error.text() or "0.5" in page.error.text()
    assert page.table.rowCount() == 0


def _text_fits(screen, label) -> None:
    """Every line of ``label`` is on screen: the wrapped text fits the label, the label lies
    inside the window (not scrolled away), and it overlaps no button."""
    from PySide6.QtCore import QRect

    assert label.isVisible(), label.text()
    needed = label.needed_height()
    assert needed <= label.contentsRect().height(), (label.text()[:40], needed, label.height())
    top_left = label.mapTo(screen, label.contentsRect().topLeft())
    box = QRect(top_left, label.contentsRect().size())
    assert screen.rect().contains(box), (box, screen.rect())
    for button in label.parentWidget().findChildren(QPushButton):
        if button.isVisible():
            other = QRect(button.mapTo(screen, button.rect().topLeft()), button.size())
            assert not box.intersects(other), button.text()


def test_consent_and_break_text_are_whole_at_every_size(
    window, qtbot, tmp_path: Path, shared_data: Path
) -> None:
    from alignet_engine.experiment import ExperimentConfig

    assert window.open_project(str(_project(tmp_path, shared_data)))
    window.show_page("experiment")
    page = window.page("experiment")
    page.form.set_value("image_set", "photos")
    page.form.set_value("n_trials", 6)
    page.form.set_value("break_every", 3)
    page.form.set_value("repeat_fraction", "0")
    # a long consent text (the default one, twice)
    page.consent.setPlainText("\n\n".join([ExperimentConfig(image_set="x").consent] * 2))
    screen = page.preview()  # the "preview the participant screen" button
    assert screen is not None and "Preview" in screen.windowTitle()
    qtbot.addWidget(screen)
    sizes = [(800, 600), (1280, 800), None]  # None: full screen
    for size in sizes:
        if size is None:
            screen.showFullScreen()
        else:
            screen.showNormal()
            screen.resize(*size)
        qtbot.wait(50)
        assert screen.screen_name == "consent"
        _text_fits(screen, screen.consent_text)
        name = "fullscreen" if size is None else f"{size[0]}x{size[1]}"
        save_screenshot(screen, f"participant_consent_{name}")
    # through the instructions and three trials to the break
    screen.showNormal()
    screen.resize(800, 600)
    agree = next(b for b in screen.consent_screen.findChildren(QPushButton) if "agree" in b.text())
    qtbot.mouseClick(agree, Qt.MouseButton.LeftButton)
    qtbot.keyClick(screen, Qt.Key.Key_Space)
    for _ in range(3):
        qtbot.keyClick(screen, Qt.Key.Key_1)
    assert screen.screen_name == "break"
    assert "3 of 6 trials done." in screen.break_text.text()
    for size in sizes:
        if size is None:
            screen.showFullScreen()
        else:
            screen.showNormal()
            screen.resize(*size)
        qtbot.wait(50)
        _text_fits(screen, screen.break_text)
        name = "fullscreen" if size is None else f"{size[0]}x{size[1]}"
        save_screenshot(screen, f"participant_break_{name}")
    # a resized trial re-lays its images out at the new size
    qtbot.keyClick(screen, Qt.Key.Key_Space)
    assert screen.screen_name == "trial"
    screen.resize(1280, 800)
    qtbot.wait(50)
    big = screen.choices[0].pixmap().width()
    screen.resize(800, 600)
    qtbot.wait(50)
    assert screen.choices[0].pixmap().width() < big
    save_screenshot(screen, "participant_trial_800x600")
    screen.close()
