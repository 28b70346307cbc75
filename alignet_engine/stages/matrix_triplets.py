"""Judgments from similarity matrices: the job behind ``alignet-cli matrix-triplets`` and the
Data page's "Triplets from a matrix" action (one code path for both)."""

from __future__ import annotations

from alignet_engine.align.matrix_triplets import MatrixTriplets
from alignet_engine.config import MatrixTripletsConfig
from alignet_engine.jobs import Job, JobControl, Message, Progress
from alignet_engine.stages.imports import derive_matrix_triplets
from alignet_engine.store import Project

STAGE = "matrix-triplets"


def derive_triplets(
    project: Project, config: MatrixTripletsConfig, control: JobControl | None = None
) -> Job[MatrixTriplets]:
    """Write odd-one-out judgments ``config.name`` derived from matrix ``config.matrix``
    (:func:`~alignet_engine.stages.imports.derive_matrix_triplets`); returns what was derived.

    Yields a Message naming the split, ``Progress(0, 1)`` / ``(1, 1)`` around the derivation
    (one vectorised step, cancellable before it starts), and a closing Message with the
    counts.
    """
    control = control or JobControl()
    yield Message(
        STAGE,
        f"{config.n_triplets} triplets from matrix '{config.matrix}' ({config.split} items, "
        f"test fraction {config.test_fraction:g}, seed {config.random_state})",
    )
    yield Progress(STAGE, 0, 1)
    control.check()
    result = derive_matrix_triplets(
        project,
        config.matrix,
        name=config.name,
        n_triplets=config.n_triplets,
        split=config.split,
        test_fraction=config.test_fraction,
        random_state=config.random_state,
    )
    yield Progress(STAGE, 1, 1)
    yield Message(
        STAGE,
        f"judgments '{config.name}': {len(result.judgments)} responses to {result.n_triplets} "
        f"triplets over {result.items.size} items ({result.n_skipped} tied or missing "
        f"answers skipped, {result.n_unanswered} triplets unanswered)",
    )
    return result
