"""``alignet-cli``: every pipeline stage, headless, for scripts, clusters and CI.

Each subcommand prints a short human-readable result, or with ``--json`` exactly one JSON
object on stdout (progress goes to stderr). Errors a user can cause exit with status 2 and
a message that says what went wrong and where.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignet_engine import __version__
from alignet_engine.errors import AlignetError, InputError
from alignet_engine.jobs import Event, Job, LossBatch, Message, Progress, run_job

log = logging.getLogger("alignet_engine.cli")


class _Reporter:
    """Prints progress to stderr, at most a few times a second."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._last = 0.0

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if isinstance(event, Message):
            print(f"[{event.stage}] {event.text}", file=sys.stderr)
        elif isinstance(event, Progress) and (now - self._last > 1.0 or event.done == event.total):
            self._last = now
            total = f"/{event.total}" if event.total else ""
            print(f"[{event.stage}] {event.done}{total} {event.message}", file=sys.stderr)
        elif isinstance(event, LossBatch) and now - self._last > 1.0 and "loss" in event.values:
            self._last = now
            print(
                f"[{event.stage}] step {int(event.steps[-1])} loss "
                f"{float(event.values['loss'][-1]):.4f}",
                file=sys.stderr,
            )


def _run(job: Job[Any], args: argparse.Namespace) -> Any:
    return run_job(job, _Reporter(quiet=args.quiet))


def _run_stage(
    args: argparse.Namespace, stage: str, start: Callable[[Any], Job[str]]
) -> dict[str, Any]:
    """Run the stage job ``start(project)`` and return its new run's ref and summary."""
    with _project(args) as p:
        run_id = _run(start(p), args)
        return {"run": f"{stage}/{run_id}", **p.run(f"{stage}/{run_id}", arrays=False).summary}


def _project(args: argparse.Namespace, readonly: bool = False):
    from alignet_engine.store import Project

    return Project.open(args.project, readonly=readonly)


