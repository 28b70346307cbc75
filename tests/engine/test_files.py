"""The one atomic writer (alignet_engine.files): exclusive temporaries, no links followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.files import (
    atomic_output,
    atomic_path,
    atomic_write_text,
    commit_temporary,
    temporary_sibling,
)


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "card.md")
    atomic_write_text(out / "card.md", "new")
    assert outside.read_text() == "keep"
    assert not (out / "card.md").is_symlink()
    assert (out / "card.md").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["card.md"]  # no temporary left


def test_overwrite_false_refuses_files_and_dangling_links(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("mine")
    with pytest.raises(FileExistsError):
        atomic_write_text(tmp_path / "a.json", "theirs", overwrite=False)
    os.symlink(tmp_path / "nowhere", tmp_path / "b.json")
    with pytest.raises(FileExistsError):
        atomic_write_text(tmp_path / "b.json", "theirs", overwrite=False)
    assert (tmp_path / "a.json").read_text() == "mine"
    assert not (tmp_path / "nowhere").exists()
    atomic_write_text(tmp_path / "c.json", "new", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "x.npz") as fh:
        fh.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.pt") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("check failed")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_are_fresh_and_keep_the_suffix(tmp_path: Path) -> None:
    names = set()
    for _ in range(3):
        with atomic_path(tmp_path / "t.npz") as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".npz" and tmp.stat().st_size == 0
            names.add(tmp.name)
            np.savez(tmp, a=np.arange(3))  # writes exactly there: the suffix is .npz
    assert len(names) == 3
    assert np.load(tmp_path / "t.npz")["a"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    """mkstemp makes 0600 temporaries; the published file is 0o666 less the umask (an
    export folder shared with colleagues must be readable by them, as with any tool)."""
    import stat

    previous = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "card.md", "x")
        with atomic_path(tmp_path / "model.pt2") as tmp:
            tmp.write_bytes(b"weights")
        reference = tmp_path / "plain.txt"
        reference.write_text("x")  # what a plain open() gives under this umask
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(reference.stat().st_mode) == expected
    assert stat.S_IMODE(text.stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "model.pt2").stat().st_mode) == expected


def test_keep_mode_gives_the_replaced_files_bits_and_a_new_file_the_umask_default(
    tmp_path: Path,
) -> None:
    target = tmp_path / "p.alignet"
    mask = os.umask(0o022)
    try:
        with atomic_path(target, mode="keep", label="tx") as tmp:
            assert tmp.name.startswith(".p.alignet.tx-") and tmp.name.endswith(".tmp.alignet")
            tmp.write_bytes(b"one")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # new: as open() would make it
        os.chmod(target, 0o600)
        with atomic_path(target, mode="keep") as tmp:
            tmp.write_bytes(b"two")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a private file stays private
        with atomic_path(target) as tmp:  # the default publishes, whatever was there
            tmp.write_bytes(b"three")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        with atomic_path(target, mode=0o640) as tmp:
            tmp.write_bytes(b"four")
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    finally:
        os.umask(mask)
    assert target.read_bytes() == b"four"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.alignet"]


def test_a_temporary_sibling_commits_step_by_step_or_stays_for_its_owner(tmp_path: Path) -> None:
    final = tmp_path / "tok-X-1234.h5"
    tmp = temporary_sibling(final, suffix=".part")
    assert tmp.parent == tmp_path and tmp.name.startswith(".tok-X-1234.h5.")
    assert tmp.name.endswith(".part") and tmp.stat().st_size == 0
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o600  # exclusive and private while written
    tmp.write_bytes(b"data")
    commit_temporary(tmp, final, mode=0o640)
    assert final.read_bytes() == b"data" and not tmp.exists()
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    other = temporary_sibling(final)
    with pytest.raises(FileExistsError):
        commit_temporary(other, final, overwrite=False)
    assert other.exists() and final.read_bytes() == b"data"  # the owner removes it
