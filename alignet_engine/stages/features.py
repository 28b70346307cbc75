"""Stage 1 — features: a backbone's penultimate-layer features for every image of a set."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from alignet_engine.base.devices import pick_device
from alignet_engine.base.types import ImageSet
from alignet_engine.config import ExtractConfig, features_slot
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Message, StageDone
from alignet_engine.models import Backbone, backbone_for
from alignet_engine.models.extract import Extraction, PartialFeatures, extraction_job
from alignet_engine.models.preprocess import whole_stimulus
from alignet_engine.models.registry import load_layers
from alignet_engine.stages._tracking import tracked
from alignet_engine.store import Project, SideArray, SideArrayWriter
from alignet_engine.store.sidefiles import SIDE_ARRAY_MIN_BYTES

log = logging.getLogger(__name__)
STAGE = "features"

#: Skipped images named in a run's summary (all of them are in its arrays).
SUMMARY_SKIPPED = 20
#: Skipped images named in the error a later stage raises.
LISTED_SKIPPED = 10

# Settings that do not change the values of a row, so an interrupted extraction may resume
# under different ones. Everything else in ExtractConfig (including fields added later, such
# as a layer or pooling choice) joins the resume key: an unknown field costs at most a
# needless restart, never a mix of rows computed two ways. The device type and the autocast
# dtype join the key separately.
_NOT_IN_RESUME_KEY = frozenset(
    {"batch_size", "device", "num_workers", "skip_corrupt", "resume", "amp"}
)


def _resume_key(config: ExtractConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_RESUME_KEY}


class _FeatureFiles:
    """Where an extraction's rows go, per layer: straight into a side array of the project
    (``X`` of each run), so that the stage's memory is bounded by the batch size, not by the
    pool (1.28 M images x 1280 float32 are 6.5 GB a layer).

    An array the store would keep inline (at most :data:`SIDE_ARRAY_MIN_BYTES`) is filled in
    memory instead and written as before; a small project does not get a side file per run.

    Parameters
    ----------
    project : the project the runs go to (open for writing).
    n : rows (images).
    dims : the width of each layer's features; the extraction's rows are these layers'
        features side by side, (n, sum of dims) float32.

    As a :class:`~alignet_engine.models.extract.RowSink` it takes ``self[lo:hi] = block``,
    block (hi - lo, sum of dims) float32. Use as a context manager: leaving the block before
    :meth:`finish` (a cancel, a failure) deletes the unfinished side files.
    """

    def __init__(self, project: Project, n: int, dims: Sequence[int]) -> None:
        self.project = project
        self.n = n
        self.edges = list(itertools.accumulate(dims, initial=0))
        self.targets: list[np.ndarray | SideArrayWriter] = []
        try:
            for d in dims:
                if n * d * 4 <= SIDE_ARRAY_MIN_BYTES:
                    self.targets.append(np.full((n, d), np.nan, dtype=np.float32))
                else:
                    self.targets.append(project.new_side_array("X", (n, d), np.float32))
        except BaseException:
            self.abort()
            raise

    def __setitem__(self, key: slice, block: np.ndarray, /) -> None:
        for target, (a, b) in zip(self.targets, itertools.pairwise(self.edges), strict=True):
            target[key] = block if len(self.targets) == 1 else np.ascontiguousarray(block[:, a:b])

    def finish(self) -> list[np.ndarray | SideArray]:
        """Each layer's X: the in-memory array, or the finished side array (until a run
        refers to it, :func:`_drop` deletes it should the run not be written)."""
        done: list[np.ndarray | SideArray] = []
        try:
            for target in self.targets:
                done.append(target if isinstance(target, np.ndarray) else target.finish())
        except BaseException:
            _drop(self.project, done)
            raise
        return done

    def abort(self) -> None:
        """Delete the side files not finished (finished ones are left alone)."""
        for target in self.targets:
            if isinstance(target, SideArrayWriter):
                target.abort()

    def __enter__(self) -> _FeatureFiles:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.abort()


def _extraction(
    backbone: Backbone,
    paths: Sequence[str],
    config: ExtractConfig,
    device: torch.device,
    control: JobControl,
    partial: PartialFeatures | None,
    key_extra: dict[str, Any],
    out: _FeatureFiles,
) -> Job[Extraction]:
    """:func:`extraction_job` of ``backbone`` on ``paths`` with ``config``'s settings, its
    rows into ``out``."""
    return extraction_job(
        backbone,
        paths,
        batch_size=config.batch_size,
        device=device,
        image_size=config.image_size,
        control=control,
        num_workers=config.num_workers,
        amp=config.amp,
        skip_corrupt=config.skip_corrupt,
        partial=partial,
        key_extra=key_extra,
        out=out,
    )


def _drop(project: Project, arrays: Sequence[np.ndarray | SideArray]) -> None:
    """Delete the finished side files of ``arrays`` that no run was written with."""
    for X in arrays:
        if isinstance(X, SideArray):
            (project.arrays_dir / X.file).unlink(missing_ok=True)


def load_student_weights(project: Project, backbone_model: nn.Module, checkpoint: str) -> str:
    """Load a distill run's student weights into ``backbone_model``; returns the run ref.

    Only the backbone's weights: a triplet head stored with them is left out (see
    :func:`distilled_backbone` for the student's own representation).

    Raises
    ------
    InputError
        The weights do not fit ``backbone_model`` (the features' model spec is not the
        student's); the message names the student's spec.
    """
    from alignet_engine.distill import load_student_state

    run = project.run(checkpoint, arrays=False)
    path = project.check_side_file(run.summary["checkpoint"], run.summary["checkpoint_sha256"])
    try:
        backbone_model.load_state_dict(load_student_state(path))
    except RuntimeError as exc:
        student = run.params.get("student", run.summary.get("student"))
        raise InputError(
            f"the student of {run.stage}/{run.run_id} ({student}) does not fit this model: "
            f"{str(exc).splitlines()[0]}; extract with --model {student}",
            field="model",
        ) from None
    return f"{run.stage}/{run.run_id}"


class _StudentWithHead(nn.Module):
    """The student's network and its triplet head, as one module (one ``.to()``, one
    ``eval()``, one weights digest for the extraction's resume key)."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.triplet_head = head


def distilled_backbone(
    project: Project, backbone: Backbone, checkpoint: str
) -> tuple[Backbone, str, dict[str, Any]]:
    """``backbone`` with a distill run's student weights, reading what the student learned.

    The representation is the one distillation trained: with a triplet head (``head_dim >
    0``) the head's output applied to ``backbone``'s features (as
    :func:`alignet_engine.export_model.load_aligned_model`'s embedding), else the backbone's
    own features.

    Returns
    -------
    (Backbone, str, dict)
        The backbone to extract with, the distill run's ref, and what the features are for
        the run's params: ``{"embedding": "triplet_head" | "backbone", "head_dim": int}``.
    """
    from alignet_engine.distill import load_student_head, triplet_head_from_state

    ref = load_student_weights(project, backbone.model, checkpoint)
    run = project.run(ref, arrays=False)
    path = project.check_side_file(run.summary["checkpoint"], run.summary["checkpoint_sha256"])
    head_state = load_student_head(path)
    if head_state is None:
        return backbone, ref, {"embedding": "backbone", "head_dim": 0}
    head = triplet_head_from_state(head_state)
    if head.in_features != backbone.feature_dim:
        raise InputError(
            f"the triplet head of {ref} expects {head.in_features}-d features but "
            f"{backbone.name} gives {backbone.feature_dim}-d ones; extract with the student's "
            f"model spec ({run.params.get('student')}), layer and pooling",
            field="model",
        )
    base = backbone

    def read(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # base.features reads base.model, which is model.model: the same parameters
        return model.get_submodule("triplet_head")(base.features(x))

    wrapped = Backbone(
        base.name,
        _StudentWithHead(base.model, head),
        base.preprocess,
        arch=base.arch,
        weights=base.weights,
        layer=base.layer,
        pooling=base.pooling,
        spec=base.spec,
        reader=read,
        head=base.head,
        feature_dim=int(head.out_features),
    )
    return wrapped, ref, {"embedding": "triplet_head", "head_dim": int(head.out_features)}


def resolve_preprocessing(project: Project, config: ExtractConfig) -> str:
    """``config.preprocessing`` with ``auto`` resolved: ``whole`` when the image set is
    evaluated against people (judgments or matrices refer to it), else ``model``."""
    if config.preprocessing != "auto":
        return config.preprocessing
    for kind in ("judgments", "matrices"):
        for name in project.names(kind):
            if project.data_image_set(kind, name) == config.image_set:
                return "whole"
    return "model"


def extract(project: Project, config: ExtractConfig, control: JobControl | None = None) -> Job[str]:
    """Extract features of ``config.image_set`` and store them in slot ``features:<set>:<label>``.

    With ``config.resume`` the rows are also written, in batches, to side files next to the
    project (``<project>.files/extract-<key>.*``, see :class:`PartialFeatures`); a later run
    of the same settings on unchanged image files computes only the rows still missing, and
    the side files are deleted once the run is stored. With ``config.skip_corrupt``
    unreadable images become NaN rows, listed in the run (arrays ``skipped_items``,
    ``skipped_reasons``; summary ``n_skipped``, ``skipped``); :func:`stored_features` refuses
    such features to later stages.

    The rows are written to the run's side array as they are computed (see
    :class:`_FeatureFiles`): the stage's memory is bounded by the batch size, not by the
    number of images. A cancelled or failed extraction leaves no side array behind.

    Returns the new run's id.
    """
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        images = _check_image_files(project, config.image_set)
        device = pick_device(config.device)
        backbone = backbone_for(config)  # spec + weights / layer / pooling
        inputs: dict[str, str] = {}
        student: dict[str, Any] = {}
        if config.checkpoint is not None:
            backbone, ref, student = distilled_backbone(project, backbone, config.checkpoint)
            # keyed by the slot, like every input: a run ref as key ("distill/<id>") would
            # never match a current slot, so the features would be stale from birth
            inputs[project.run(ref, arrays=False).slot] = ref
        preprocessing = resolve_preprocessing(project, config)
        if preprocessing == "whole":
            backbone.preprocess = whole_stimulus(backbone.preprocess)
        yield Message(
            STAGE,
            f"{config.label} on {len(images)} images of '{config.image_set}' ({device}; "
            f"{'whole stimulus' if preprocessing == 'whole' else 'model'} preprocessing)",
        )
        slot = features_slot(config.image_set, config.label)
        partial = PartialFeatures(project.side_path, tag=slot) if config.resume else None
        n = len(images.paths)
        with _FeatureFiles(project, n, [backbone.feature_dim]) as files:
            result = yield from _extraction(
                backbone, images.paths, config, device, control, partial, _resume_key(config), files
            )
            (X,) = files.finish()
        try:
            _write_run(
                project, config, run_id, backbone, X, result, preprocessing, device, inputs, student
            )
        except BaseException:
            _drop(project, [X])
            raise
        # Only now that the run is committed may the resumable rows go.
        if partial is not None:
            partial.discard()
        _close_superseded(project, config, run_id)
        yield StageDone(
            STAGE,
            run_id,
            {"slot": slot, "shape": list(X.shape), "n_skipped": len(result.skipped)},
        )
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))


