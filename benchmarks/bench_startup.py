"""Start-up of the command line and the GUI, as ratios against ``python -c pass``.

Issue 13 item 12: every ``alignet-cli`` command used to import torch, timm and scikit-learn
(``--version`` 6–8 s, 1.15 GB). Targets: ``--version`` and ``--help`` under 0.5 s, ``info``
under 1 s and 200 MB on a 285 MB project, the GUI's empty window under 3 s.

Each command runs ``--repeat`` times in a fresh interpreter; the table gives the median wall
time, its ratio to the median of ``python -c pass`` measured in the same run (the machine is
shared and noisy: compare ratios, not seconds), and the peak resident memory of the process.
``--pythonpath`` points at another checkout (e.g. ``/work/main``) to measure it instead.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--size-mb 285] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs argv[1:] as ``python -m MODULE ARGS`` and prints the process's peak RSS (KiB) last.
_WRAP = (
    "import resource, runpy, sys\n"
    "module, sys.argv = sys.argv[1], sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)
# The baseline: ``python -c pass`` plus the same peak-RSS line.
_PASS = "import resource, sys\n" + _WRAP.splitlines()[-1] + "\n"


def _measure(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """(median seconds, peak MiB) of ``python -m ARGS…`` (``python -c pass`` for ``[]``)."""
    times, rss = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _WRAP, *args] if args else [sys.executable, "-c", _PASS],
            env=env,
            cwd=tempfile.gettempdir(),  # not this checkout: -c puts the cwd on sys.path first
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - start)
        lines = [x for x in out.stderr.splitlines() if x.startswith("maxrss ")]
        if not lines:
            raise SystemExit(f"{args} failed:\n{out.stderr[-2000:]}")
        rss = max(rss, int(lines[-1].split()[1]) / 1024)
    return statistics.median(times), rss


def _project(path: Path, size_mb: int, env: dict[str, str]) -> None:
    """A project holding an image set and one features run of about ``size_mb`` MiB."""
    code = f"""
import numpy as np
from alignet_engine.base.types import ImageSet
from alignet_engine.store import Project
n = 20_000
d = max(1, {size_mb} * (1 << 20) // (4 * n))
rng = np.random.default_rng(0)
with Project.create({str(path)!r}, overwrite=True) as p:
    p.write_imageset("pool", ImageSet(tuple(f"/img/{{i:06d}}.jpg" for i in range(n)),
                                       ("",) * n), {{}})
    run = p.begin_job("features", {{}})
    p.write_run("features", run, slot="features:pool:m", params={{}},
                arrays={{"features": rng.standard_normal((n, d), dtype=np.float32)}})
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tempfile.gettempdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pythonpath", default=str(REPO), help="checkout to measure")
    parser.add_argument("--size-mb", type=int, default=285, help="size of the info project")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-gui", action="store_true", help="skip the GUI's empty window")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.pythonpath, "QT_QPA_PLATFORM": "offscreen"}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "big.alignet"
        _project(project, args.size_mb, env)
        # the project file and its side files (large arrays live in <project>.files/)
        side = project.with_name(project.name + ".files")
        files = [project, *(side.rglob("*") if side.is_dir() else [])]
        size = sum(f.stat().st_size for f in files if f.is_file()) / (1 << 20)
        cases = [
            ("python -c pass", []),
            ("alignet-cli --version", ["alignet_engine.cli", "--version"]),
            ("alignet-cli --help", ["alignet_engine.cli", "--help"]),
            ("alignet-cli evaluate --help", ["alignet_engine.cli", "evaluate", "--help"]),
            (f"alignet-cli info ({size:.0f} MB)", ["alignet_engine.cli", "info", str(project)]),
        ]
        if not args.no_gui:
            cases.append(("alignet (empty window)", ["alignet_app", "--quit-after", "0"]))
        print(f"checkout {args.pythonpath}; median of {args.repeat} runs each")
        print(f"{'command':34s} {'seconds':>8s} {'ratio':>7s} {'peak MiB':>9s}")
        base = None
        for name, argv in cases:
            seconds, rss = _measure(argv, env, args.repeat)
            base = base or seconds
            print(f"{name:34s} {seconds:8.2f} {seconds / base:7.1f} {rss:9.0f}")


if __name__ == "__main__":
    main()
