"""Stage 4 — triplets: sample pool triplets; the teacher picks the odd one out.

Strategies (``SampleConfig.strategy``): cluster_boundary (AligNet's default), within /
between clusters, random, and class_boundary / within_class / between_classes over the pool's
categories when it has them.

Stored per triplet: item ids ``(m, 3)`` ordered so the teacher's odd one is last, and the
teacher's similarities ``[s01, s02, s12]`` as *logits*: dot products of the aligned
representation times the transform's learned temperature, so ``softmax(sims)`` is the
teacher's choice distribution (as in AligNet's npz files, method.md §1.2, §3).
"""

from __future__ import annotations

import numpy as np

from alignet_engine.align.triplet_sampling import sample_triplets, teacher_odd_one_out
from alignet_engine.config import ClusterConfig, SampleConfig
from alignet_engine.jobs import Job, JobControl, Message, StageDone
from alignet_engine.stages._tracking import tracked
from alignet_engine.stages.clusters import SLOT as CLUSTER_SLOT
from alignet_engine.stages.clusters import teacher_view
from alignet_engine.stages.transform import stored_transform, transform_similarity
from alignet_engine.store import Project

STAGE = "triplets"
SLOT = "triplets"


def sample(project: Project, config: SampleConfig, control: JobControl | None = None) -> Job[str]:
    """Sample ``n_triplets + n_val`` triplets from the current clusters' pool."""
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        clusters = project.run(CLUSTER_SLOT)
        cc = ClusterConfig.from_dict(clusters.params)
        temperature = 1.0
        if cc.transform is not None:
            temperature = float(stored_transform(project, cc.transform)[0].temperature_)
        n = config.n_triplets + config.n_val
        categories = project.imageset(cc.image_set).category_array()
        raw = sample_triplets(
            config.strategy,
            n,
            labels=clusters.arrays["labels"],
            classes=categories if (categories != "").all() else None,
            n_items=len(categories),
            random_state=config.random_state,
        )
        # Raw (untransformed) teachers keep dot products, as AligNet's "untransformed" control.
        similarity = transform_similarity(project, cc.transform) if cc.transform else "dot"
        with teacher_view(
            project,
            cc.image_set,
            cc.model,
            cc.transform,
            memory_budget_mb=config.memory_budget_mb,
        ) as (Z, inputs):
            yield Message(STAGE, f"sampled {n} {config.strategy} triplets of {Z.shape[0]} items")
            control.check()
            triplets, sims = teacher_odd_one_out(Z, raw, similarity=similarity)
        del raw
        inputs[CLUSTER_SLOT] = f"{clusters.stage}/{clusters.run_id}"
        sims = (sims * (temperature / config.teacher_temperature)).astype(np.float32)
        is_val = np.zeros(n, dtype=bool)
        is_val[config.n_triplets :] = True
        summary = {
            "n_train": config.n_triplets,
            "n_val": config.n_val,
            "image_set": cc.image_set,
            "teacher": cc.model,
            "transform": cc.transform,
            "temperature": temperature,
        }
        project.write_run(
            STAGE,
            run_id,
            slot=SLOT,
            params=config.to_dict(),
            arrays={"triplets": triplets, "sims": sims, "is_val": is_val},
            inputs=inputs,
            summary=summary,
        )
        yield StageDone(STAGE, run_id, summary)
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))
