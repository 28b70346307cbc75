"""Import previews, guesses, the import job and the data summary (no Qt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.errors import InputError
from alignet_engine.jobs import run_job
from alignet_engine.store import Project
from alignet_engine.views.preview import (
    ImportRequest,
    ProjectView,
    group_by_category,
    guess_import,
    import_job,
    judgment_counts,
    preview,
    project_view,
    summarize_data,
)


@pytest.fixture
def image_folder(caltech_stimuli: Path) -> Path:
    """Six real images in two categories (read from the shared data, copied to tmp)."""
    return caltech_stimuli


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_guess_import(tmp_path: Path, image_folder: Path) -> None:
    assert guess_import(image_folder) == guess_import(image_folder)
    assert guess_import(image_folder).kind == "images"
    assert guess_import(image_folder).name == "stimuli"
    g = guess_import(_csv(tmp_path / "j.csv", "item_1,item_2,item_3,odd_position\n0,1,2,3\n"))
    assert (g.kind, g.fmt, g.name) == ("judgments", "oddone-csv", "j")
    g = guess_import(_csv(tmp_path / "a.csv", "anchor,chosen,other\n0,1,2\n"))
    assert (g.kind, g.fmt) == ("judgments", "twoafc-csv")
    g = guess_import(_csv(tmp_path / "m.csv", "1,0.5,0.2\n0.5,1,0.1\n0.2,0.1,1\n"))
    assert g.kind == "matrix"
    g = guess_import(_csv(tmp_path / "man.csv", "path,category\na.jpg,x\n"))
    assert g.kind == "images"
    np.save(tmp_path / "t.npy", np.zeros((4, 3), np.int64))
    assert guess_import(tmp_path / "t.npy").fmt == "oddone-npy"
    np.save(tmp_path / "f.npy", np.zeros((6, 10), np.float32))
    assert guess_import(tmp_path / "f.npy").kind == "features"
    np.save(tmp_path / "s.npy", np.eye(6))
    assert guess_import(tmp_path / "s.npy").kind == "matrix"
    assert guess_import(tmp_path / "x.json").fmt == "materials-json"
    assert guess_import(tmp_path / "things.tsv").fmt == "things-tsv"


def test_judgment_counts() -> None:
    t = np.array([[0, 1, 2], [1, 0, 2], [3, 4, 5], [0, 1, 3]])
    j = Judgments("oddone", t, np.array([0, 1, 1, -1]))
    c = judgment_counts(j)
    assert c == {
        "triplets": 4,
        "responses": 4,
        "participants": 2,
        "items": 6,
        "repeated": 1,
        "repeat_rows": 2,
    }


def test_group_by_category() -> None:
    images = ImageSet(("a", "b", "c", "d"), ("y", "x", "", "y"))
    groups = [(c, idx.tolist()) for c, idx in group_by_category(images)]
    assert groups == [("x", [1]), ("y", [0, 3]), ("", [2])]


def test_preview_images_and_judgments(tmp_path: Path, image_folder: Path) -> None:
    req = ImportRequest("images", str(image_folder), "stimuli")
    p = preview(req, ProjectView({}, {}))
    assert p.count("images") == "6" and p.count("categories") == "2"
    assert p.rows == (("chair", "3"), ("dolphin", "3"))

    images = ImageSet(tuple(f"/x/{i}.jpg" for i in range(6)), ("a",) * 3 + ("b",) * 3)
    path = _csv(
        tmp_path / "j.csv",
        "item_1,item_2,item_3,odd_position,participant\n0,1,3,3,1\n1,0,3,3,2\n2,4,5,1,1\n",
    )
    req = ImportRequest("judgments", str(path), "h", image_set="s", fmt="oddone-csv")
    p = preview(req, ProjectView({"s": images}, {}, existing=("h",)))
    assert p.count("triplets") == "3"
    assert p.count("participants") == "2"
    assert p.count("repeats").startswith("1 ")
    assert p.rows[0][:4] == ("1", "0 (a/0.jpg)", "1 (a/1.jpg)", "3 (b/3.jpg)")
    assert any("replaces" in w for w in p.warnings)


def test_preview_reports_reader_errors(tmp_path: Path) -> None:
    images = ImageSet(tuple(f"/x/{i}.jpg" for i in range(6)), ("",) * 6)
    view = ProjectView({"s": images}, {})
    bad_col = _csv(tmp_path / "bad.csv", "item_1,item_2,item_X,odd_position\n0,1,2,3\n")
    with pytest.raises(InputError, match=r"bad\.csv"):
        preview(ImportRequest("judgments", str(bad_col), "h", "s", fmt="oddone-csv"), view)
    out_of_range = _csv(tmp_path / "oor.csv", "item_1,item_2,item_3,odd_position\n0,1,9,3\n")
    with pytest.raises(InputError, match="row 2") as err:
        preview(ImportRequest("judgments", str(out_of_range), "h", "s", fmt="oddone-csv"), view)
    assert err.value.row == 2
    with pytest.raises(InputError, match="image set"):
        preview(ImportRequest("judgments", str(out_of_range), "h", "", fmt="oddone-csv"), view)


def test_preview_matrix_and_features(tmp_path: Path) -> None:
    images = ImageSet(tuple(f"/x/{i}.jpg" for i in range(4)), ("",) * 4)
    np.save(tmp_path / "m.npy", np.eye(4))
    p = preview(
        ImportRequest("matrix", str(tmp_path / "m.npy"), "rsm", "s"), ProjectView({"s": images}, {})
    )
    assert p.count("shape") == "4 × 4" and p.count("subjects") == "1"
    np.save(tmp_path / "f.npy", np.ones((4, 20), np.float32))
    p = preview(
        ImportRequest("features", str(tmp_path / "f.npy"), "clip", "s"),
        ProjectView({"s": images}, {}),
    )
    assert p.count("dimensions") == "20"
    assert len(p.columns) == 10  # row + 8 columns + …
    p = preview(
        ImportRequest("features", str(tmp_path / "f.npy"), "clip", "new"), ProjectView({}, {})
    )
    assert any("new image set" in w for w in p.warnings)


def test_import_job_and_summary(tmp_path: Path, image_folder: Path) -> None:
    project = Project.create(tmp_path / "p.alignet")
    try:
        run_job(import_job(project, ImportRequest("images", str(image_folder), "stimuli")))
        path = _csv(
            tmp_path / "j.csv",
            "item_1,item_2,item_3,odd_position,participant\n0,1,3,3,1\n1,0,3,3,2\n",
        )
        req = ImportRequest("judgments", str(path), "humans", "stimuli", fmt="oddone-csv")
        view = project_view(project, req)
        assert len(view.imagesets["stimuli"]) == 6
        assert preview(req, view).count("triplets") == "2"
        out = run_job(import_job(project, req))
        assert out["n_triplets"] == 2
        np.save(tmp_path / "f.npy", np.ones((6, 5), np.float32))
        run_job(
            import_job(
                project, ImportRequest("features", str(tmp_path / "f.npy"), "clip", "stimuli")
            )
        )
        rows = {(r.kind, r.name): r for r in summarize_data(project)}
        assert rows[("image set", "stimuli")].details == "6 images, 2 categories"
        assert "2 triplets" in rows[("judgments", "humans")].details
        assert "2 participants" in rows[("judgments", "humans")].details
        assert rows[("features", "clip")].details == "6 × 5"
    finally:
        project.close()
