"""``alignet-cli``: every pipeline stage, headless, for scripts, clusters and CI.

Each subcommand prints a short human-readable result, or with ``--json`` exactly one JSON
object on stdout (progress goes to stderr). Errors a user can cause exit with status 2 and
a message that says what went wrong and where.

Start-up is kept light: this module and the parser import only the standard library and
``alignet_engine.config`` / ``errors`` (no numpy, torch, timm or scikit-learn), so
``--version``, ``--help`` and a typo answer at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alignet_engine import __version__
from alignet_engine.config import (
    EXPORTABLE,
    JUDGMENT_FORMATS,
    ClusterConfig,
    EvaluateConfig,
    ExtractConfig,
    MatrixTripletsConfig,
    SampleConfig,
    TransformConfig,
    parse_search_grid,
)
from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.errors import AlignetError, InputError, ProjectError
from alignet_engine.params import field_default, type_hints, unwrap_optional

if TYPE_CHECKING:
    from alignet_engine.jobs import Job
    from alignet_engine.store import Project

log = logging.getLogger("alignet_engine.cli")


def _run(job: Job[Any], args: argparse.Namespace) -> Any:
    from alignet_engine.console import ConsoleProgress
    from alignet_engine.jobs import run_job

    with ConsoleProgress(verbosity=_verbosity(args)) as progress:
        return run_job(job, progress)


def _verbosity(args: argparse.Namespace) -> int:
    """0 with ``--quiet``, else 1 + the number of ``-v`` (see :mod:`alignet_engine.console`)."""
    return 0 if args.quiet else 1 + args.verbose


def _run_stage(
    args: argparse.Namespace, stage: str, start: Callable[[Any], Job[str]]
) -> dict[str, Any]:
    """Run the stage job ``start(project)`` and return its new run's ref and summary."""
    with _project(args) as p:
        run_id = _run(start(p), args)
        return {"run": f"{stage}/{run_id}", **p.run(f"{stage}/{run_id}", arrays=False).summary}


def _project(args: argparse.Namespace, readonly: bool = False) -> Project:
    from alignet_engine.store import Project

    return Project.open(args.project, readonly=readonly)


def _import(
    args: argparse.Namespace, importer: Callable[..., Any], *positional: Any, **options: Any
) -> Any:
    """``importer(project, *positional, image_set=args.set, **options)`` on the project opened
    for writing: the import-* commands of data that belongs to image set ``--set``."""
    with _project(args) as p:
        return importer(p, *positional, image_set=args.set, **options)


