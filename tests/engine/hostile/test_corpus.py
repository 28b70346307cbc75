"""Issue 13's hostile corpus, in-process: every case must give its right answer.

The cases and their files are built by ``corpus.py`` (``make_corpus.py`` runs the same cases
in fresh interpreters against any checkout, for the before/after table). A user-caused error
must exit 2 naming the file, row or field, and leave the project file byte-for-byte unchanged.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest

from alignet_engine.cli import main

from .corpus import Case, Result, build_base, cases, digest


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:
            traceback.print_exc()
            rc = 1
    return rc, out.getvalue(), err.getvalue()


def _names() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return [f"item{c.item}: {c.name}" for c in cases(Path(tmp))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Case]]:
    work = tmp_path_factory.mktemp("hostile")
    base = build_base(work, lambda argv: _cli(argv)[0])
    return work, base, cases(work)


@pytest.mark.parametrize("index", range(len(_names())), ids=_names())
def test_hostile_case(index: int, corpus: tuple[Path, Path, list[Case]]) -> None:
    work, base, all_cases = corpus
    case = all_cases[index]
    folder = work / f"case{index:02d}"
    folder.mkdir()
    project = folder / "case.alignet"
    shutil.copyfile(base, project)
    if case.craft is not None:
        case.craft(project)

    def fill(argv: list[str]) -> list[str]:
        return [a.replace("{project}", str(project)) for a in argv]

    for argv in case.setup:
        rc, _, err = _cli(fill(argv))
        assert rc == 0, err
    before = digest(project)
    rc, out, err = _cli(fill(case.argv))
    problem = case.check(Result(rc, out, err, before, digest(project)), folder)
    assert problem is None, f"{problem}\n{err[-3000:]}"
