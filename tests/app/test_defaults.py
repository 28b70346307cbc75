"""Every page starts from values that exist in the project, and says why a button is off.

A small project: a pool of 10 images and 6 stimuli, "fit" and "test" judgments about the
stimuli, teacher features of both, a transform fitted on "fit".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.store import Project

TEACHER = "efficientnet_lite2"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        p.write_imageset("pool", ImageSet(tuple(f"/p{i}.png" for i in range(10)), ("",) * 10), {})
        p.write_imageset("stimuli", ImageSet(tuple(f"/s{i}.png" for i in range(6)), ("",) * 6), {})
        rows = np.array([[0, 1, 2], [3, 4, 5], [1, 2, 3]])
        for name in ("fit", "test"):
            j = Judgments("oddone", rows, np.full(3, -1))
            p.write_judgments(name, j, image_set="stimuli", params={})
        for image_set, n in (("pool", 10), ("stimuli", 6)):
            rid = p.begin_job("features", {})
            p.write_run(
                "features",
                rid,
                slot=f"features:{image_set}:{TEACHER}",
                params={"model": TEACHER, "image_set": image_set},
                arrays={"X": np.eye(n, 4, dtype=np.float32)},
                summary={"n": n, "dim": 4},
            )
        rid = p.begin_job("transform", {})
        p.write_run(
            "transform",
            rid,
            slot="transform:teacher",
            params={"model": TEACHER, "image_set": "stimuli", "judgments": ["fit"]},
            arrays={},
            summary={},
        )
    return path


def test_pages_default_to_real_image_sets_models_and_held_out_judgments(
    window, study: Path
) -> None:
    assert window.open_project(str(study))
    window.show_page("features")
    values = window.page("features").form.values()
    assert values["image_set"] == "stimuli" and values["model"] == TEACHER
    window.show_page("experiment")
    assert window.page("experiment").form.values()["image_set"] == "stimuli"
    window.show_page("clusters")  # clusters group the pool, not the judged stimuli
    values = window.page("clusters").form.values()
    assert (values["image_set"], values["model"]) == ("pool", TEACHER)

    window.show_page("evaluate")
    page = window.page("evaluate")
    assert page.checked_targets() == (["test"], [])
    assert page.fit_note.isVisible() and "fit" in page.fit_note.text()
    values = page.form.values()
    assert (values["image_set"], values["model"], values["judgments"]) == (
        "stimuli",
        TEACHER,
        "test",
    )


def test_the_judgments_import_picks_the_judged_set_and_guesses_each_file(
    window, study: Path, tmp_path: Path
) -> None:
    assert window.open_project(str(study))
    data = window.page("data")
    data._shown_set = "pool"  # the grid shows the pool
    dialog = data.open_import("judgments")
    assert dialog.request().image_set == "stimuli"
    floats = tmp_path / "answers.npy"
    np.save(floats, np.zeros((4, 3), np.float32))  # not integers: the content guess fails
    dialog.set_fields(path=str(floats))
    assert dialog.request().fmt == "oddone-npy"
    tsv = tmp_path / "things.tsv"
    tsv.write_text("1\t2\t3\t3\n")
    dialog.set_fields(path=str(tsv))
    assert dialog.request().fmt == "things-tsv"
    dialog.close()


def test_disabled_buttons_say_why_next_to_them(window, tmp_path: Path) -> None:
    window.session.new(tmp_path / "empty.alignet")
    for key, button, note, words in (
        ("features", "extract_button", "extract_reason", "Import images first"),
        ("experiment", "start_button", "start_reason", "at least 3 images"),
        ("evaluate", "all_button", "all_reason", "Import held-out human judgments"),
    ):
        window.show_page(key)
        page = window.page(key)
        assert not getattr(page, button).isEnabled(), key
        label = getattr(page, note)
        assert label.isVisible() and words in label.text(), key
    page = window.page("project")
    window.show_page("project")
    assert not page.rerun_button.isEnabled() and page.rerun_reason.text() == "Nothing is stale."
    assert "Import images" in page.advice.text() and "page:data" in page.advice.text()
