"""The embedded demo: the whole AligNet pipeline on a generated world, as one job.

Stages, all through the project file exactly as a user would run them:

1. draw the world (fit / test stimuli and an unlabelled pool) and simulate observers;
2. import the images and the *simulated* judgments (fit and held-out test);
3. extract features: teacher EfficientNet-Lite2 and student EfficientNet-Lite0;
4. fit the soft (uncertainty-distillation) transform on the fit judgments → aligned teacher;
5. k-means on the aligned teacher's pool representation; sample cluster-boundary triplets;
6. distil the teacher's triplet choices into the student (KL + decay-to-init);
7. evaluate base / aligned teacher and base / distilled student on the held-out judgments;
8. export the student, the transform and the triplets.

Every size and setting the demo chooses is in its recipe, ``resources/demo/recipe.toml``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.config import (
    ClusterConfig,
    EvaluateConfig,
    ExtractConfig,
    SampleConfig,
    TransformConfig,
)
from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.demo.observers import TRIPLET_TYPES, classify_triplets, make_demo_judgments
from alignet_engine.demo.world import DemoWorld, generate_world_job
from alignet_engine.jobs import Job, JobControl, Message
from alignet_engine.stages.clusters import cluster
from alignet_engine.stages.distill import run_distill
from alignet_engine.stages.evaluate import evaluate
from alignet_engine.stages.export import export
from alignet_engine.stages.features import extract
from alignet_engine.stages.transform import fit_transform
from alignet_engine.stages.triplets import sample
from alignet_engine.store import Project
from alignet_resources import read_toml

STAGE = "demo"
RECIPE: dict[str, Any] = read_toml("demo/recipe.toml")
TEACHER: str = RECIPE["models"]["teacher"]
STUDENT: str = RECIPE["models"]["student"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo, from its recipe. ``quick`` shrinks everything for tests (same code
    path; the recipe's ``[quick]`` table)."""

    quick: bool = False
    seed: int = RECIPE["seed"]
    image_size: int = RECIPE["image_size"]  # pixels the models see; the world's size too

    def _size(self, table: str, key: str) -> int:
        return int(RECIPE["quick"][key] if self.quick else RECIPE[table][key])

    @property
    def n_pool(self) -> int:
        """Unjudged pool exemplars per category."""
        return self._size("world", "n_pool")

    @property
    def distill_steps(self) -> int:
        return self._size("distill", "steps")

    @property
    def n_triplets(self) -> int:
        """Teacher-labelled pool triplets sampled for distillation."""
        return self._size("sample", "n_triplets")


def _remap(j: Judgments, ids: np.ndarray, world: DemoWorld) -> Judgments:
    """Re-index judgments from world ids to positions in ``ids`` (the stimulus image set),
    labelling each row with its triplet type under the ground-truth hierarchy."""
    lookup = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    triplets = lookup[j.triplets]
    assert (triplets >= 0).all(), "judgments refer to items outside the stimulus set"
    types = np.asarray(TRIPLET_TYPES)[classify_triplets(world.family, world.category, j.triplets)]
    return dataclasses.replace(j, triplets=triplets, types=types)


def _write_data(
    project: Project, world: DemoWorld, settings: DemoSettings
) -> tuple[ImageSet, dict[str, Judgments]]:
    """Store the stimuli (fit + test items), the pool and the simulated judgments."""
    judgments = make_demo_judgments(world, random_state=settings.seed)
    stimulus_ids = np.concatenate([world.ids("fit"), world.ids("test")])
    stimuli = ImageSet(
        tuple(world.paths[i] for i in stimulus_ids),
        tuple(world.category_names[world.category[i]] for i in stimulus_ids),
    )
    source = {"source": "generated demo world", "seed": settings.seed}
    project.write_imageset("stimuli", stimuli, source)
    project.write_imageset("pool", world.image_set("pool"), source)
    for split in ("fit", "test"):
        project.write_judgments(
            f"{split} (simulated)",
            _remap(judgments[split], stimulus_ids, world),
            image_set="stimuli",
            params={"source": "simulated observers (Luce choice)"},
        )
    return stimuli, judgments


