"""The distill stage's test project: a pool of 18 generated images, a triplet run (60 train +
12 val) labelled by a "teacher" that sees each image's mean colour, and "human" judgments.
Shared by the distill stage's tests (no test in this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.distill import load_student_state
from alignet_engine.store import Project

#: pool images, and the student's input size in px (small: each run takes a few seconds)
N_IMAGES = 18
SIZE = 32


def _make_images(folder: Path) -> list[str]:
    """Coloured blocks on noise: images whose pretrained features differ visibly."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
        colour = np.array([(i * 70) % 256, (i * 150) % 256, (i * 30) % 256], dtype=np.uint8)
        top, left = rng.integers(0, 20, 2)
        pixels[top : top + 20, left : left + 20] = colour
        path = folder / f"img{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def _odd_last(z: np.ndarray, triplets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder triplets so the most similar pair of ``z`` comes first; return them and sims."""
    t = z[triplets]
    s = np.stack(
        [(t[:, 0] * t[:, 1]).sum(-1), (t[:, 0] * t[:, 2]).sum(-1), (t[:, 1] * t[:, 2]).sum(-1)], 1
    )
    order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[s.argmax(1)]
    triplets = np.take_along_axis(triplets, order, 1)
    t = z[triplets]
    s = np.stack(
        [(t[:, 0] * t[:, 1]).sum(-1), (t[:, 0] * t[:, 2]).sum(-1), (t[:, 1] * t[:, 2]).sum(-1)], 1
    )
    return triplets.astype(np.int64), s.astype(np.float32)


def make_project(folder: Path) -> Path:
    """A project with a pool, a triplet run (60 train + 12 val) and 'human' judgments."""
    paths = _make_images(folder / "pool")
    rng = np.random.default_rng(1)
    # the "teacher": a random linear view of the mean colour of each image
    colours = np.stack([np.asarray(Image.open(p), dtype=np.float32).mean((0, 1)) for p in paths])
    z = (colours - colours.mean(0)) @ rng.standard_normal((3, 4)).astype(np.float32) / 100
    raw = np.stack([rng.choice(N_IMAGES, 3, replace=False) for _ in range(72)])
    triplets, sims = _odd_last(z, raw)
    is_val = np.zeros(72, dtype=bool)
    is_val[60:] = True
    human, _ = _odd_last(
        colours, np.stack([rng.choice(N_IMAGES, 3, replace=False) for _ in range(40)])
    )

    path = folder / "study.alignet"
    with Project.create(path) as project:
        project.write_imageset("pool", ImageSet(tuple(paths), ("",) * N_IMAGES), {})
        project.write_judgments(
            "human",
            Judgments(kind="oddone", triplets=human, participant=np.zeros(40, dtype=np.int64)),
            image_set="pool",
            params={},
        )
        run_id = project.begin_job("triplets", {})
        project.write_run(
            "triplets",
            run_id,
            slot="triplets",
            params={"strategy": "random"},
            arrays={"triplets": triplets, "sims": sims, "is_val": is_val},
            summary={"image_set": "pool"},
        )
    return path


@dataclass(frozen=True)
class Reference:
    arrays: dict[str, np.ndarray]
    summary: dict[str, object]
    weights: dict[str, torch.Tensor]


def stored(project: Project, ref: str = "distill") -> Reference:
    run = project.run(ref)
    weights = load_student_state(project.side_path(run.summary["checkpoint"]))
    return Reference(run.arrays, run.summary, weights)
