"""The Models & features page: a real extraction (efficientnet_lite0, 64 px, 6 images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.conftest import save_screenshot

LONG = 180_000


@pytest.fixture
def project_with_images(window, tmp_path: Path, caltech_stimuli: Path) -> Path:
    """A new project holding six real images in two categories (imported by the engine)."""
    from alignet_engine.stages.imports import import_images

    root = caltech_stimuli
    window.session.new(tmp_path / "p.alignet")
    import_images(window.session.project, "stimuli", root)
    window.session.refresh()
    return root


def test_extract_features(qtbot, window, project_with_images: Path) -> None:
    window.show_page("features")
    page = window.page("features")
    page.form.set_value("image_set", "stimuli")
    page.form.set_value("model", "efficientnet_lite0")
    page.form.set_value("image_size", 64)
    page.form.set_value("batch_size", 4)
    page.form.set_value("device", "cpu")
    config = page.config()
    assert (config.image_set, config.image_size, config.checkpoint) == ("stimuli", 64, None)

    with qtbot.waitSignal(window.session.runner.idle, timeout=LONG):
        assert page.extract()
    qtbot.waitUntil(lambda: page.table.rowCount() == 1, timeout=LONG)
    (row,) = page.stored()
    assert row["Image set"] == "stimuli" and row["Label"] == "efficientnet_lite0"
    assert row["n"] == "6" and row["dim"] == "1280"
    assert row["Layer"] == "pre_logits" and row["State"] == "current"
    assert window.session.project.run("features:stimuli:efficientnet_lite0").summary["n"] == 6
    if "layer" in page.fields:
        with qtbot.waitSignal(window.session.runner.idle, timeout=LONG):
            assert page.list_layers()
        assert page.choose_layer("conv_head")
    window.resize(1280, 800)
    qtbot.wait(100)
    save_screenshot(window, "features_page")


def test_layer_tree_and_bad_input(qtbot, window, project_with_images: Path) -> None:
    window.show_page("features")
    page = window.page("features")
    if "layer" not in page.fields:
        pytest.skip("this engine has no layer choice yet")
    page.form.set_value("image_set", "stimuli")
    page.form.set_value("model", "efficientnet_lite0")
    with qtbot.waitSignal(window.session.runner.idle, timeout=LONG):
        assert page.list_layers()
    names = page.layer_names()
    assert names[0] == "pre_logits" and "conv_head" in names
    assert page.choose_layer("conv_head")
    assert page.config().layer == "conv_head"
    assert page.layer_tree.currentIndex().isValid()

    # Bad input: an inline error, no job.
    page.form.set_value("image_set", "nope")
    assert not page.extract()
    assert "nope" in page.error.text() and page.error.isVisibleTo(page)
    page.form.set_value("image_set", "stimuli")
    page.form.set_value("batch_size", 0)  # the spin box stops at the declared ≥ 1
    assert page.form.values()["batch_size"] == 1
    page.form.set_value("batch_size", 32)
    page.form.editors["image_size"].setText("0")
    assert not page.extract()
    assert "image_size" in page.error.text()
    assert not window.session.runner.busy


def test_several_layers_in_one_pass(qtbot, window, project_with_images: Path) -> None:
    window.show_page("features")
    page = window.page("features")
    if "layer" not in page.fields:
        pytest.skip("this engine has no layer choice yet")
    for name, value in (("image_set", "stimuli"), ("model", "efficientnet_lite0")):
        page.form.set_value(name, value)
    page.form.set_value("image_size", 64)
    page.form.set_value("device", "cpu")
    with qtbot.waitSignal(window.session.runner.idle, timeout=LONG):
        assert page.list_layers()
    assert page.choose_layer("conv_stem")
    assert page.choose_layer("conv_head", add=True)  # a Ctrl-click
    assert page.selected_layers() == ["conv_stem", "conv_head"]
    with qtbot.waitSignal(window.session.runner.idle, timeout=LONG):
        assert page.extract()
    qtbot.waitUntil(lambda: page.table.rowCount() == 2, timeout=LONG)
    rows = {row["Layer"]: row for row in page.stored()}
    assert set(rows) == {"conv_stem", "conv_head"}
    assert rows["conv_stem"]["dim"] == "32" and rows["conv_head"]["dim"] == "1280"
    assert {row["State"] for row in rows.values()} == {"current"}


def test_model_picker_says_module_specs_run_code(window) -> None:
    """Issue 13 item 11: a ``module:factory`` spec imports and runs the user's Python code."""
    page = window.page("features")
    tip = page.form.editors["model"].toolTip()
    assert "module.path:factory" in tip and "runs Python code from MODULE" in tip