def _write_run(
    project: Project,
    config: ExtractConfig,
    run_id: str,
    backbone: Backbone,
    X: np.ndarray | SideArray,
    result: Extraction,
    preprocessing: str,
    device: torch.device,
    inputs: dict[str, str],
    student: dict[str, Any],
) -> None:
    """Store ``X`` (n, d) float32 (in memory, or a finished side array), extracted by
    ``backbone`` with ``config``, as run ``run_id`` in slot ``features:<set>:<config.label>``."""
    params = {
        **config.to_dict(),
        "layer": backbone.layer,
        "preprocess": backbone.preprocess.to_dict(),
        "preprocessing": preprocessing,  # "auto" resolved
        "device": str(device),
        "autocast": result.autocast,
        # a distilled student: its triplet head's output or the backbone's features
        **student,
    }
    arrays: dict[str, np.ndarray | SideArray] = {"X": X}
    summary: dict[str, Any] = {
        "n": int(X.shape[0]),
        "dim": int(X.shape[1]),
        "resumed_rows": result.resumed,
        "n_skipped": len(result.skipped),
    }
    if result.skipped:
        # Every skipped item is in the arrays; the summary (an HDF5 attribute, which must
        # stay small) names the first few for the log and the GUI.
        arrays["skipped_items"] = np.array([s.index for s in result.skipped], np.int64)
        arrays["skipped_reasons"] = np.array([s.reason for s in result.skipped], object)
        summary["skipped"] = [
            {"item": s.index, "path": s.path, "reason": s.reason}
            for s in result.skipped[:SUMMARY_SKIPPED]
        ]
    project.write_run(
        STAGE,
        run_id,
        slot=features_slot(config.image_set, config.label),
        params=params,
        arrays=arrays,
        inputs=inputs,
        summary=summary,
    )


