"""The page base every stage page stands on: validate, then run; the job the page started;
its end told to the page before the redraw that follows every job; its failure inline.

Runs on an empty project (no demo pipeline) with jobs written here, so each check is about
the bookkeeping, not about a stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QVBoxLayout

from alignet_app.pages.base import Page, StageControls
from alignet_app.session import Session
from alignet_app.widgets.config_form import ConfigForm
from alignet_engine.config import ClusterConfig
from alignet_engine.errors import InputError

LABEL = "Probe job"


class _Probe(Page):
    """A page with one stage box; it records its redraws and the ends of its jobs."""

    inline_failures = True

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.log: list[tuple[str, str]] = []
        self.form = ConfigForm(ClusterConfig, fields=["k"])
        self.controls = StageControls("k-means", self.form, "Run", self.run, error=self.error)
        QVBoxLayout(self).addWidget(self.controls)
        self.seen: list[object] = []

    def run(self) -> bool:
        return self.start_job(lambda: self.form.values()["k"], lambda k: LABEL, self._job)

    def _job(self, project, k, control):
        self.seen.append(k)
        yield from ()
        if k == 13:
            raise InputError("k: 13 is unlucky")
        return 2 * k

    def refresh(self) -> None:
        self.log.append(("refresh", self.running_job))

    def job_ended(self, label: str) -> None:
        self.log.append(("ended", label))


@pytest.fixture
def probe(qtbot, tmp_path: Path):
    session = Session()
    session.new(tmp_path / "probe.alignet")
    page = _Probe(session)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitUntil(lambda: ("refresh", "") in page.log, timeout=5_000)
    page.log.clear()
    yield page
    session.shutdown()


def test_a_bad_configuration_is_shown_and_starts_nothing(probe) -> None:
    bad = {"image_set": "pool", "model": "m", "k": 0}
    assert not probe.start_job(lambda: ClusterConfig.from_dict(bad), lambda c: LABEL, probe._job)
    assert probe.error.isVisible()
    assert probe.error.text() == "ClusterConfig, field 'k': must be an integer ≥ 2; got 0"
    assert not probe.session.runner.busy and probe.running_job == "" and probe.seen == []
    # the next attempt clears the old message first
    assert probe.validated(lambda: 4) == 4 and probe.error.isHidden()


def test_the_page_knows_its_job_until_it_ends_then_redraws_idle(probe, qtbot) -> None:
    probe.form.set_value("k", 5)
    results: list[int] = []
    with qtbot.waitSignal(probe.session.runner.idle, timeout=10_000):
        assert probe.start_job(lambda: 5, lambda k: f"{LABEL} k={k}", probe._job, results.append)
        assert probe.running_job == f"{LABEL} k=5" and probe.session.runner.busy
    assert probe.seen == [5] and results == [10]  # the job got the built config
    assert probe.running_job == ""
    # told of the end first; the redraw after the job sees the page idle
    assert probe.log[0] == ("ended", f"{LABEL} k=5")
    assert ("refresh", "") in probe.log[1:]
    assert all(running == "" for what, running in probe.log if what == "refresh")
    assert probe.error.isHidden()


def test_the_button_runs_the_form_and_a_failure_is_shown_inline(probe, qtbot) -> None:
    probe.form.set_value("k", 13)
    with qtbot.waitSignal(probe.session.runner.idle, timeout=10_000):
        probe.controls.button.click()
    assert probe.seen == [13]
    assert probe.error.isVisible()
    assert probe.error.text() == f"{LABEL} failed: k: 13 is unlucky"
    assert probe.log[0] == ("ended", LABEL) and probe.running_job == ""


def test_another_pages_job_is_not_this_pages(probe, qtbot) -> None:
    def failing(project, control):
        yield from ()
        raise InputError("not mine")

    with qtbot.waitSignal(probe.session.runner.idle, timeout=10_000):
        assert probe.session.run("someone else's job", failing)
        assert probe.running_job == ""
    assert ("ended", "someone else's job") not in probe.log
    assert probe.error.isHidden()


def test_stage_controls_say_why_the_button_is_off(probe) -> None:
    probe.controls.set_available("Import images first.")
    assert not probe.controls.button.isEnabled()
    assert probe.controls.reason.isVisible()
    assert probe.controls.reason.text() == "Import images first."
    probe.controls.set_available("")
    assert probe.controls.button.isEnabled() and probe.controls.reason.isHidden()