# ------------------------------------------------------------------------------ commands
def cmd_new(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.store import Project

    with Project.create(args.project, overwrite=args.overwrite) as p:
        return {"project": str(p.path)}


def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    from alignet_engine.views.status import next_steps, pipeline_status

    with _project(args, readonly=True) as p:
        info = p.info()
    # the same stage states and advice as the app's navigator and dashboard
    info["pipeline"] = {k: asdict(v) for k, v in pipeline_status(info).items()}
    info["next_steps"] = [asdict(s) for s in next_steps(info)]
    return info


def cmd_runs(args: argparse.Namespace) -> dict[str, Any]:
    with _project(args, readonly=True) as p:
        info = p.info()
    current = set(info["current"].values())
    runs = [
        {**r, "current": r["run"] in current}
        for r in info["runs"]
        if args.stage is None or r["run"].split("/", 1)[0] == args.stage
    ]
    if not args.json:
        for r in runs:
            mark = "*" if r["current"] else " "
            stale = " (stale)" if r["stale"] else ""
            print(f"{mark} {r['run']:<40} {r['slot']}{stale}")
    return {"runs": runs}


def cmd_use(args: argparse.Namespace) -> dict[str, Any]:
    with _project(args) as p:
        slot = p.run(args.run, arrays=False).slot
        before = p.set_current(slot, args.run)
    return {"slot": slot, "current": args.run, "previous": before}


def cmd_delete_run(args: argparse.Namespace) -> dict[str, Any]:
    with _project(args) as p:
        p.delete_run(args.run, replace_with=args.replace_with, clear_slot=args.clear_slot)
    return {"deleted": args.run}


def cmd_rerun_stale(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.rerun import rerun_stale

    with _project(args) as p:
        return {"rerun": _run(rerun_stale(p), args)}


def cmd_gc(args: argparse.Namespace) -> dict[str, Any]:
    """List (default) or delete (``--delete``) side files nothing refers to."""
    with _project(args, readonly=not args.delete) as p:
        report = p.collect_garbage(dry_run=not args.delete, verify=args.verify)
    out = report.as_dict()
    if not args.json:
        verb = "would free" if report.dry_run else "freed"
        for path in report.unreferenced:
            print(("unreferenced " if report.dry_run else "deleted ") + path)
        for path in report.in_use:
            print(f"kept (a running job may still use it) {path}")
        for line in report.missing + report.damaged:
            print(f"PROBLEM {line}")
        hint = (
            " (run with --delete to delete them)" if report.dry_run and report.unreferenced else ""
        )
        print(f"{len(report.unreferenced)} file(s), {verb} {report.freed_bytes / 1e6:.1f} MB{hint}")
    if report.missing or report.damaged:
        raise ProjectError(
            f"{len(report.missing)} side file(s) missing, {len(report.damaged)} damaged: "
            + "; ".join(report.missing + report.damaged)
        )
    return out


def cmd_pack(args: argparse.Namespace) -> dict[str, Any]:
    """Write a self-contained single-file copy of the project (side arrays inlined)."""
    with _project(args, readonly=True) as p:
        out = p.pack(args.out, overwrite=args.overwrite)
    return {"packed": str(out), "bytes": out.stat().st_size}


def cmd_import_images(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_images

    with _project(args) as p:
        images = import_images(p, args.name, args.source, replace=args.replace)
    cats = sorted(set(images.category_names) - {""})
    return {"set": args.name, "n_images": len(images), "categories": cats}


def cmd_import_judgments(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_judgments

    j = _import(
        args,
        import_judgments,
        args.name,
        args.file,
        args.format,
        min_catch_accuracy=args.min_catch_accuracy,
        max_nonresponses=args.max_nonresponses,
        id_base=args.id_base,
    )
    out = {
        "name": args.name,
        "set": args.set,
        "kind": j.kind,
        "n_triplets": len(j),
        "n_responses": j.n_responses,
    }
    if "import_report" in j.meta:  # Levels: participants filtered, catch trials, missing images
        out["import_report"] = json.loads(j.meta["import_report"])
    return out


def cmd_import_matrix(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_matrix

    m = _import(args, import_matrix, args.name, args.file, kind=args.kind)
    return {"name": args.name, "set": args.set, "shape": list(m.shape), "kind": args.kind}


def cmd_matrix_triplets(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.matrix_triplets import derive_triplets

    cfg = MatrixTripletsConfig(**_given(args, MatrixTripletsConfig))
    with _project(args) as p:
        r = _run(derive_triplets(p, cfg), args)
    return {
        "name": cfg.name,
        "matrix": cfg.matrix,
        "split": cfg.split,
        "n_items": int(r.items.size),
        "n_triplets": r.n_triplets,
        "n_responses": len(r.judgments),
        "n_skipped": r.n_skipped,
        "n_unanswered": r.n_unanswered,
    }


def cmd_import_features(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_features

    run_id = _import(
        args, import_features, args.file, label=args.name, key=args.key, similarity=args.similarity
    )
    out = {"run": f"features/{run_id}", "set": args.set, "label": args.name}
    if args.similarity:
        out["similarity"] = args.similarity
    return out


def cmd_import_alignet_pool(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_alignet_representations

    r = _import(
        args,
        import_alignet_representations,
        args.file,
        label=args.name,
        filenames=args.filenames,
        features_key=args.key,
        labels_key=args.labels_key,
    )
    return {
        "features": f"features/{r.features_run}",
        "clusters": f"clusters/{r.clusters_run}",
        "set": args.set,
        "label": args.name,
        "items": r.n_items,
        "dim": r.dim,
        "k": r.k,
        "file_rows": r.n_file_rows,
    }


def cmd_import_transform(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.imports import import_transform

    run_id = _import(args, import_transform, args.file, model=args.model, name=args.name)
    return {"run": f"transform/{run_id}", "name": args.name}


def cmd_extract(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.models.extract import default_workers
    from alignet_engine.stages.features import extract

    given = _given(args, ExtractConfig)
    given.setdefault("num_workers", default_workers())
    cfg = ExtractConfig(**given)
    if not args.layers:
        return _run_stage(args, "features", lambda p: extract(p, cfg))
    from alignet_engine.stages.features import extract_layers

    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    with _project(args) as p:
        run_ids = _run(extract_layers(p, cfg, layers), args)
        runs = [p.run(f"features/{r}", arrays=False) for r in run_ids]
    return {"runs": [{"run": f"features/{r.run_id}", "slot": r.slot, **r.summary} for r in runs]}


def cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.models.catalog import describe_models, format_models

    info = describe_models()
    if not args.json:
        print(format_models(info))
    return info


def cmd_layers(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.models.catalog import describe_layers, format_layers

    info = describe_layers(args.spec, weights=args.weights)
    if not args.json:
        print(format_layers(info))
    return info


def cmd_fit_transform(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.transform import fit_transform

    search = parse_search_grid("; ".join(args.search)) if args.search else None
    cfg = TransformConfig(**_given(args, TransformConfig), search=search)
    return _run_stage(args, "transform", lambda p: fit_transform(p, cfg))


def cmd_cluster(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.clusters import cluster

    given = _given(args, ClusterConfig)
    if given.get("transform") in ("none", ""):
        given["transform"] = None
    cfg = ClusterConfig(**given)
    return _run_stage(args, "clusters", lambda p: cluster(p, cfg))


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.triplets import sample

    cfg = SampleConfig(**_given(args, SampleConfig))
    return _run_stage(args, "triplets", lambda p: sample(p, cfg))


def cmd_distill(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.distill import resume_distill, run_distill

    given = _given(args, DistillConfig)
    stage = _given(args, DistillStageConfig)
    # where and with how many decoders are not settings of the run: --resume may change them
    device, workers = stage.pop("device", None), stage.pop("num_workers", None)
    if args.resume is not None:
        if given or stage:
            flags = sorted("--" + name.replace("_", "-") for name in (*given, *stage))
            raise InputError(
                f"--resume continues with the interrupted job's settings; drop {', '.join(flags)} "
                "(only --device may be given)",
                field="resume",
            )
        run = None if args.resume is True else args.resume

        def start(p: Any) -> Job[str]:
            return resume_distill(p, run, device=device, num_workers=workers)

    else:
        from alignet_engine.models.extract import default_workers

        cfg = DistillStageConfig(
            **stage,
            device=device or "auto",
            num_workers=default_workers() if workers is None else workers,
            training=DistillConfig(**given),
        )

        def start(p: Any) -> Job[str]:
            return run_distill(p, cfg)

    from alignet_engine.distill.distributed import LaunchEnv

    launch = LaunchEnv.from_environ()
    if launch is None:
        return _run_stage(args, "distill", start)
    return _distill_distributed(args, launch, start)


def _distill_distributed(
    args: argparse.Namespace, launch: Any, start: Callable[[Any], Job[str]]
) -> dict[str, Any]:
    """``distill`` as one of several processes started by ``torchrun``.

    Every process trains its share of each batch (DistributedDataParallel: gloo on the CPU,
    NCCL with one GPU per process, ``cuda:LOCAL_RANK``). Rank 0 opens the project for writing
    and is its only writer (journal, checkpoints, student file, run); the others open it
    read-only, print nothing but their errors, and return no result. A SIGTERM from the
    launcher (which stops the others when one process fails) becomes an error, so rank 0
    records the job as failed — resumable from its last checkpoint — instead of dying silently.
    """
    import signal

    from alignet_engine.distill.distributed import (
        Agreement,
        LauncherStoppedError,
        process_group,
        rank_device,
    )
    from alignet_engine.store import Project

    follower = launch.rank != 0
    if follower:
        args.quiet = True
        args.follower = True
    device = rank_device(args.device or "auto", launch)  # args.device: DistillStageConfig's

    def stopped(signum: int, frame: Any) -> None:
        raise LauncherStoppedError(
            f"process {launch.rank} was stopped by the launcher (SIGTERM): another process "
            "failed or the job was stopped"
        )

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        with process_group(launch, device, args.dist_timeout):
            project = None
            try:
                with Agreement("opening the project"):
                    # the other ranks only read: no write lock, no second writer
                    project = Project.open(args.project, readonly=follower)
            except BaseException:
                if project is not None:
                    project.close()
                raise
            with project as p:
                run_id = _run(start(p), args)
                if follower:
                    return {}
                run = p.run(f"distill/{run_id}", arrays=False)
                return {"run": f"distill/{run_id}", **run.summary}
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.evaluate import evaluate

    cfg = EvaluateConfig(**_given(args, EvaluateConfig))
    with _project(args) as p:
        result = dict(_run(evaluate(p, cfg), args))
    if not args.json:
        from alignet_engine.views.evaluation import evaluation_text

        print(evaluation_text(result))
    return result


def cmd_evaluate_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every representation of the pipeline on each held-out judgment set / matrix (the
    Evaluation page's "Evaluate all"), then the table."""
    from alignet_engine.stages.evaluate_all import evaluate_all
    from alignet_engine.views.evaluation import evaluation_table, evaluation_table_text

    with _project(args) as p:
        job = evaluate_all(
            p, args.judgments, args.matrices, n_boot=args.n_boot, random_state=args.random_state
        )
        result = _run(job, args)
        table = evaluation_table(p)
    if not args.json:
        print(evaluation_table_text(table))
    return {**result, "table": table.to_dict()}


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """report.json + report.html (with SVG charts) of the current evaluations."""
    from alignet_engine.views.report import write_report_job

    with _project(args, readonly=True) as p:
        if not any(slot.startswith("evaluate:") for slot in p.slots()):
            raise InputError(
                "the project has no evaluations to report; run evaluate or evaluate-all first",
                source=args.project,
            )
        return {"files": _run(write_report_job(p, args.out), args)}


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.stages.export import export

    with _project(args) as p:
        return {"files": export(p, args.out, tuple(args.what), overwrite=args.overwrite)}


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from alignet_engine.demo.pipeline import DemoSettings, format_table, run_demo

    settings = DemoSettings(quick=args.quick)
    result = _run(run_demo(Path(args.out), settings, overwrite=True), args)
    if not args.json:
        print(format_table(result))
    return result


# ------------------------------------------------------------------------------ parser
def _unset(default: Any) -> bool:
    return default is None or default is False or default is argparse.SUPPRESS or default == []


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the unset ones (None, False, empty) and counters
    (``-v``'s start of 0 is not a setting)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if _unset(action.default) or isinstance(action, argparse._CountAction):
            return action.help
        return super()._get_help_string(action)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _config_flags(
    p: argparse.ArgumentParser,
    cls: type,
    *,
    defaults: dict[str, Any] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """One flag per field of stage configuration ``cls``, all from its declaration.

    ``--field-name`` (and the field's older spellings, ``aliases``), the type, the
    ``Literal`` choices, ``nargs="+"`` for tuples, ``--x/--no-x`` for booleans, and the help
    of the field's metadata — the text the GUI shows as the field's tooltip — followed by the
    dataclass default. Unset flags stay ``None`` (see :func:`_given`), so the dataclass
    default applies and a command can tell which flags were given. Values are checked by
    the dataclass (its ``bounds``) when the command builds it: exit status 2 and the field.

    ``defaults``: the CLI's own default for a field (shown as given); ``notes``: text
    replacing the shown default (e.g. a default the command computes).
    """
    hints = type_hints(cls)
    defaults, notes = defaults or {}, notes or {}
    for f in dataclasses.fields(cls):
        tp, _ = unwrap_optional(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": defaults.get(f.name)}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is Literal:
            kw["choices"] = typing.get_args(tp)
        elif typing.get_origin(tp) is tuple:
            kw["nargs"] = "+"
            kw["type"] = typing.get_args(tp)[0]
            kw["metavar"] = f.name.removesuffix("s").upper()
        elif tp in (int, float, str):
            kw["type"] = tp
        else:
            continue  # no flag for nested or structured settings (written by hand)
        default = field_default(f)
        if default is dataclasses.MISSING and f.name not in defaults:
            kw["required"] = True
        text = f.metadata.get("help", "")
        if f.name in notes:
            text += f" (default: {notes[f.name]})"
        elif f.name not in defaults and default not in (None, (), dataclasses.MISSING):
            text += f" (default: {_shown(default)})"
        kw["help"] = text.replace("%", "%%")  # argparse %-formats help
        p.add_argument("--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ()), **kw)


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given (see :func:`_config_flags`)."""
    return {
        f.name: tuple(v) if isinstance(v, list) else v
        for f in dataclasses.fields(cls)
        if (v := getattr(args, f.name, None)) is not None
    }


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports nothing heavy (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="alignet-cli", description="AligNet Studio, headless: every stage of the pipeline."
    )
    parser.add_argument("--version", action="version", version=f"alignet-cli {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the order of these calls is the order `alignet-cli --help` lists the commands in
    _add_project_commands(sub)
    _add_import_commands(sub)
    _add_stage_commands(sub)
    _add_result_commands(sub)
    _add_projectless_commands(sub)
    for subparser in sub.choices.values():
        for action in subparser._actions:
            if action.help is None and not _unset(action.default):
                action.help = "default: %(default)s"  # argparse shows help-less options bare
    return parser


_RUN_HELP = "the run, as <stage>/<run id> (see `runs`)"
# the default of --num-workers that extract and distill compute (models.extract.default_workers)
_WORKERS_NOTE = "CPU cores - 1, at most 8"


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], dict[str, Any]],
    help_: str,
    project: bool = True,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` running ``func``, with the options every command has."""
    # help= is %-formatted by argparse, description= is printed as written
    p = sub.add_parser(
        name,
        help=help_,
        description=help_.replace("%%", "%"),
        formatter_class=_HelpFormatter,
    )
    if project:
        p.add_argument("project", help="the .alignet project file")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail on stderr: -v also INFO log records, -vv DEBUG",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="which log records reach stderr (overrides -v) [WARNING]",
    )
    p.set_defaults(func=func)
    return p


def _add_project_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """new, info, runs, use, delete-run, rerun-stale, gc, pack: the project and its runs."""
    p = _command(sub, "new", cmd_new, "create an empty project")
    p.add_argument("--overwrite", action="store_true")
    _command(sub, "info", cmd_info, "show a project's data, runs, staleness and interrupted jobs")
    p = _command(sub, "runs", cmd_runs, "list the runs (* = current), oldest first")
    p.add_argument("--stage", help="only this stage's runs (features, transform, distill, ...)")
    p = _command(sub, "use", cmd_use, "make a run the current run of its slot")
    p.add_argument("run", help=_RUN_HELP)
    p = _command(sub, "delete-run", cmd_delete_run, "delete a run (a current one needs a choice)")
    p.add_argument("run", help=_RUN_HELP)
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--replace-with", help="make this run of the same slot current instead")
    choice.add_argument("--clear-slot", action="store_true", help="leave the slot without a run")
    _command(sub, "rerun-stale", cmd_rerun_stale, "re-run every stale run with its own parameters")
    p = _command(
        sub,
        "gc",
        cmd_gc,
        "list side files (<project>.files/arrays) that nothing refers to; --delete sweeps them",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only list them (the default)")
    mode.add_argument("--delete", action="store_true", help="delete them and compact the index")
    p.add_argument("--verify", action="store_true", help="also check every side file's sha256")
    p = _command(
        sub,
        "pack",
        cmd_pack,
        "write a self-contained single-file copy of the project (side arrays inlined)",
    )
    p.add_argument("out", help="the packed .alignet file to write")
    p.add_argument("--overwrite", action="store_true")


def _add_import_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """import-images, -judgments, -matrix, matrix-triplets, import-features, -alignet-pool,
    -transform: data into the project."""
    p = _command(
        sub,
        "import-images",
        cmd_import_images,
        "import a folder (sub-folders = categories) or a manifest CSV (path[,category])",
    )
    p.add_argument("source")
    p.add_argument("--name", "--set", dest="name", required=True, help="name of the image set")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace an existing set of that name even if judgments, matrices or runs use "
        "it (they become unusable until redone)",
    )

    p = _command(sub, "import-judgments", cmd_import_judgments, "import human triplet judgments")
    p.add_argument("file")
    p.add_argument("--format", required=True, choices=JUDGMENT_FORMATS)
    p.add_argument(
        "--id-base",
        type=int,
        choices=(0, 1),
        default=0,
        help="the id of the first image in the file: 1 for files counting from 1 "
        "(oddone-csv, twoafc-csv)",
    )
    p.add_argument("--set", required=True, help="image set the item ids refer to")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--min-catch-accuracy",
        type=float,
        help="levels-pkl: keep participants with at least this share of catch trials right "
        "[0.9, the authors' filter]",
    )
    p.add_argument(
        "--max-nonresponses",
        type=int,
        help="levels-pkl: keep participants with at most this many trials unanswered [10]",
    )

    p = _command(
        sub,
        "import-matrix",
        cmd_import_matrix,
        "import a (n,n) or (subjects,n,n) similarity / dissimilarity matrix (npy, csv)",
    )
    p.add_argument("file")
    p.add_argument("--set", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--kind", choices=("similarity", "dissimilarity"), default="similarity")

    p = _command(
        sub,
        "matrix-triplets",
        cmd_matrix_triplets,
        "derive odd-one-out judgments from a per-subject matrix set (each subject answers "
        "every sampled triplet) over an object-disjoint fit or test split",
    )
    _config_flags(p, MatrixTripletsConfig)
    _add_feature_import_commands(sub)


def _add_feature_import_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """import-features, import-alignet-pool, import-transform: representations computed
    elsewhere."""
    p = _command(
        sub,
        "import-features",
        cmd_import_features,
        "import precomputed (n,d) features in stimulus order (npy, npz, h5, pt)",
    )
    p.add_argument("file")
    p.add_argument("--set", required=True)
    p.add_argument("--name", required=True, help="label of the representation, e.g. clip-vit-b")
    p.add_argument("--key", help="array / dataset name inside npz, h5 or pt files")
    p.add_argument(
        "--similarity",
        choices=("dot", "cosine"),
        help="the representation's natural similarity, used by evaluate by default: dot for "
        "a dot-product model such as a VICE/SPoSE embedding, cosine for network features "
        "[not recorded: evaluate uses cosine]",
    )

    p = _command(
        sub,
        "import-alignet-pool",
        cmd_import_alignet_pool,
        "import the AligNet authors' representations.npz (pool features + their k-means "
        "cluster ids) for an imported ImageNet image set: a features run and a clusters run",
    )
    p.add_argument("file", help="representations.npz")
    p.add_argument("--set", required=True, help="the imported ImageNet (pool) image set")
    p.add_argument(
        "--filenames",
        help="imagenet2012_filenames.npy (TFDS index -> file name), when the npz does not name "
        "its rows",
    )
    p.add_argument("--name", default="so400m-siglip-webli384", help="label of the features")
    p.add_argument("--key", help="the features' array in the npz [found by shape]")
    p.add_argument("--labels-key", help="the cluster ids' array in the npz [found by shape]")

    p = _command(
        sub,
        "import-transform",
        cmd_import_transform,
        "import a gLocal / thingsvision transform.npz (weights, bias, mean, std)",
    )
    p.add_argument("file")
    p.add_argument("--set", required=True, help="image set whose features it applies to")
    p.add_argument("--model", required=True, help="features label it applies to")
    p.add_argument("--name", default="teacher")


def _add_stage_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """extract, fit-transform, cluster, sample, distill: the pipeline's stages, their flags
    generated from the stage configurations."""
    p = _command(sub, "extract", cmd_extract, "extract penultimate-layer features of an image set")
    _config_flags(
        p,
        ExtractConfig,
        # one default model for extract, fit-transform and cluster: the teacher of the config
        defaults={"model": TransformConfig.model},
        notes={"num_workers": _WORKERS_NOTE},
    )
    p.add_argument(
        "--layers",
        help="several representations in one pass, comma-separated (e.g. "
        "layer3,layer4,pre_logits): one features run per layer; replaces --layer",
    )

    p = _command(
        sub,
        "fit-transform",
        cmd_fit_transform,
        "fit the affine alignment transform (the surrogate teacher)",
    )
    _config_flags(p, TransformConfig)
    p.add_argument(
        "--search",
        nargs="+",
        metavar="NAME=V1,V2",
        help="grid search by object-disjoint CV, e.g. --search lam=0.01,0.1 lr=1e-3",
    )

    p = _command(sub, "cluster", cmd_cluster, "k-means on the teacher's representation of the pool")
    _config_flags(p, ClusterConfig)

    p = _command(
        sub, "sample", cmd_sample, "sample pool triplets; the teacher picks the odd one out"
    )
    _config_flags(p, SampleConfig)

    p = _command(sub, "distill", cmd_distill, "distil the teacher's triplets into the student")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN",
        help="continue the newest interrupted (killed, cancelled, failed) distill job from its "
        "training checkpoint, or the job RUN (distill/<id>), with its own settings (only "
        "--device and --num-workers may be given)",
    )
    _config_flags(p, DistillStageConfig, notes={"num_workers": _WORKERS_NOTE})
    _config_flags(p, DistillConfig)
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="under torchrun: how long a process waits for the others before failing",
    )


def _add_result_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """evaluate, evaluate-all, report, export: what the pipeline's runs give."""
    p = _command(
        sub,
        "evaluate",
        cmd_evaluate,
        "accuracy (odd-one-out / two-alternative) with 95%% CI and noise ceiling, or RSA",
    )
    _config_flags(p, EvaluateConfig)

    p = _command(
        sub,
        "evaluate-all",
        cmd_evaluate_all,
        "evaluate every representation (base / aligned teacher, base / distilled student) on "
        "each held-out judgment set and matrix; skips evaluations already current",
    )
    p.add_argument(
        "--judgments",
        nargs="*",
        metavar="NAME",
        help="judgment sets to evaluate on [every set no current transform was fitted on]",
    )
    p.add_argument(
        "--matrices", nargs="*", metavar="NAME", help="matrices [all; give none for none]"
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the CIs")
    p.add_argument("--random-state", "--seed", type=int, default=0, help="seed of the bootstraps")

    p = _command(
        sub,
        "report",
        cmd_report,
        "write report.html and report.json of the current evaluations into a folder",
    )
    p.add_argument("--out", required=True, help="output folder")

    p = _command(sub, "export", cmd_export, "export the student, transform and triplets")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--what",
        nargs="+",
        default=["student", "transform", "triplets"],
        choices=EXPORTABLE,
        help="student: safetensors + JSON + model card; pt2 (torch.export), torchscript "
        "(deprecated by torch), onnx: also those (checked against torch); transform: "
        "transform.npz; triplets: AligNet npz",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files of the same names in the output folder (refused otherwise)",
    )


def _add_projectless_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """models, layers, demo: the commands that take no project file."""
    command = functools.partial(_command, sub, project=False)
    command(
        "models",
        cmd_models,
        "list the embedded models, the model spec syntax and the weights in the local caches",
    )
    p = command("layers", cmd_layers, "list a model's layers with their output shapes")
    p.add_argument("spec", help="model spec, e.g. torchvision:resnet18 or efficientnet_lite0")
    p.add_argument("--weights", help="state dict to load (only needed if it changes the head)")

    p = command("demo", cmd_demo, "run the whole pipeline on the embedded, generated demo")
    p.add_argument("--out", default="demo-output", help="folder for the demo project and images")
    p.add_argument("--quick", action="store_true", help="a smaller, faster demo (tests)")


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and ±inf as None (JSON has no such numbers: ``null``) and numpy
    scalars and arrays as Python numbers and lists."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _configure_logging(args: argparse.Namespace) -> None:
    """Log records to stderr: ``--log-level`` wins, else ``-v`` INFO, ``-vv`` DEBUG, else
    WARNING."""
    level = args.log_level or {2: "INFO", 1: "WARNING", 0: "WARNING"}.get(_verbosity(args), "DEBUG")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        result = args.func(args)
    except AlignetError as exc:
        # under torchrun the processes other than rank 0 print only their errors, marked
        follower = getattr(args, "follower", False)
        if args.json and not follower:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        where = f"[rank {os.environ.get('RANK', '?')}] " if follower else ""
        print(f"{where}error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    if getattr(args, "follower", False):
        return 0  # rank 0 prints the result
    result = _json_safe(result)
    if args.json:
        print(json.dumps(result, default=str, allow_nan=False))
    elif args.command not in ("demo", "models", "layers", "gc", "evaluate-all"):  # print own
        print(json.dumps(result, indent=2, default=str, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
