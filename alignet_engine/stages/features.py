"""Stage 1 — features: a backbone's penultimate-layer features for every image of a set."""

from __future__ import annotations

import logging

import numpy as np

from alignet_engine.config import ExtractConfig, features_slot
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Message, StageDone
from alignet_engine.models import extract_features, load_backbone, pick_device
from alignet_engine.stages._tracking import tracked
from alignet_engine.store import Project

log = logging.getLogger(__name__)
STAGE = "features"


def load_student_weights(project: Project, backbone_model, checkpoint: str) -> str:
    """Load a distill run's student weights into ``backbone_model``; returns the run ref."""
    from alignet_engine.distill import load_student_state

    run = project.run(checkpoint, arrays=False)
    path = project.check_side_file(run.summary["checkpoint"], run.summary["checkpoint_sha256"])
    backbone_model.load_state_dict(load_student_state(path))
    return f"{run.stage}/{run.run_id}"


def extract(project: Project, config: ExtractConfig, control: JobControl | None = None) -> Job[str]:
    """Extract features of ``config.image_set`` and store them in slot ``features:<set>:<label>``.

    Returns the new run's id.
    """
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        images = project.imageset(config.image_set)
        if not all(images.paths):
            raise InputError(
                f"image set '{config.image_set}' has items without image files "
                "(it was created by importing features); import its images first",
                field="image_set",
            )
        device = pick_device(config.device)
        backbone = load_backbone(config.model)
        inputs: dict[str, str] = {}
        if config.checkpoint is not None:
            ref = load_student_weights(project, backbone.model, config.checkpoint)
            inputs[config.checkpoint] = ref
        yield Message(
            STAGE, f"{config.label} on {len(images)} images of '{config.image_set}' ({device})"
        )
        X = yield from extract_features(
            backbone,
            images.paths,
            batch_size=config.batch_size,
            device=device,
            image_size=config.image_size,
            control=control,
        )
        slot = features_slot(config.image_set, config.label)
        params = {
            **config.to_dict(),
            "layer": backbone.layer,
            "preprocess": backbone.preprocess.to_dict(),
            "device": str(device),
        }
        project.write_run(
            STAGE,
            run_id,
            slot=slot,
            params=params,
            arrays={"X": X},
            inputs=inputs,
            summary={"n": int(X.shape[0]), "dim": int(X.shape[1])},
        )
        yield StageDone(STAGE, run_id, {"slot": slot, "shape": list(X.shape)})
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))


def stored_features(project: Project, image_set: str, label: str) -> tuple[np.ndarray, str]:
    """(X (n, d) float32, run ref) of the current features of ``image_set`` by ``label``."""
    run = project.run(features_slot(image_set, label))
    return run.arrays["X"].astype(np.float32), f"{run.stage}/{run.run_id}"
