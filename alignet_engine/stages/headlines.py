"""Each stage's headline metric, and how a new run compares with the current one on it.

:mod:`alignet_engine.stages._tracking` uses the comparison to keep a worse run from replacing
the current one; the GUI's run list shows the same sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Headline:
    """The metric that says whether one run of a stage is better than another.

    ``key`` is the run summary's field, ``label`` the plain-language name shown to users.
    """

    key: str
    label: str
    higher_is_better: bool = True


#: Stages whose new runs are compared with the current run before replacing it.
HEADLINES: dict[str, Headline] = {
    "distill": Headline("val_agreement_after", "validation agreement with the teacher"),
    "transform": Headline("val_accuracy", "held-out accuracy on the human judgments"),
}


@dataclass(frozen=True)
class RunComparison:
    """A new run's headline metric against the current run's (both plain floats)."""

    stage: str
    metric: str
    label: str
    new: float
    current: float
    current_ref: str
    higher_is_better: bool = True

    @property
    def worse(self) -> bool:
        """True when the new run is strictly worse than the current one."""
        return self.new < self.current if self.higher_is_better else self.new > self.current

    def sentence(self) -> str:
        verdict = "worse than" if self.worse else "at least as good as"
        return (
            f"The new run's {self.label} ({self.new:.3f}) is {verdict} the current run's "
            f"({self.current:.3f}, {self.current_ref})."
        )


def compare_headline(
    stage: str,
    new_summary: Mapping[str, Any],
    current_summary: Mapping[str, Any] | None,
    current_ref: str = "",
) -> RunComparison | None:
    """Compare a new run of ``stage`` with the current one by the stage's :data:`HEADLINES`.

    None when the stage has no headline metric, there is no current run, or either run
    lacks the metric (old runs written before it existed): then the new run simply replaces
    the current one, as it always did.
    """
    headline = HEADLINES.get(stage)
    if headline is None or current_summary is None:
        return None
    new, old = new_summary.get(headline.key), current_summary.get(headline.key)
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return None
    return RunComparison(
        stage,
        headline.key,
        headline.label,
        float(new),
        float(old),
        current_ref,
        headline.higher_is_better,
    )
