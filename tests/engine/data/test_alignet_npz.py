"""The one AligNet npz reader: the public loader validates every row, mapped or read, in blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import alignet_engine
from alignet_engine.align import load_alignet_npz as align_load
from alignet_engine.align.triplet_sampling import save_alignet_npz
from alignet_engine.data import alignet_npz
from alignet_engine.data.alignet_npz import load_alignet_npz, read_alignet_npz
from alignet_engine.errors import InputError


def _archive(path: Path, m: int = 40, **change: np.ndarray) -> Path:
    """An uncompressed AligNet archive of ``m`` valid rows, with members replaced by ``change``."""
    rng = np.random.default_rng(0)
    arrays = {
        "filenames": np.array(
            [[f"img_{i}.jpg", f"img_{i + 1}.jpg", f"img_{i + 2}.jpg"] for i in range(m)]
        ),
        "similarities": -np.sort(-rng.random((m, 3)), axis=1).astype(np.float32),
        "indices": np.array([[i, i + 1, i + 2] for i in range(m)], dtype=np.int64),
    }
    arrays.update(change)
    np.savez(path, **arrays)
    return path


def _refused(path: Path, *, row: int, field: str, match: str, mmap: bool) -> InputError:
    with pytest.raises(InputError, match=match) as err:
        load_alignet_npz(path, mmap=mmap)
    assert (err.value.source, err.value.row, err.value.field) == (str(path), row, field)
    return err.value


def test_public_names_are_the_one_reader() -> None:
    assert alignet_engine.load_alignet_npz is load_alignet_npz is align_load


@pytest.mark.parametrize("mmap", [False, True])
def test_loader_refuses_corrupt_rows_it_used_to_accept(tmp_path: Path, mmap: bool) -> None:
    # Each of these files loaded without complaint before the two readers became one.
    ok = _archive(tmp_path / "ok.npz")
    sims = load_alignet_npz(ok)[1].copy()
    bad = sims.copy()
    bad[6, 1] = np.nan
    p = _archive(tmp_path / "nan.npz", similarities=bad)
    _refused(p, row=7, field="similarities", match="finite", mmap=mmap)
    bad = sims.copy()
    bad[3] = bad[3, ::-1]  # odd one first: s12 is the largest
    p = _archive(tmp_path / "order.npz", similarities=bad)
    _refused(p, row=4, field="similarities", match="s12 must be the smallest", mmap=mmap)
    idx = load_alignet_npz(ok)[2].copy()
    idx[9] = [5, 5, 6]
    p = _archive(tmp_path / "dup.npz", indices=idx)
    _refused(p, row=10, field="indices", match="twice", mmap=mmap)
    idx[9] = [-1, 5, 6]
    p = _archive(tmp_path / "neg.npz", indices=idx)
    _refused(p, row=10, field="indices", match=">= 0", mmap=mmap)
    names = load_alignet_npz(ok)[0].copy()
    names[2, 1] = ""
    p = _archive(tmp_path / "empty.npz", filenames=names)
    _refused(p, row=3, field="filenames", match="empty file name", mmap=mmap)
    big = sims.astype(np.float64)
    big[0] = [1e300, 1e299, 0.0]
    p = _archive(tmp_path / "big.npz", similarities=big)
    with pytest.raises(InputError, match="too large for float32"):
        load_alignet_npz(p, mmap=mmap)


def test_loader_keeps_ties_the_import_refuses(tmp_path: Path) -> None:
    """Our writer keeps a teacher's exact ties (s02 == s12); the public loader reads them back,
    while importing such a file as judgments keeps the published strict rule."""
    trip = np.array([[0, 1, 2], [3, 4, 5]])
    sims = np.array([[0.9, 0.5, 0.5], [0.7, 0.4, 0.1]], dtype=np.float32)
    path = tmp_path / "ties.npz"
    save_alignet_npz(path, trip, sims, [f"{i}.png" for i in range(6)])
    f, s, i = load_alignet_npz(path, mmap=True)
    assert f.tolist() == [["0.png", "1.png", "2.png"], ["3.png", "4.png", "5.png"]]
    np.testing.assert_array_equal(s, sims)
    np.testing.assert_array_equal(i, trip)
    with pytest.raises(InputError, match="s12 < s01") as err:
        read_alignet_npz(path)
    assert (err.value.row, err.value.field) == (1, "similarities")


def test_checks_run_in_blocks_and_name_rows_across_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alignet_npz, "_CHECK_BLOCK", 7)  # several blocks and a ragged end
    path = _archive(tmp_path / "ok.npz", m=40)
    full = load_alignet_npz(path)
    mapped = load_alignet_npz(path, mmap=True)
    assert all(isinstance(a, np.memmap) for a in mapped)
    for a, b in zip(full, mapped, strict=True):
        np.testing.assert_array_equal(a, b)
    sims = full[1].copy()
    bad_rows = [8, 13, 14, 20, 21, 22, 27, 28, 33, 34, 35, 39]  # 0-based, 12 rows
    sims[bad_rows, 2] = np.inf
    p = _archive(tmp_path / "inf.npz", similarities=sims)
    err = _refused(p, row=9, field="similarities", match="finite", mmap=True)
    listed = ", ".join(str(r + 1) for r in bad_rows[:10])
    assert f"Rows affected: {listed}, … (12 in all)." in str(err)


def test_mapped_member_shorter_than_its_header_is_refused(tmp_path: Path) -> None:
    path = _archive(tmp_path / "ok.npz", m=40)
    data = bytearray(path.read_bytes())
    # Declare more rows in the indices header than the member holds (same header length).
    at = data.index(b"'shape': (40, 3)", data.index(b"indices.npy"))
    data[at : at + 16] = b"'shape': (90, 3)"
    (tmp_path / "long.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="truncated") as err:
        load_alignet_npz(tmp_path / "long.npz", mmap=True)
    assert err.value.field == "indices"