def _check_image_files(project: Project, image_set: str) -> ImageSet:
    images = project.imageset(image_set)
    if not all(images.paths):
        raise InputError(
            f"image set '{image_set}' has items without image files "
            "(it was created by importing features); import its images first",
            field="image_set",
        )
    return images


def extract_layers(
    project: Project,
    config: ExtractConfig,
    layers: Sequence[str],
    control: JobControl | None = None,
) -> Job[list[str]]:
    """Extract several layers of ``config.model`` in ONE pass over the images: one features
    run per layer, each as :func:`extract` with ``layer=<that layer>`` would store it (slot
    ``features:<set>:<label of that layer>``, the same params), from a single forward pass
    per batch with hooks on every layer (:func:`~alignet_engine.models.load_layers`).

    ``config.layer`` is ignored; ``config.checkpoint`` is refused (a distilled student's
    representation is its triplet head's output: extract it with :func:`extract`).

    Returns the run ids, in the order of ``layers``.
    """
    control = control or JobControl()
    layers = list(layers)
    if not layers:
        raise InputError("name at least one layer", field="layers")
    if config.checkpoint is not None:
        raise InputError(
            "several layers of a distilled student are not extracted in one pass; extract the "
            "student's representation with --checkpoint and no --layers",
            field="layers",
        )
    configs = [replace(config, layer=layer) for layer in layers]  # validates each
    labels = [c.label for c in configs]
    if len(set(labels)) != len(labels):
        raise InputError(f"names a layer twice: {', '.join(layers)}", field="layers")

    def body(run_id: str) -> Job[list[str]]:
        images = _check_image_files(project, config.image_set)
        device = pick_device(config.device)
        lset = load_layers(
            config.model,
            layers,
            weights=config.weights,
            pooling=config.pooling,
            probe_size=config.image_size,
        )
        preprocessing = resolve_preprocessing(project, config)
        if preprocessing == "whole":
            lset.combined.preprocess = whole_stimulus(lset.combined.preprocess)
        for part in lset.parts:
            part.preprocess = lset.combined.preprocess
        yield Message(
            STAGE,
            f"{len(layers)} layers of {config.model} ({', '.join(labels)}) on {len(images)} "
            f"images of '{config.image_set}' in one pass ({device}; "
            f"{'whole stimulus' if preprocessing == 'whole' else 'model'} preprocessing)",
        )
        tag = f"features:{config.image_set}:" + ",".join(labels)
        dims = [part.feature_dim for part in lset.parts]
        partial = PartialFeatures(project.side_path, tag=tag) if config.resume else None
        with _FeatureFiles(project, len(images.paths), dims) as files:
            key = {**_resume_key(config), "layers": layers}
            result = yield from _extraction(
                lset.combined, images.paths, config, device, control, partial, key, files
            )
            Xs = files.finish()
        run_ids: list[str] = []
        try:
            for k, (cfg, part, X) in enumerate(zip(configs, lset.parts, Xs, strict=True)):
                rid = run_id if k == 0 else project.begin_job(STAGE, cfg.to_dict())
                _write_run(project, cfg, rid, part, X, result, preprocessing, device, {}, {})
                run_ids.append(rid)
        except BaseException:
            _drop(project, Xs[len(run_ids) :])
            raise
        if partial is not None:
            partial.discard()
        yield StageDone(
            STAGE,
            run_id,
            {
                "slots": [features_slot(config.image_set, label) for label in labels],
                "dims": dims,
                "n_skipped": len(result.skipped),
            },
        )
        return run_ids

    return (yield from tracked(project, STAGE, configs[0].to_dict(), body))


