"""The CLI's progress on stderr: bars on a terminal, a few plain lines in logs (issue 12 item 9)."""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest

from alignet_engine import console
from alignet_engine.console import ConsoleProgress
from alignet_engine.jobs import LossBatch, Message, Progress


class Clock:
    """A fake ``time.monotonic`` the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(console.time, "monotonic", fake)
    return fake


def test_plain_lines_are_periodic_with_rate_and_eta(clock: Clock) -> None:
    out = io.StringIO()
    progress = ConsoleProgress(stream=out, bars=False, interval_s=10.0)
    # 600 distillation steps at 2 steps/s: 300 s, one event per step
    progress(Progress("distill", 0, 600))
    for step in range(1, 601):
        clock.now += 0.5
        progress(LossBatch("distill", np.array([step]), {"loss": np.array([1.0 / step])}))
        progress(Progress("distill", step, 600))
    lines = out.getvalue().splitlines()
    # the first line, one every 10 s of the 300 s, and the last: not one per step
    assert 25 <= len(lines) <= 35, lines
    assert lines[0].startswith("[distill] 0/600 (0%)")
    middle = lines[len(lines) // 2]
    done = int(re.match(r"\[distill\] (\d+)/600", middle).group(1))
    assert "2 step/s" in middle
    remaining = (600 - done) / 2.0  # seconds left at 2 steps/s
    m, s = divmod(round(remaining), 60)
    assert f"ETA {m:02d}:{s:02d}" in middle
    assert f"loss {1.0 / done:.4f}" in middle
    assert lines[-1].startswith("[distill] 600/600 (100%) 2 step/s in 05:00 loss 0.0017")
    progress(Progress("distill", 600, 600))  # the trainer repeats its final progress
    assert out.getvalue().splitlines() == lines


def test_rate_counts_from_the_first_event(clock: Clock) -> None:
    """A job reports its first batch once it is done: that batch is not counted as done in
    no time (the demo showed "2.2e+06 img/s")."""
    out = io.StringIO()
    progress = ConsoleProgress(stream=out, bars=False, interval_s=0.0)
    progress(Progress("extract", 32, 120))
    clock.now += 4.0
    progress(Progress("extract", 64, 120))
    first, second = out.getvalue().splitlines()
    assert first == "[extract] 32/120 (27%)"
    assert second == "[extract] 64/120 (53%) 8 img/s ETA 00:07"


def test_messages_follow_the_verbosity(clock: Clock) -> None:
    shown = {}
    for verbosity in (0, 1, 2):
        out = io.StringIO()
        progress = ConsoleProgress(verbosity=verbosity, stream=out, bars=False)
        progress(Message("transform", "fitting"))
        progress(Message("transform", "epoch details", level="DEBUG"))
        progress(Progress("transform", 1, 1))
        shown[verbosity] = out.getvalue()
    assert shown[0] == ""
    assert "[transform] fitting" in shown[1] and "epoch details" not in shown[1]
    assert "[transform] epoch details" in shown[2]
    assert "[transform] 1/1 (100%)" in shown[1]


def test_a_stage_that_starts_over_gets_a_fresh_line(clock: Clock) -> None:
    """Two extractions in a row (teacher, then student) each report from 0."""
    out = io.StringIO()
    progress = ConsoleProgress(stream=out, bars=False)
    for _ in range(2):
        for done in (0, 32, 64):
            clock.now += 1
            progress(Progress("extract", done, 64))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["0/64", "64/64", "0/64", "64/64"]
    assert "32 img/s" in lines[1]


def test_terminal_bars_show_rate_and_postfix() -> None:
    out = io.StringIO()
    with ConsoleProgress(stream=out, bars=True) as progress:
        progress(Progress("transform", 0, 100, "starting"))
        progress(Message("transform", "a message above the bar"))
        for epoch in range(1, 14):
            progress(Progress("transform", epoch, 100, f"epoch {epoch}: val loss 0.7"))
        progress(Progress("transform", 13, 13, "stopped early"))  # the total shrinks
    text = out.getvalue()
    assert "a message above the bar" in text
    final = text.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("transform: 100%")
    assert "13/13" in final
    assert "epoch/s" in final or "s/epoch" in final
    assert "stopped early" in final


def test_cli_log_level_and_verbose_flags(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from alignet_engine.cli import build_parser, main

    args = build_parser().parse_args(["new", str(tmp_path / "p.alignet"), "-vv"])
    assert args.verbose == 2
    assert main(["new", str(tmp_path / "q.alignet"), "--log-level", "debug"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    assert main(["new", str(tmp_path / "r.alignet"), "-v"]) == 0
    assert logging.getLogger().level == logging.INFO
    assert main(["new", str(tmp_path / "s.alignet"), "-q"]) == 0
    assert logging.getLogger().level == logging.WARNING
    capsys.readouterr()
