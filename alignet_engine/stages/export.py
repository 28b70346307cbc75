"""Stage 7 — export: the aligned student (safetensors + JSON config, and compiled as a
``torch.export`` program, TorchScript or ONNX), transform, triplets.

Every file is written to a temporary name in the target folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from alignet_engine import __version__
from alignet_engine.align import save_alignet_npz
from alignet_engine.config import DEFAULT_EXPORTS, EXPORTABLE
from alignet_engine.distill import load_student_config
from alignet_engine.errors import InputError
from alignet_engine.export_model import (
    MODEL_CARD,
    export_onnx,
    export_pt2,
    export_torchscript,
    load_aligned_model,
    write_model_card,
)
from alignet_engine.files import atomic_path, atomic_write_text
from alignet_engine.stages.distill import SLOT as DISTILL_SLOT
from alignet_engine.stages.transform import stored_transform
from alignet_engine.stages.triplets import SLOT as TRIPLET_SLOT
from alignet_engine.store import Project

#: keys of the student file's config that say how to rebuild it (see
#: :func:`alignet_engine.stages.distill.student_description`), copied into student.json
_DESCRIPTION = ("spec", "layer", "pooling", "feature_dim", "classifier", "num_classes")
#: the formats that write the student (the compiled ones also write its safetensors + JSON)
COMPILED = ("student", "pt2", "torchscript", "onnx")


def export_student(project: Project, out_dir: Path) -> dict[str, str]:
    """``student.safetensors`` + ``student.json`` (architecture, layer, preprocessing, metrics)."""
    run = project.run(DISTILL_SLOT, arrays=False)
    src = project.check_side_file(run.summary["checkpoint"], run.summary["checkpoint_sha256"])
    weights = out_dir / "student.safetensors"
    with atomic_path(weights) as tmp:
        shutil.copyfile(src, tmp)
    # how to rebuild the student and read its representation (spec, layer, pooling, feature
    # length, class count), as the distill stage stored it in the file; older student files
    # have only the architecture, which then is the spec, read at pre_logits
    stored = load_student_config(src)
    described = {k: stored[k] for k in _DESCRIPTION if k in stored}
    layer = str(stored.get("layer", "pre_logits"))
    head_dim = int(run.summary.get("head_dim", 0) or 0)
    config = {
        "format": "alignet-student",
        "alignet_studio": __version__,
        "architecture": run.params["student"],
        "spec": run.params["student"],
        "layer": layer,
        **described,
        # with a triplet head the embedding is the head's output (export_model docstring)
        "head_dim": head_dim,
        "embedding": "triplet_head" if head_dim else layer,
        "image_size": run.params["image_size"],
        "distill": run.params,
        "summary": run.summary,
        "run": f"{run.stage}/{run.run_id}",
        "weights": weights.name,
        "weights_sha256": run.summary["checkpoint_sha256"],
    }
    cfg = out_dir / "student.json"
    atomic_write_text(cfg, json.dumps(config, indent=2, sort_keys=True))
    metrics = {
        f"{r.params['model']} on {r.params.get('judgments') or r.params.get('matrix')}": {
            k: r.summary[k]
            for k in ("accuracy", "ci_low", "ci_high", "spearman", "n")
            if k in r.summary
        }
        for r in project.runs("evaluate")
        if r.params.get("model", "").endswith("+distilled")
    }
    card = write_model_card(out_dir, config, metrics or None)
    return {"weights": str(weights), "config": str(cfg), "model_card": str(card)}


def export_compiled(project: Project, out_dir: Path, formats: tuple[str, ...]) -> dict[str, str]:
    """``torch.export`` (.pt2), TorchScript and / or ONNX (opset 18) files of the exported
    student, each checked against the eager model (export_model raises if they disagree)."""
    model = load_aligned_model(out_dir)
    files: dict[str, str] = {}
    if "pt2" in formats:
        files["pt2"] = str(export_pt2(model, out_dir / "student.pt2"))
    if "torchscript" in formats:
        files["torchscript"] = str(export_torchscript(model, out_dir / "student.torchscript.pt"))
    if "onnx" in formats:
        onnx = export_onnx(model, out_dir / "student.onnx")
        files["onnx"] = str(onnx["path"])
        files["onnx_max_abs_diff"] = f"{onnx['max_abs_diff']:.3g}"
    return files


def export_transform(project: Project, out_dir: Path, name: str = "teacher") -> dict[str, str]:
    """``transform.npz`` in the gLocal / thingsvision layout (weights, bias, mean, std)."""
    est, _ = stored_transform(project, name)
    path = out_dir / "transform.npz"
    est.save_npz(path)
    return {"transform": str(path)}


def export_triplets(project: Project, out_dir: Path) -> dict[str, str]:
    """The sampled triplets as AligNet npz files (``train_…`` and ``val_…``)."""
    run = project.run(TRIPLET_SLOT)
    paths = np.array(project.imageset(run.summary["image_set"]).paths, dtype=object)
    out: dict[str, str] = {}
    for split, mask in (("train", ~run.arrays["is_val"]), ("val", run.arrays["is_val"])):
        if not mask.any():
            continue
        t = run.arrays["triplets"][mask]
        path = out_dir / f"{split}_{run.params['strategy']}.npz"
        save_alignet_npz(path, t, run.arrays["sims"][mask], paths.astype(str))
        out[f"triplets_{split}"] = str(path)
    return out


def planned_files(project: Project, what: tuple[str, ...]) -> list[str]:
    """Names of the files :func:`export` writes for ``what`` (to check for existing ones)."""
    names: list[str] = []
    if set(COMPILED) & set(what):
        names += ["student.safetensors", "student.json", MODEL_CARD]
    if "pt2" in what:
        names.append("student.pt2")
    if "torchscript" in what:
        names.append("student.torchscript.pt")
    if "onnx" in what:
        names.append("student.onnx")
    if "transform" in what:
        names.append("transform.npz")
    if "triplets" in what and project.current(TRIPLET_SLOT) is not None:
        strategy = project.run(TRIPLET_SLOT, arrays=False).params["strategy"]
        names += [f"train_{strategy}.npz", f"val_{strategy}.npz"]
    return names


def existing_outputs(project: Project, out_dir: str | Path, what: tuple[str, ...]) -> list[Path]:
    """The files (or links, folders) in ``out_dir`` that exporting ``what`` would replace."""
    out = Path(out_dir)
    return [out / n for n in planned_files(project, what) if os.path.lexists(out / n)]


def export(
    project: Project,
    out_dir: str | Path,
    what: tuple[str, ...] = DEFAULT_EXPORTS,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``what`` into ``out_dir``; returns ``{kind: path}`` and records an export run.

    Files already in ``out_dir`` under the names the export writes are refused (InputError,
    nothing written) unless ``overwrite``; every file is written atomically through a fresh
    temporary file (:mod:`alignet_engine.files`), never through a link planted there.
    """
    out_dir = Path(out_dir)
    unknown = set(what) - set(EXPORTABLE)
    if unknown:
        raise InputError(f"cannot export {sorted(unknown)}; choose from {EXPORTABLE}", field="what")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("is a file, not a folder; choose a folder to export into", source=out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the export folder ({exc.strerror or exc})", source=out_dir
        ) from None
    existing = existing_outputs(project, out_dir, what)
    if existing and not overwrite:
        raise InputError(
            f"already holds {', '.join(p.name for p in existing)}; choose an empty folder or "
            "replace them (CLI --overwrite)",
            source=out_dir,
        )
    for path in existing:
        if path.is_dir() and not path.is_symlink():
            raise InputError("is a folder; it cannot be replaced by an exported file", source=path)
    files: dict[str, str] = {}
    if set(COMPILED) & set(what):
        files.update(export_student(project, out_dir))
        files.update(export_compiled(project, out_dir, what))
    if "transform" in what:
        files.update(export_transform(project, out_dir))
    if "triplets" in what:
        files.update(export_triplets(project, out_dir))
    run_id = project.begin_job("export", {"out_dir": str(out_dir), "what": list(what)})
    project.write_run(
        "export",
        run_id,
        slot="export",
        params={"out_dir": str(out_dir)},
        arrays={},
        summary={"files": files},
    )
    return files
