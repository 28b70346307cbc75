"""The Export page on a copy of the quick demo: export files, listed paths, clear errors."""

from __future__ import annotations

from pathlib import Path

from tests.app.conftest import save_screenshot


def _open(window, path: Path):
    window.session.open(path)
    window.show_page("export")
    page = window.page("export")
    page.refresh()
    return page


def test_export_from_the_page(window, copy_demo: Path, tmp_path: Path, qtbot) -> None:
    page = _open(window, copy_demo)
    assert all(c.isEnabled() for f, c in page.checks.items() if f != "onnx")
    # The demo already exported once: its files are listed before this export.
    assert "weights" in page.listed_paths()
    out = tmp_path / "out"
    formats = ("student", "torchscript", "transform", "triplets", "report")
    with qtbot.waitSignal(window.session.runner.idle, timeout=300_000):
        assert page.export_to(out, formats)
    assert page.error.isHidden(), page.error.text()
    listed = page.listed_paths()
    assert listed == page.files
    for kind in ("weights", "config", "model_card", "torchscript", "transform", "report_html"):
        assert Path(listed[kind]).is_file(), kind
        assert Path(listed[kind]).parent == out
    assert {"triplets_train", "triplets_val"} <= set(listed)
    assert (out / "student.safetensors").stat().st_size > 1000
    assert any(p.name.startswith("plot_") for p in out.iterdir())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # The export run the engine recorded lists the same model / transform / triplet files.
    recorded = window.session.project.run("export", arrays=False).summary["files"]
    assert {k: v for k, v in listed.items() if k in recorded} == recorded
    window.resize(1400, 980)
    qtbot.wait(200)
    save_screenshot(window, "export_page")


def test_unwritable_folder_and_missing_prerequisites(window, copy_demo: Path) -> None:
    page = _open(window, copy_demo)
    blocker = copy_demo.parent / "a-file"
    blocker.write_text("x")
    assert not page.export_to(blocker / "sub", ("transform",))
    assert not page.error.isHidden()
    assert "cannot write to the output folder" in page.error.text()
    assert not page.session.runner.busy


def test_student_formats_disabled_without_a_distill_run(window, tmp_path: Path) -> None:
    window.session.new(tmp_path / "empty.alignet")
    window.show_page("export")
    page = window.page("export")
    page.refresh()
    for fmt in ("student", "torchscript", "onnx"):
        assert not page.checks[fmt].isEnabled()
        assert "Distill" in page.checks[fmt].toolTip()
    assert not page.export_to(tmp_path / "o", ("student",))
    assert "Distill" in page.error.text()
