"""Build the hostile corpus and run it against a checkout: the before/after table of issue 13.

Every case runs ``python -m alignet_engine.cli`` in a fresh interpreter on its own copy of
the base project; the table gives each case's verdict and a total per issue item.

Run from the repository root, pointing PYTHONPATH at the checkout to judge::

    PYTHONPATH=/work/main .venv/bin/python tests/engine/hostile/make_corpus.py
    PYTHONPATH=$PWD       .venv/bin/python tests/engine/hostile/make_corpus.py --keep DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import Case, Result, build_base, cases, digest


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # cwd: python -m puts the working folder first on sys.path, before PYTHONPATH
    return subprocess.run(
        [sys.executable, "-m", "alignet_engine.cli", *argv],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=300,
    )


def run_case(case: Case, base: Path, folder: Path) -> tuple[str | None, Result | None]:
    folder.mkdir(parents=True)
    project = folder / "case.alignet"
    shutil.copyfile(base, project)
    if case.craft is not None:
        case.craft(project)

    def fill(argv: list[str]) -> list[str]:
        return [a.replace("{project}", str(project)) for a in argv]

    for argv in case.setup:
        done = _cli(fill(argv))
        if done.returncode != 0:
            return f"setup {argv[0]} failed: {done.stderr.strip()[-160:]}", None
    before = digest(project)
    try:
        done = _cli(fill(case.argv))
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = -9, "", "timed out after 300 s"
    result = Result(rc, out, err, before, digest(project))
    try:
        return case.check(result, folder), result
    except Exception as exc:  # a check that cannot read the outcome is a failed case
        return f"check failed: {type(exc).__name__}: {exc}", result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", help="write the corpus here and keep it (default: temp)")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    base = build_base(work, lambda argv: _cli(argv).returncode)
    tried: Counter[int] = Counter()
    passed: Counter[int] = Counter()
    print(f"checkout {os.environ.get('PYTHONPATH', '(installed)')}")
    for i, case in enumerate(cases(work)):
        if args.k not in case.name:
            continue
        problem, _ = run_case(case, base, work / f"case{i:02d}")
        tried[case.item] += 1
        passed[case.item] += problem is None
        verdict = "pass" if problem is None else f"FAIL {problem}"
        print(f"[{case.item:2d}] {case.name:62s} {verdict}"[:220], flush=True)
    print("\nitem  tried  passed")
    for item in sorted(tried):
        print(f"{item:4d}  {tried[item]:5d}  {passed[item]:6d}")
    print(f" all  {sum(tried.values()):5d}  {sum(passed.values()):6d}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
