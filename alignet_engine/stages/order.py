"""The stages in pipeline order, and the order stale runs must be re-run in.

Both read only :meth:`Project.info`'s dict, so the navigator and the CLI's ``info`` can use
them without opening the project again or importing any stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The stages in pipeline order (the names runs are stored under).
PIPELINE: tuple[str, ...] = (
    "features",
    "transform",
    "clusters",
    "triplets",
    "distill",
    "evaluate",
    "export",
)


def stale_order(info: Mapping[str, Any]) -> list[str]:
    """Current stale runs in the order they must be re-run: each after the stale runs whose
    slots it reads (a run that reads a stale run is stale itself, so direct inputs suffice).
    Ties go in :data:`PIPELINE` order."""
    current = info.get("current", {})
    runs = {r["run"]: r for r in info.get("runs", [])}
    stale = [ref for ref, r in runs.items() if r["stale"] and current.get(r["slot"]) == ref]
    rank = {s: i for i, s in enumerate(PIPELINE)}
    pending = sorted(stale, key=lambda ref: (rank.get(ref.split("/", 1)[0], 99), ref))
    order: list[str] = []
    while pending:
        waiting = {runs[ref]["slot"] for ref in pending}
        ready = [
            r
            for r in pending
            if not (set(runs[r].get("inputs", {})) & (waiting - {runs[r]["slot"]}))
        ]
        nxt = (ready or pending)[0]  # a cycle cannot be stored; the fallback keeps this total
        order.append(nxt)
        pending.remove(nxt)
    return order