def _close_superseded(project: Project, config: ExtractConfig, run_id: str) -> None:
    """End the journal records of killed extractions of the same settings as ``resumed``.

    A killed job leaves a start record without an end, shown as interrupted; once a run of
    the same settings (which took over its finished rows) is stored, it is interrupted no
    more.
    """
    key = _resume_key(config)
    for record in project.interrupted_jobs():
        if record.get("stage") != STAGE or record["run"] == run_id:
            continue
        params = {k: v for k, v in record.get("params", {}).items() if k not in _NOT_IN_RESUME_KEY}
        if params == key:
            project.end_job(STAGE, record["run"], "resumed", f"continued by {STAGE}/{run_id}")


def stored_features(
    project: Project, image_set: str, label: str, *, allow_missing: bool = False
) -> tuple[np.ndarray, str]:
    """(X (n, d) float32, run ref) of the current features of ``image_set`` by ``label``.

    Every later stage reads features through here, so this is where rows without values
    (images skipped as unreadable by an extraction with ``skip_corrupt``) are stopped: a NaN
    row would silently turn standardisation statistics, k-means centroids and similarities
    into NaN, and dropping it here would shift the item indices that judgments and triplets
    refer to.

    Parameters
    ----------
    allow_missing : return NaN rows instead of raising (for display and inspection).

    Raises
    ------
    InputError
        Some rows are NaN; the message names the skipped items, their files and why they were
        skipped, and what to do.
    """
    slot = features_slot(image_set, label)
    run = project.run(slot)
    X = run.arrays["X"].astype(np.float32)
    ref = f"{run.stage}/{run.run_id}"
    if not allow_missing:
        missing = np.flatnonzero(np.isnan(X).any(axis=1))
        if missing.size:
            raise InputError(
                _missing_rows_message(project, image_set, missing, run.arrays), field=slot
            )
    return X, ref


def _missing_rows_message(
    project: Project, image_set: str, missing: np.ndarray, arrays: dict[str, np.ndarray]
) -> str:
    reasons = dict(
        zip(
            (int(i) for i in arrays.get("skipped_items", ())),
            (str(r) for r in arrays.get("skipped_reasons", ())),
            strict=True,
        )
    )
    paths: Sequence[str]
    try:
        paths = project.imageset(image_set).paths
    except Exception:  # the set was deleted; the items are still worth naming
        paths = ()
    lines = []
    for i in missing[:LISTED_SKIPPED]:
        path = paths[i] if i < len(paths) else ""
        lines.append(f"  item {int(i)} {path}: {reasons.get(int(i), 'no features (NaN)')}")
    if missing.size > LISTED_SKIPPED:
        lines.append(f"  ... and {missing.size - LISTED_SKIPPED} more")
    return (
        f"{missing.size} of the image set's items have no features because their images were "
        "skipped as unreadable (skip_corrupt); later stages cannot use them:\n"
        + "\n".join(lines)
        + "\nReplace or repair these images and extract again, or import the image set "
        "without them."
    )
