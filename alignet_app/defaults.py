"""Starting values the pages offer, read from the project (never a name that does not exist).

Only choices, no numerics: which image set the human judgments are about, which judgment
sets are held out, which models the project's runs use as teacher and student.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any


def judged_image_set(info: Mapping[str, Any]) -> str | None:
    """The image set most judgment sets refer to (the stimuli); with no judgments yet, the
    smallest image set (stimuli people judge are few; the pool the teacher labels is large)."""
    sets = Counter(info.get("judgment_image_sets", {}).values())
    if sets:
        return sorted(sets, key=lambda s: (-sets[s], s))[0]
    sizes = info.get("imagesets", {})
    return min(sizes, key=lambda s: (sizes[s], s)) if sizes else None


def held_out_judgments(info: Mapping[str, Any], fitted: list[str]) -> list[str]:
    """Judgment sets no current transform was fitted on (what evaluation should score)."""
    return [n for n in info.get("judgments", []) if n not in set(fitted)]


def models_of_runs(info: Mapping[str, Any]) -> list[str]:
    """Feature labels of the current features runs, distilled students left out, most used
    first (the teacher is usually extracted on the most image sets)."""
    counts = Counter(
        slot.split(":", 2)[2]
        for slot in info.get("current", {})
        if slot.startswith("features:") and not slot.endswith("+distilled")
    )
    return sorted(counts, key=lambda m: (-counts[m], m))
