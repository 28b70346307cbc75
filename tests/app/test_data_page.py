"""The Data page and the import dialog, with the engine's real readers and import jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.conftest import save_screenshot

LONG = 30_000


@pytest.fixture
def image_folder(caltech_stimuli: Path) -> Path:
    """Six real images in two categories (read from the shared data, copied to tmp)."""
    return caltech_stimuli


def _preview(qtbot, dialog) -> None:
    with qtbot.waitSignal(dialog.preview_finished, timeout=LONG):
        dialog.refresh_preview()


def _import(qtbot, window, dialog) -> object:
    with qtbot.waitSignal(dialog.imported, timeout=LONG) as blocker:
        assert dialog.accept_import()
    qtbot.waitUntil(lambda: not window.session.runner.busy, timeout=LONG)
    return blocker.args[0]


def _import_images(qtbot, window, folder: Path):
    page = window.page("data")
    window.show_page("data")
    dialog = page.open_import("images", str(folder))
    assert dialog.request().name == "stimuli"  # prefilled with the folder's name
    _preview(qtbot, dialog)
    assert dialog.preview_result is not None, dialog.error_text()
    assert dialog.preview_result.count("images") == "6"
    assert dialog.preview_result.count("categories") == "2"
    assert _import(qtbot, window, dialog)["n_images"] == 6
    return page


def test_import_images_and_judgments(qtbot, window, tmp_path: Path, image_folder: Path) -> None:
    window.session.new(tmp_path / "p.alignet")
    page = _import_images(qtbot, window, image_folder)
    assert window.session.info()["imagesets"] == {"stimuli": 6}

    # The page lists the set with its counts and the grid shows its thumbnails.
    qtbot.waitUntil(lambda: any(r.name == "stimuli" for r in page.rows), timeout=LONG)
    row = next(r for r in page.rows if r.kind == "image set")
    assert row.details == "6 images, 2 categories"
    # the set's paths are read on a view worker, then the grid fills
    qtbot.waitUntil(lambda: page.grid.model.rowCount() == 8, timeout=LONG)  # 2 headers + 6
    model = page.grid.model
    assert [model.is_header(r) for r in (0, 4)] == [True, True]
    qtbot.waitUntil(lambda: all(model.thumbnail_ready(r) for r in model.image_rows()), timeout=LONG)

    # Double click opens the larger view with path and category.
    viewer = page.grid.show_image(1)
    assert viewer is not None and "chair" in viewer.caption.text()
    assert not viewer.image.pixmap().isNull()
    viewer.close()
    page.grid.show_category("dolphin")
    assert len(model.image_rows()) == 3 and model.rowCount() == 3
    page.grid.show_category(None)
    window.resize(1280, 800)
    qtbot.wait(200)
    save_screenshot(window, "data_page_grid")

    # Judgments: preview with counts, then import.
    csv = tmp_path / "humans.csv"
    csv.write_text(
        "item_1,item_2,item_3,odd_position,participant\n"
        "0,1,3,3,1\n1,0,3,3,2\n3,4,0,3,1\n4,5,2,3,2\n2,1,5,3,3\n"
    )
    (dialog,) = page.import_paths([str(csv)])
    assert dialog.request().kind == "judgments" and dialog.request().fmt == "oddone-csv"
    assert dialog.request().image_set == "stimuli" and dialog.request().name == "humans"
    _preview(qtbot, dialog)
    p = dialog.preview_result
    assert p is not None, dialog.error_text()
    assert (p.count("triplets"), p.count("participants")) == ("5", "3")
    assert p.count("repeats").startswith("1 ")
    assert dialog.table.rowCount() == 5
    assert dialog.import_button.isEnabled()
    qtbot.wait(100)  # let the layout settle before the grab
    save_screenshot(dialog, "import_dialog_preview")
    _import(qtbot, window, dialog)
    assert window.session.info()["judgments"] == ["humans"]
    qtbot.waitUntil(lambda: any(r.kind == "judgments" for r in page.rows), timeout=LONG)
    row = next(r for r in page.rows if r.kind == "judgments")
    assert "5 triplets" in row.details and "3 participants" in row.details


def test_bad_files_show_the_engine_error_and_write_nothing(
    qtbot, window, tmp_path: Path, image_folder: Path
) -> None:
    window.session.new(tmp_path / "p.alignet")
    page = _import_images(qtbot, window, image_folder)
    before = window.session.project.info()

    wrong_column = tmp_path / "wrong.csv"
    wrong_column.write_text("item_1,item_2,item_X,odd_position\n0,1,2,3\n")
    dialog = page.open_import("judgments", str(wrong_column), fmt="oddone-csv")
    _preview(qtbot, dialog)
    assert dialog.preview_result is None
    assert "wrong.csv" in dialog.error_text() and "item_3" in dialog.error_text()
    assert dialog.error.isVisibleTo(dialog)
    assert not dialog.import_button.isEnabled()
    assert not dialog.accept_import()

    out_of_range = tmp_path / "range.csv"
    out_of_range.write_text("item_1,item_2,item_3,odd_position\n0,1,2,3\n0,1,17,3\n")
    dialog.set_fields(path=str(out_of_range))
    _preview(qtbot, dialog)
    assert dialog.preview_result is None
    assert "range.csv" in dialog.error_text() and "row 3" in dialog.error_text()
    qtbot.wait(100)
    save_screenshot(dialog, "import_dialog_error")
    assert not dialog.accept_import()
    assert not window.session.runner.busy
    after = window.session.project.info()
    assert after["judgments"] == before["judgments"] == []
    assert after["imagesets"] == before["imagesets"]
    dialog.reject()


def test_drop_folder_and_matrix(qtbot, window, tmp_path: Path, image_folder: Path) -> None:
    window.session.new(tmp_path / "p.alignet")
    window.show_page("overview" if "overview" in window.pages else "project")
    window.handle_dropped([str(image_folder)])
    page = window.page("data")
    assert window.current_page() is page
    (dialog,) = page.dialogs
    assert dialog.request().kind == "images" and dialog.request().name == "stimuli"
    _preview(qtbot, dialog)
    _import(qtbot, window, dialog)
    assert window.session.info()["imagesets"] == {"stimuli": 6}

    import numpy as np

    rsm = np.eye(6) + 0.1
    np.save(tmp_path / "rsm.npy", rsm)
    window.handle_dropped([str(tmp_path / "rsm.npy")])
    dialog = page.dialogs[-1]
    assert dialog.request().kind == "matrix"
    _preview(qtbot, dialog)
    assert dialog.preview_result is not None and dialog.preview_result.count("shape") == "6 × 6"
    _import(qtbot, window, dialog)
    assert window.session.info()["matrices"] == ["rsm"]


def test_triplets_from_a_matrix(qtbot, window, tmp_path: Path) -> None:
    """The Data page's action derives judgments with the engine job the CLI uses."""
    import numpy as np

    from alignet_engine.base.types import ImageSet

    rng = np.random.default_rng(5)
    n = 20  # 10 fit items: 120 distinct triplets
    S = rng.normal(size=(4, n, n))
    S = (S + S.transpose(0, 2, 1)) / 2
    window.session.new(tmp_path / "p.alignet")
    project = window.session.project
    project.write_imageset("s", ImageSet(("",) * n, ("",) * n), {})
    project.write_matrix("ratings", S, image_set="s", kind="similarity", params={})
    window.session.refresh()
    window.show_page("data")
    page = window.page("data")
    assert page.matrix_triplets_button.isEnabled()
    dialog = page.open_matrix_triplets()
    assert dialog.form.values()["matrix"] == "ratings"
    dialog.form.set_value("n_triplets", 0)  # the spin box stops at the declared ≥ 1
    assert dialog.form.values()["n_triplets"] == 1
    dialog.form.set_value("test_fraction", 1.0)  # outside (0, 1): the engine's message, no job
    assert not dialog.derive()
    assert "test_fraction" in dialog.error.text() and not window.session.runner.busy
    dialog.form.set_value("test_fraction", 0.5)
    dialog.form.set_value("n_triplets", 60)
    dialog.form.set_value("name", "ratings-fit")
    with qtbot.waitSignal(window.session.runner.idle, timeout=LONG):
        assert dialog.derive()
    qtbot.waitUntil(
        lambda: any(r.name == "ratings-fit" for r in page.rows if r.kind == "judgments"),
        timeout=LONG,
    )
    j, image_set = window.session.project.judgments("ratings-fit")
    assert image_set == "s" and len(j) > 0
    fit_items = np.unique(j.triplets)
    assert fit_items.size <= n - round(0.5 * n)  # only the fit side's items
    for (a, b, c), subject in zip(j.triplets, j.participant, strict=True):
        pairs = {(a, b): S[subject, a, b], (a, c): S[subject, a, c], (b, c): S[subject, b, c]}
        assert max(pairs, key=pairs.get) == (a, b)  # the odd one (last) is outside the top pair