def _align_and_distill(
    project: Project, settings: DemoSettings, n_categories: int, control: JobControl
) -> Job[None]:
    """Stages 1-5: features, the soft transform, clusters, pool triplets, the student (and
    the distilled student's features of the stimuli, for the evaluation)."""
    size = settings.image_size
    for image_set, model in (("stimuli", TEACHER), ("pool", TEACHER), ("stimuli", STUDENT)):
        yield from extract(
            project, ExtractConfig(image_set=image_set, model=model, image_size=size), control
        )
    yield from fit_transform(
        project,
        TransformConfig(
            image_set="stimuli",
            judgments=("fit (simulated)",),
            model=TEACHER,
            objective=RECIPE["transform"]["objective"],
            lam=RECIPE["transform"]["lam"],  # fixed: see the recipe
            random_state=settings.seed,
        ),
        control,
    )
    yield from cluster(
        project,
        ClusterConfig(
            image_set="pool",
            model=TEACHER,
            transform="teacher",
            k=n_categories,
            random_state=settings.seed,
        ),
        control,
    )
    yield from sample(
        project,
        SampleConfig(
            n_triplets=settings.n_triplets,
            n_val=RECIPE["sample"]["n_val"],
            random_state=settings.seed,
        ),
        control,
    )
    training = DistillConfig(
        steps=settings.distill_steps,
        seed=settings.seed,
        warmup_steps=min(RECIPE["distill"]["max_warmup_steps"], settings.distill_steps // 5),
    )
    yield from run_distill(
        project,
        DistillStageConfig(student=STUDENT, image_size=size, training=training),
        control,
    )
    yield from extract(
        project,
        ExtractConfig(image_set="stimuli", model=STUDENT, image_size=size, checkpoint="distill"),
        control,
    )


def _evaluate_four(
    project: Project, settings: DemoSettings, control: JobControl
) -> Job[list[dict[str, Any]]]:
    """Stage 6: the four representations on the held-out simulated judgments (table rows)."""
    rows = []
    for label, model, transform in (
        ("base teacher (Lite2)", TEACHER, None),
        ("aligned teacher (Lite2 + transform)", TEACHER, "teacher"),
        ("base student (Lite0)", STUDENT, None),
        ("distilled student (Lite0, AligNet)", f"{STUDENT}+distilled", None),
    ):
        result = yield from evaluate(
            project,
            EvaluateConfig(
                image_set="stimuli",
                model=model,
                transform=transform,
                judgments="test (simulated)",
                random_state=settings.seed,
            ),
            control,
        )
        rows.append({"model": label, **result})
    return rows


def run_demo(
    out_dir: Path,
    settings: DemoSettings | None = None,
    *,
    overwrite: bool = False,
    control: JobControl | None = None,
) -> Job[dict[str, Any]]:
    """Run the demo into ``out_dir`` (images, ``demo.alignet``, exports); returns the table."""
    settings = settings or DemoSettings()
    control = control or JobControl()
    t0 = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    world = yield from generate_world_job(
        out_dir / "images",
        seed=settings.seed,
        n_families=RECIPE["world"]["n_families"],
        n_categories=RECIPE["world"]["n_categories"],
        n_stimuli=RECIPE["world"]["n_stimuli"],
        n_pool=settings.n_pool,
        image_size=settings.image_size,
        control=control,
    )
    project = Project.create(out_dir / "demo.alignet", overwrite=overwrite)
    try:
        stimuli, judgments = _write_data(project, world, settings)
        yield Message(
            STAGE,
            f"world: {len(stimuli)} stimuli, {len(world.ids('pool'))} pool "
            f"images; {len(judgments['fit'])} fit and "
            f"{len(judgments['test'])} test simulated responses",
        )
        yield from _align_and_distill(project, settings, len(world.category_names), control)
        rows = yield from _evaluate_four(project, settings, control)
        files = export(project, out_dir / "export", overwrite=overwrite)
        distill_summary = project.run("distill", arrays=False).summary
    finally:
        project.close()
    return {
        "project": str(project.path),
        "rows": rows,
        "noise_ceiling": rows[0]["noise_ceiling"],
        "distill": distill_summary,
        "exports": files,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "simulated": True,
    }


def format_table(result: dict[str, Any]) -> str:
    """The demo's result table as plain text."""
    ceiling = result["noise_ceiling"]
    lines = [
        "AligNet Studio demo — held-out odd-one-out accuracy against SIMULATED observers",
        f"{'representation':<40} {'accuracy':>9} {'95% CI':>17}",
    ]
    for row in result["rows"]:
        ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        lines.append(f"{row['model']:<40} {row['accuracy']:>9.3f} {ci:>17}")
    lines.append(
        f"{'noise ceiling (majority agreement)':<40} {ceiling['majority_agreement']:>9.3f}"
    )
    lines.append(f"{'chance':<40} {1 / 3:>9.3f}")
    for row in result["rows"]:
        cal = row.get("calibration")
        if cal:
            lines.append(
                f"calibration of the {row['model'].split(' (')[0]}: ECE {cal['ece']:.3f}, "
                f"entropy vs human entropy Spearman {cal['spearman']:.2f} "
                f"({cal['n_triplets']} repeated triplets)"
            )
    if all("by_type" in row for row in result["rows"]):
        lines += [
            "",
            "by triplet type (accuracy; ceiling = majority agreement)",
            f"{'type':<22}"
            + "".join(f"{r['model'].split(' (')[0]:>19}" for r in result["rows"])
            + f"{'ceiling':>9}",
        ]
        for name, first in result["rows"][0]["by_type"].items():
            accs = "".join(f"{r['by_type'][name]['accuracy']:>19.3f}" for r in result["rows"])
            lines.append(f"{name:<22}{accs}{first['noise_ceiling']['majority_agreement']:>9.3f}")
    lines.append(f"project: {result['project']}   wall time: {result['wall_seconds']} s")
    return "\n".join(lines)