# ------------------------------------------------------------------------------ commands
def cmd_new(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.store import Project

    with Project.create(args.project, overwrite=args.overwrite) as p:
        return {"project": str(p.path)}


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    with _project(args, readonly=True) as p:
        return p.info()


def cmd_import_images(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_images

    with _project(args) as p:
        images = import_images(p, args.name, args.source)
    cats = sorted(set(images.categories) - {""})
    return {"set": args.name, "n_images": len(images), "categories": cats}


def cmd_import_judgments(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_judgments

    with _project(args) as p:
        j = import_judgments(p, args.name, args.file, args.format, image_set=args.set)
    return {
        "name": args.name,
        "set": args.set,
        "kind": j.kind,
        "n_triplets": len(j),
        "n_responses": j.n_responses,
    }


def cmd_import_matrix(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_matrix

    with _project(args) as p:
        m = import_matrix(p, args.name, args.file, image_set=args.set, kind=args.kind)
    return {"name": args.name, "set": args.set, "shape": list(m.shape), "kind": args.kind}


def cmd_import_features(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_features

    with _project(args) as p:
        run_id = import_features(p, args.file, image_set=args.set, label=args.name, key=args.key)
    return {"run": f"features/{run_id}", "set": args.set, "label": args.name}


def cmd_import_transform(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_transform

    with _project(args) as p:
        run_id = import_transform(
            p, args.file, image_set=args.set, model=args.model, name=args.name
        )
    return {"run": f"transform/{run_id}", "name": args.name}


def cmd_extract(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.config import ExtractConfig
    from alignet_engine.stages.features import extract

    cfg = ExtractConfig(
        image_set=args.set,
        model=args.model,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        checkpoint=args.checkpoint,
    )
    return _run_stage(args, "features", lambda p: extract(p, cfg))


def cmd_fit_transform(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.config import TransformConfig
    from alignet_engine.stages.transform import fit_transform

    cfg = TransformConfig(
        image_set=args.set,
        judgments=tuple(args.judgments),
        model=args.model,
        objective=args.objective,
        lam=args.lam,
        alpha=args.alpha,
        lr=args.lr,
        max_epochs=args.max_epochs,
        standardize=args.standardize,
        similarity=args.similarity,
        targets=args.targets,
        n_model_triplets=args.n_model_triplets,
        vice_max_epochs=args.vice_max_epochs,
        search=_parse_grid(args.search) if args.search else None,
        n_splits=args.folds,
        pool=args.pool,
        random_state=args.seed,
        name=args.name,
    )
    return _run_stage(args, "transform", lambda p: fit_transform(p, cfg))


def _parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["lam=0.01,0.1", "lr=1e-3"]`` → ``{"lam": [0.01, 0.1], "lr": [0.001]}``."""

    def value(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    grid: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if not name.strip() or not values.strip():
            raise InputError(f"--search {item!r}: write NAME=V1,V2,…", field="search")
        grid[name.strip()] = [value(v.strip()) for v in values.split(",")]
    return grid


def cmd_cluster(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.config import ClusterConfig
    from alignet_engine.stages.clusters import cluster

    transform = None if args.transform in ("none", "") else args.transform
    cfg = ClusterConfig(
        image_set=args.set,
        model=args.model,
        transform=transform,
        k=args.k,
        diagnose_ks=tuple(args.diagnose),
        n_nearest=args.n_nearest,
        device=args.device,
        random_state=args.seed,
    )
    return _run_stage(args, "clusters", lambda p: cluster(p, cfg))


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.config import SampleConfig
    from alignet_engine.stages.triplets import sample

    cfg = SampleConfig(
        n_triplets=args.n,
        n_val=args.n_val,
        strategy=args.strategy,
        teacher_temperature=args.teacher_temperature,
        random_state=args.seed,
    )
    return _run_stage(args, "triplets", lambda p: sample(p, cfg))


def cmd_distill(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.distill import DistillConfig
    from alignet_engine.stages.distill import DistillStageConfig, run_distill

    training = DistillConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay_to_init=args.decay_to_init,
        loss=args.loss,
        seed=args.seed,
    )
    cfg = DistillStageConfig(
        student=args.student, image_size=args.image_size, device=args.device, training=training
    )
    return _run_stage(args, "distill", lambda p: run_distill(p, cfg))


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.config import EvaluateConfig
    from alignet_engine.stages.evaluate import evaluate

    cfg = EvaluateConfig(
        image_set=args.set,
        model=args.model,
        judgments=args.judgments,
        matrix=args.matrix,
        transform=args.transform,
        metric=args.metric,
        n_boot=args.n_boot,
        random_state=args.seed,
    )
    with _project(args) as p:
        return dict(_run(evaluate(p, cfg), args))


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.export import export

    with _project(args) as p:
        return {"files": export(p, args.out, tuple(args.what))}


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.demo.pipeline import DemoSettings, format_table, run_demo

    settings = DemoSettings(quick=args.quick)
    result = _run(run_demo(Path(args.out), settings, overwrite=True), args)
    if not args.json:
        print(format_table(result))
    return result


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from alignet_engine.align.triplet_sampling import STRATEGIES
    from alignet_engine.stages.export import EXPORTABLE
    from alignet_engine.stages.imports import JUDGMENT_FORMATS

    parser = argparse.ArgumentParser(
        prog="alignet-cli", description="AligNet Studio, headless: every stage of the pipeline."
    )
    parser.add_argument("--version", action="version", version=f"alignet-cli {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        func: Callable[[argparse.Namespace], dict[str, Any]],
        help_: str,
        project: bool = True,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if project:
            p.add_argument("project", help="the .alignet project file")
        p.add_argument("--json", action="store_true", help="print one JSON object with the results")
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
        p.set_defaults(func=func)
        return p

    p = command("new", cmd_new, "create an empty project")
    p.add_argument("--overwrite", action="store_true")
    command("info", cmd_info, "show a project's data, runs, staleness and interrupted jobs")

    p = command(
        "import-images",
        cmd_import_images,
        "import a folder (sub-folders = categories) or a manifest CSV (path[,category])",
    )
    p.add_argument("source")
    p.add_argument("--name", "--set", dest="name", required=True, help="name of the image set")

    p = command("import-judgments", cmd_import_judgments, "import human triplet judgments")
    p.add_argument("file")
    p.add_argument("--format", required=True, choices=JUDGMENT_FORMATS)
    p.add_argument("--set", required=True, help="image set the item ids refer to")
    p.add_argument("--name", required=True)

    p = command(
        "import-matrix",
        cmd_import_matrix,
        "import a (n,n) or (subjects,n,n) similarity / dissimilarity matrix (npy, csv)",
    )
    p.add_argument("file")
    p.add_argument("--set", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--kind", choices=("similarity", "dissimilarity"), default="similarity")

    p = command(
        "import-features",
        cmd_import_features,
        "import precomputed (n,d) features in stimulus order (npy, npz, h5, pt)",
    )
    p.add_argument("file")
    p.add_argument("--set", required=True)
    p.add_argument("--name", required=True, help="label of the representation, e.g. clip-vit-b")
    p.add_argument("--key", help="array / dataset name inside npz, h5 or pt files")

    p = command(
        "import-transform",
        cmd_import_transform,
        "import a gLocal / thingsvision transform.npz (weights, bias, mean, std)",
    )
    p.add_argument("file")
    p.add_argument("--set", required=True, help="image set whose features it applies to")
    p.add_argument("--model", required=True, help="features label it applies to")
    p.add_argument("--name", default="teacher")

    p = command("extract", cmd_extract, "extract penultimate-layer features of an image set")
    p.add_argument("--set", required=True)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint", help="use the student of this distill run (e.g. 'distill')")

    p = command(
        "fit-transform",
        cmd_fit_transform,
        "fit the affine alignment transform (the surrogate teacher)",
    )
    p.add_argument("--set", required=True)
    p.add_argument(
        "--judgments",
        nargs="+",
        default=[],
        help="judgments to fit on (not needed with --targets embedding:LABEL)",
    )
    p.add_argument("--model", default="efficientnet_lite2")
    p.add_argument("--objective", choices=("hard", "soft"), default="soft")
    p.add_argument("--lam", type=float, default=1e-2, help="pull of W toward a scaled identity")
    p.add_argument("--alpha", type=float, default=0.0, help="weight of gLocal's local term")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument(
        "--standardize",
        choices=("scalar", "perdim", "none"),
        default="scalar",
        help="scalar mean/std over the whole matrix (gLocal) or per dimension",
    )
    p.add_argument("--similarity", choices=("dot", "cosine"), default="dot")
    p.add_argument(
        "--targets",
        default="judgments",
        help="judgments | vice (fit VICE on the judgments) | embedding:LABEL "
        "(imported human embedding stored as features of the same set)",
    )
    p.add_argument(
        "--n-model-triplets",
        type=int,
        default=50_000,
        help="random triplets labelled by the human model (vice / embedding)",
    )
    p.add_argument("--vice-max-epochs", type=int, default=1000)
    p.add_argument(
        "--search",
        nargs="+",
        metavar="NAME=V1,V2",
        help="grid search by object-disjoint CV, e.g. --search lam=0.01,0.1 lr=1e-3",
    )
    p.add_argument("--folds", type=int, default=3, help="folds of the grid search")
    p.add_argument("--pool", help="image set for gLocal's local term (needs --alpha > 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="teacher")

    p = command("cluster", cmd_cluster, "k-means on the teacher's representation of the pool")
    p.add_argument("--set", required=True, help="the pool image set")
    p.add_argument("--model", default="efficientnet_lite2")
    p.add_argument("--transform", default="teacher", help="transform name, or 'none'")
    p.add_argument("--k", type=int, default=12)
    p.add_argument(
        "--diagnose",
        type=int,
        nargs="+",
        default=[],
        metavar="K",
        help="also record inertia and silhouette for these k (to choose k)",
    )
    p.add_argument(
        "--n-nearest",
        type=int,
        default=8,
        help="items nearest each centroid kept as the cluster's summary",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)

    p = command("sample", cmd_sample, "sample pool triplets; the teacher picks the odd one out")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument(
        "--strategy",
        default="cluster_boundary",
        choices=STRATEGIES,
        help="cluster_boundary (AligNet's default): 2 from one cluster + 1 from "
        "another; class_* strategies use the pool's categories",
    )
    p.add_argument(
        "--teacher-temperature",
        type=float,
        default=1.0,
        help="divides the teacher's logits (> 1: softer choice distributions)",
    )
    p.add_argument("--seed", type=int, default=0)

    p = command("distill", cmd_distill, "distil the teacher's triplets into the student")
    p.add_argument("--student", default="efficientnet_lite0")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--decay-to-init", type=float, default=1.0)
    p.add_argument("--loss", choices=("kl", "jsd", "contrastive"), default="kl")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)

    p = command(
        "evaluate",
        cmd_evaluate,
        "accuracy (odd-one-out / two-alternative) with 95%% CI and noise ceiling, or RSA",
    )
    p.add_argument("--set", required=True)
    p.add_argument("--model", required=True, help="features label, e.g. efficientnet_lite0")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--judgments")
    target.add_argument("--matrix")
    p.add_argument("--transform", help="score through this fitted transform (e.g. teacher)")
    p.add_argument(
        "--metric",
        choices=("cosine", "dot", "euclidean", "pearson"),
        help="default: dot through a transform, cosine otherwise; pearson: RSA only",
    )
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)

    p = command("export", cmd_export, "export the student, transform and triplets")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--what",
        nargs="+",
        default=["student", "transform", "triplets"],
        choices=EXPORTABLE,
        help="student: safetensors + JSON + model card; torchscript, onnx: also those "
        "(checked against torch); transform: transform.npz; triplets: AligNet npz",
    )

    p = command(
        "demo", cmd_demo, "run the whole pipeline on the embedded, generated demo", project=False
    )
    p.add_argument("--out", default="demo-output", help="folder for the demo project and images")
    p.add_argument("--quick", action="store_true", help="a smaller, faster demo (tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except AlignetError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    elif args.command != "demo":
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
