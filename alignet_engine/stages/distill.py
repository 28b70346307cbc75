"""Stage 5 — distill: fine-tune the student so its triplet choices match the teacher's.

The student's weights are stored as a safetensors side file next to the project and
referenced from the run with their sha256; the loss curves are stored in the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from alignet_engine.config import StageConfig
from alignet_engine.distill import DistillConfig, distill, save_student
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Message, Progress, StageDone, Throttle
from alignet_engine.models import Backbone, load_backbone, load_image, make_transform, pick_device
from alignet_engine.stages._tracking import tracked
from alignet_engine.stages.triplets import SLOT as TRIPLET_SLOT
from alignet_engine.store import Project

STAGE = "distill"
SLOT = "distill"


@dataclass(frozen=True)
class DistillStageConfig(StageConfig):
    """Which student to train on the current triplets, where, and how (``training``)."""

    student: str = "efficientnet_lite0"
    image_size: int | None = None  # None: the student's own input size
    device: str = "auto"
    training: DistillConfig = field(default_factory=DistillConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillStageConfig:
        data = dict(data)
        training = data.pop("training", {})
        base = super().from_dict.__func__(cls, data)  # type: ignore[attr-defined]
        return dataclasses.replace(base, training=DistillConfig.from_dict(training))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["training"] = self.training.to_dict()
        return out


class StudentFeatures(nn.Module):
    """The student backbone as a module mapping images (b, 3, H, W) to features (b, d)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.model = backbone.model  # registers the parameters for the optimiser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)


def decode_images(
    paths: tuple[str, ...], backbone: Backbone, image_size: int | None, control: JobControl
) -> Job[torch.Tensor]:
    """Decode and preprocess every pool image into one tensor (n, 3, H, W) float32."""
    transform = make_transform(backbone.preprocess, image_size)
    out: list[torch.Tensor] = []
    throttle = Throttle(0.2)
    for i, path in enumerate(paths):
        control.check()
        out.append(transform(load_image(path)))
        if throttle() or i + 1 == len(paths):
            yield Progress(STAGE, i + 1, len(paths), "decoding the pool")
    return torch.stack(out)


def run_distill(
    project: Project, config: DistillStageConfig, control: JobControl | None = None
) -> Job[str]:
    """Distil the current triplets' teacher into ``config.student`` (stored in slot ``distill``)."""
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        trip = project.run(TRIPLET_SLOT)
        pool_name = trip.summary["image_set"]
        pool = project.imageset(pool_name)
        triplets, sims, is_val = trip.arrays["triplets"], trip.arrays["sims"], trip.arrays["is_val"]
        if (~is_val).sum() == 0:
            raise InputError("the triplet run has no training triplets", field="n_triplets")
        device = pick_device(config.device)
        backbone = load_backbone(config.student)
        backbone.model.to(device)
        images = yield from decode_images(pool.paths, backbone, config.image_size, control)
        val = (triplets[is_val], sims[is_val]) if is_val.any() else None
        yield Message(
            STAGE,
            f"distilling into {config.student} on {device}: "
            f"{int((~is_val).sum())} triplets, {config.training.steps} steps",
        )
        result = yield from distill(
            StudentFeatures(backbone),
            images,
            triplets[~is_val],
            sims[~is_val],
            config.training,
            device=device,
            control=control,
            val=val,
        )
        checkpoint = project.side_path(f"distill-{run_id}.safetensors")
        sha = save_student(
            checkpoint,
            backbone.model.cpu(),
            {
                "architecture": config.student,
                "layer": backbone.layer,
                "preprocess": backbone.preprocess.to_dict(),
                "image_size": config.image_size,
                "distill": config.to_dict(),
                "run": f"{STAGE}/{run_id}",
            },
        )
        arrays = {f"history_{k}": np.asarray(v) for k, v in result.history.items()}
        summary: dict[str, Any] = {
            "student": config.student,
            "steps": result.steps_done,
            "seconds": round(result.seconds, 2),
            "checkpoint": checkpoint.name,
            "checkpoint_sha256": sha,
            "device": str(device),
            "final_loss": float(result.history["loss"][-1]),
        }
        if "val_agreement" in result.history:
            summary["val_agreement_before"] = float(result.history["val_agreement"][0])
            summary["val_agreement_after"] = float(result.history["val_agreement"][-1])
        project.write_run(
            STAGE,
            run_id,
            slot=SLOT,
            params=config.to_dict(),
            arrays=arrays,
            inputs={TRIPLET_SLOT: f"{trip.stage}/{trip.run_id}"},
            summary=summary,
        )
        yield StageDone(STAGE, run_id, summary)
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))
