"""Importing data into a project: each importer validates everything before anything is written.

These are quick, so they are plain functions rather than jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from alignet_engine.align.chunked import RowArray
from alignet_engine.align.clustering import cluster_summaries
from alignet_engine.align.matrix_triplets import MatrixTriplets
from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.config import JUDGMENT_FORMATS, ClusterConfig, features_slot
from alignet_engine.data import importers
from alignet_engine.data._io_common import summarize
from alignet_engine.data.arrays_io import (
    PoolFeatures,
    read_alignet_representations,
    read_imagenet_filenames,
)
from alignet_engine.data.features_io import FILE_NAMES, file_names_order, read_file_names
from alignet_engine.data.images import PathSuffixIndex
from alignet_engine.errors import InputError
from alignet_engine.stages.clusters import SLOT as CLUSTER_SLOT
from alignet_engine.stages.clusters import STAGE as CLUSTER_STAGE
from alignet_engine.store import Project
from alignet_engine.store import sidefiles as sf
from alignet_engine.store.checks import disk_full_as_error
from alignet_engine.store.sidefiles import SideArray

log = logging.getLogger(__name__)


def import_images(
    project: Project, name: str, source: str | Path, *, replace: bool = False
) -> ImageSet:
    """Import a folder (sub-folders = categories, or flat) or a manifest CSV as set ``name``.

    An existing set ``name`` that judgments, matrices or runs use is replaced only with
    ``replace=True``, which makes them unusable (see ``Project.write_imageset``)."""
    source = Path(source)
    if source.is_dir():
        images = importers.read_image_folder(source)
    elif source.suffix.lower() == ".csv":
        images = importers.read_image_manifest(source)
    else:
        raise InputError("expected a folder of images or a manifest .csv", source=source)
    project.write_imageset(name, images, {"source": str(source.resolve())}, replace=replace)
    return images


#: formats whose item ids may be written 1-based (``id_base=1``; CLI ``--id-base 1``)
ID_BASE_FORMATS = ("oddone-csv", "twoafc-csv")


def read_judgments(path: str | Path, fmt: str, images: ImageSet, *, id_base: int = 0) -> Judgments:
    """Read judgments of format ``fmt`` about ``images`` (validated against its size);
    ``id_base`` 1: the file's ids count from 1 (:data:`ID_BASE_FORMATS` only)."""
    n = len(images)
    if id_base not in (0, 1):
        raise InputError(f"must be 0 or 1, not {id_base}", field="id_base")
    if id_base and fmt not in ID_BASE_FORMATS:
        raise InputError(
            f"1-based ids apply to {', '.join(ID_BASE_FORMATS)}; {fmt} defines its own ids",
            field="id_base",
        )
    if fmt == "things-tsv":
        return importers.read_things_tsv(path, n)
    if fmt == "oddone-npy":
        return importers.read_oddone_npy(path, n)
    if fmt == "oddone-txt":
        return importers.read_oddone_txt(path, n)
    if fmt == "oddone-csv":
        return importers.read_oddone_csv(path, n, id_base=id_base)
    if fmt == "materials-json":
        return importers.read_materials_json(path, n)
    if fmt == "twoafc-csv":
        return importers.read_twoafc_csv(path, n, id_base=id_base)
    if fmt == "levels-pkl":
        from alignet_engine.data.levels_io import read_levels_pkl

        return read_levels_pkl(path, images).judgments
    if fmt == "alignet-npz":
        t = importers.read_alignet_npz(path, n_items=None)
        ids = _alignet_ids(t.filenames, t.indices.astype(np.int64), images, Path(path))
        return Judgments(
            "oddone",
            ids,
            np.full(len(ids), -1, dtype=np.int64),
            meta={"source": "alignet-npz (teacher choices, not human)"},
        )
    raise InputError(f"unknown judgment format {fmt!r}; choose one of {JUDGMENT_FORMATS}")


def _alignet_ids(
    filenames: np.ndarray, indices: np.ndarray, images: ImageSet, path: Path
) -> np.ndarray:
    """Item ids (m, 3) int64 of an AligNet npz's rows in ``images``.

    Each file name is matched on the longest path suffix it shares with an image of the set
    (``airplanes/image_0001.jpg`` is not ``chair/image_0001.jpg``). When every name matches one
    image, the names give the ids. When some name fits several images, the file's own
    ``indices`` decide if they are consistent with every name (each index is one of its name's
    candidates); otherwise the import is refused naming the candidates. When the names are not
    this set's at all (a published file indexing ImageNet), the file's ``indices`` are the ids.
    """
    n = len(images)
    uniq, inverse = np.unique(filenames.ravel(), return_inverse=True)
    index = PathSuffixIndex(images.paths)
    cands = [index.candidates(str(u)) for u in uniq]
    if not all(cands):
        if any(cands):
            missing = [str(u) for u, c in zip(uniq, cands, strict=True) if not c]
            log.warning(
                "%s: %d file name(s) are not in the image set (e.g. %s); using its indices",
                path,
                len(missing),
                missing[0],
            )
        ids = indices
        if len(ids) and (ids.max() >= n or ids.min() < 0):
            raise InputError(
                f"indices reach {int(ids.max())} but the image set has {n} images and the file "
                "names do not match it",
                source=path,
                field="indices",
            )
    elif all(len(c) == 1 for c in cands):
        ids = np.array([c[0] for c in cands], dtype=np.int64)[inverse].reshape(filenames.shape)
    else:
        flat = indices.ravel()
        consistent = len(flat) == len(inverse) and all(
            int(flat[r]) in cands[u] for r, u in enumerate(inverse)
        )
        if not consistent:
            ambiguous = [(str(u), c) for u, c in zip(uniq, cands, strict=True) if len(c) > 1]
            name, found = ambiguous[0]
            shown = ", ".join(images.paths[i] for i in found[:5])
            row = int(np.flatnonzero((filenames == name).any(axis=1))[0]) + 1
            raise InputError(
                f"{len(ambiguous)} file name(s) fit several images and the file's indices do "
                f"not decide: {name!r} could be {shown}; give longer paths (category/file)",
                source=path,
                row=row,
                field="filenames",
            )
        ids = indices
    repeated = np.flatnonzero(
        (ids[:, 0] == ids[:, 1]) | (ids[:, 0] == ids[:, 2]) | (ids[:, 1] == ids[:, 2])
    )
    if repeated.size:
        r = int(repeated[0])
        raise InputError(
            f"names the same image twice ({filenames[r].tolist()} → items {ids[r].tolist()}); "
            "a triplet needs three different images",
            source=path,
            row=r + 1,
            field="filenames",
        )
    return ids


def import_judgments(
    project: Project,
    name: str,
    path: str | Path,
    fmt: str,
    *,
    image_set: str,
    min_catch_accuracy: float | None = None,
    max_nonresponses: int | None = None,
    id_base: int = 0,
) -> Judgments:
    """Import judgments about image set ``image_set`` under ``name`` (``id_base``: see
    :func:`read_judgments`).

    ``min_catch_accuracy`` / ``max_nonresponses`` set the participant filter of Levels
    (``levels-pkl``; the authors' 0.9 and 10 by default); the import's counts (participants
    excluded and why, catch trials, missing images) are stored in the judgments' params as
    ``import_report``.
    """
    if image_set not in project.names("imagesets"):
        hint = (
            " Levels refers to ImageNet-2012 train images: import them first (a folder of "
            "nXXXXXXXX/ class folders, or a flat folder) with alignet-cli import-images "
            f"<folder> --set {image_set}."
            if fmt == "levels-pkl"
            else f" Import the images first: alignet-cli import-images <folder> --set {image_set}."
        )
        raise InputError(
            f"there is no image set '{image_set}' in the project (have: "
            f"{', '.join(project.names('imagesets')) or 'none'}).{hint}",
            field="set",
        )
    images = project.imageset(image_set)
    params: dict[str, object] = {"source": str(Path(path).resolve()), "format": fmt}
    if fmt == "levels-pkl":
        from alignet_engine.data import levels_io

        data = levels_io.read_levels_pkl(
            path,
            images,
            min_catch_accuracy=(
                levels_io.MIN_CATCH_ACCURACY if min_catch_accuracy is None else min_catch_accuracy
            ),
            max_nonresponses=(
                levels_io.MAX_NONRESPONSES if max_nonresponses is None else max_nonresponses
            ),
        )
        j = data.judgments
        params["participants"] = list(data.participants)
    else:
        j = read_judgments(path, fmt, images, id_base=id_base)
    project.write_judgments(name, j, image_set=image_set, params=params)
    return j


def import_matrix(
    project: Project,
    name: str,
    path: str | Path,
    *,
    image_set: str,
    kind: Literal["similarity", "dissimilarity"] = "similarity",
) -> np.ndarray:
    """Import an ``(n, n)`` or ``(subjects, n, n)`` matrix about ``image_set``."""
    matrix = importers.read_matrix(path, len(project.imageset(image_set)))
    project.write_matrix(
        name, matrix, image_set=image_set, kind=kind, params={"source": str(Path(path).resolve())}
    )
    return matrix


def import_features(
    project: Project,
    path: str | Path,
    *,
    image_set: str,
    label: str,
    key: str | None = None,
    similarity: Literal["dot", "cosine"] | None = None,
) -> str:
    """Import precomputed ``(n, d)`` features (stimulus order) as features of ``label``.

    ``similarity`` records how the representation compares items: ``"dot"`` for a
    dot-product model such as an imported VICE/SPoSE embedding (non-negative dimensions whose
    norms carry meaning), ``"cosine"`` for network features; ``evaluate`` uses it by default
    (None: not recorded, evaluate uses cosine).

    When no image set ``image_set`` exists yet, one of ``n`` items *without image files* is
    created, so features of concepts whose images cannot be shared (THINGS) can still be
    evaluated against judgments that refer to the same item order.

    ``path`` may be a thingsvision output folder (``features.<ext>`` or split files). When a
    thingsvision ``file_names.txt`` lies beside the features (or in the folder) and the image
    set has image files, the rows are reordered from its order to the image set's
    (matched by path; the run's ``row_order`` param names the listing used).
    """
    listing = Path(path) / FILE_NAMES if Path(path).is_dir() else Path(path).parent / FILE_NAMES
    row_order = None
    if image_set in project.names("imagesets"):
        images = project.imageset(image_set)
        X = importers.read_features(path, len(images), key=key)
        if listing.is_file() and all(images.paths):
            # thingsvision's extraction order, not necessarily the image set's
            order = file_names_order(read_file_names(listing), list(images.paths), listing)
            X = np.ascontiguousarray(X[order])
            row_order = str(listing.resolve())
    else:
        X = importers.read_features(path, None, key=key)
        n = int(X.shape[0])
        project.write_imageset(
            image_set,
            ImageSet(("",) * n, ("",) * n),
            {"source": f"{n} items without images, from {Path(path).name}"},
        )
    params: dict[str, object] = {
        "image_set": image_set,
        "model": label,
        "source": str(Path(path).resolve()),
        "key": key,
        "imported": True,
        "row_order": row_order or "file order",
    }
    if similarity is not None:
        if similarity not in ("dot", "cosine"):
            raise InputError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        params["similarity"] = similarity
    return _write_features(project, X, params)


def _write_features(project: Project, X: np.ndarray | SideArray, params: dict[str, object]) -> str:
    """Write ``X`` (n, d) float32 (an array or a finished side array) as a features run
    of ``params["image_set"]`` by ``params["model"]``; returns the run id."""
    run_id = project.begin_job("features", params)
    project.write_run(
        "features",
        run_id,
        slot=features_slot(str(params["image_set"]), str(params["model"])),
        params=params,
        arrays={"X": X},
        summary={"n": int(X.shape[0]), "dim": int(X.shape[1])},
    )
    return run_id


def import_transform(
    project: Project, path: str | Path, *, image_set: str, model: str, name: str = "teacher"
) -> str:
    """Import a gLocal / thingsvision ``transform.npz`` (weights, bias, mean, std) as the
    transform ``name`` of ``model``'s features of ``image_set``; returns the run id."""
    from alignet_engine.align import AffineTransform
    from alignet_engine.stages.transform import STAGE, transform_slot

    est = AffineTransform.load_npz(path)
    X = project.run(features_slot(image_set, model), arrays=False)
    if est.W_.shape[0] != X.summary["dim"]:
        raise InputError(
            f"the transform is {est.W_.shape[0]}-dimensional but the features of {model} on "
            f"'{image_set}' have {X.summary['dim']} dimensions",
            source=path,
            field="weights",
        )
    params = {
        "image_set": image_set,
        "model": model,
        "name": name,
        "imported": True,
        "source": str(Path(path).resolve()),
        "similarity": est.similarity,
        "standardize": est.standardize,
    }
    run_id = project.begin_job(STAGE, params)
    project.write_run(
        STAGE,
        run_id,
        slot=transform_slot(name),
        params=params,
        arrays={k: np.asarray(v) for k, v in est.to_arrays().items()},
        inputs={features_slot(image_set, model): f"{X.stage}/{X.run_id}"},
        summary={
            "imported": True,
            "temperature": float(est.temperature_),
            "dim": int(est.W_.shape[0]),
        },
    )
    return run_id


def derive_matrix_triplets(
    project: Project,
    matrix: str,
    *,
    name: str,
    n_triplets: int,
    split: Literal["fit", "test", "all"] = "fit",
    test_fraction: float = 0.5,
    random_state: int = 0,
) -> MatrixTriplets:
    """Odd-one-out judgments ``name`` derived from the stored per-subject matrix ``matrix``.

    Every subject's matrix answers ``n_triplets`` random triplets over the items of ``split``
    (:func:`~alignet_engine.align.matrix_triplets.split_items` with ``test_fraction`` and
    ``random_state``: ``"fit"`` and ``"test"`` with the same seed are complementary,
    object-disjoint halves; ``"all"`` uses every item). One row per answering subject, so a
    soft transform fits each triplet's choice distribution. The judgments are written for the
    matrix's image set; their params record the split and its item ids.
    """
    from alignet_engine.align.matrix_triplets import split_items, triplets_from_matrices

    if split not in ("fit", "test", "all"):
        raise InputError(f"must be fit, test or all, got {split!r}", field="split")
    mat, kind, image_set = project.matrix(matrix)
    n = len(project.imageset(image_set))
    items = None
    if split != "all":
        fit, test = split_items(n, test_fraction=test_fraction, random_state=random_state)
        items = fit if split == "fit" else test
    # the triplet sample gets its own stream: the same seed for fit and test must not couple them
    seed = np.random.SeedSequence([random_state, ("fit", "test", "all").index(split)])
    try:
        result = triplets_from_matrices(
            mat,
            n_triplets,
            kind=kind,  # type: ignore[arg-type]
            items=items,
            random_state=int(seed.generate_state(1)[0]),
        )
    except InputError as exc:
        raise InputError(exc.reason, source=f"matrix '{matrix}'", field=exc.field) from exc
    project.write_judgments(
        name,
        result.judgments,
        image_set=image_set,
        params={
            "source": f"matrix:{matrix}",
            "split": split,
            "test_fraction": test_fraction,
            "random_state": random_state,
            "n_triplets": result.n_triplets,
            "n_skipped": result.n_skipped,
            "n_unanswered": result.n_unanswered,
            "items": result.items.tolist(),
        },
    )
    return result


#: The model whose last-layer activations ``representations.npz`` holds (the authors' README).
ALIGNET_REPRESENTATION_MODEL = "so400m-siglip-webli384"


def pool_rows(names: np.ndarray, images: ImageSet, source: Path) -> np.ndarray:
    """For each image of ``images``, the row of ``names`` (N,) str that names it.

    A row's name matches an image on the longest path suffix they share (ImageNet's
    ``n01440764_10026.JPEG`` finds ``…/train/n01440764/n01440764_10026.JPEG``), so the file
    may name more images than the set holds (the full pool) but must name each image once.

    Returns (n_images,) int64 row of every image, in image order.

    Raises
    ------
    InputError naming ``source``: a set without image files, images that no row names (how
    many, and the first few), an image that several rows name.
    """
    if not all(images.paths):
        raise InputError(
            "cannot be matched to an image set without image files; import the ImageNet "
            "images first (alignet-cli import-images <folder> --set <name>)",
            source=source,
        )
    index = PathSuffixIndex(str(x) for x in names)
    rows = np.full(len(images), -1, dtype=np.int64)
    missing: list[str] = []
    for i, path in enumerate(images.paths):
        found = index.candidates(path)
        if len(found) > 1:
            raise InputError(
                f"names the image {path!r} {len(found)} times (rows "
                f"{', '.join(str(r + 1) for r in found[:5])})",
                source=source,
                row=found[0] + 1,
            )
        if found:
            rows[i] = found[0]
        else:
            missing.append(path)
    if missing:
        raise InputError(
            f"names {len(missing)} of the set's {len(images)} images nowhere (its rows are "
            f"named by file name, e.g. {str(names[0])!r}): {summarize(missing)}",
            source=source,
        )
    return rows


@dataclass(frozen=True)
class PoolImport:
    """What :func:`import_alignet_representations` wrote: the two run ids and the counts."""

    features_run: str
    clusters_run: str
    n_items: int
    dim: int
    k: int
    n_file_rows: int


#: Bytes of float32 pool rows gathered, written and summed at a time. The import's working
#: memory is a few times this (the block, its float64 copies for the sums and the inertia)
#: plus a few numbers per image (labels, names), whatever the size of the features: 16 MiB
#: is 3,640 rows of the authors' 1152-d features, 16 of the side file's ~1 MiB chunks.
POOL_BLOCK_BYTES = 16 << 20


def import_alignet_representations(
    project: Project,
    path: str | Path,
    *,
    image_set: str,
    label: str = ALIGNET_REPRESENTATION_MODEL,
    filenames: str | Path | None = None,
    features_key: str | None = None,
    labels_key: str | None = None,
    block_rows: int | None = None,
) -> PoolImport:
    """Import the AligNet authors' ``representations.npz`` for the pool ``image_set``.

    Writes a features run of ``label`` (the file's rows of the set's images, in image-set
    order) and a clusters run that reuses the authors' k-means ids: the clusters that occur
    among the set's images, renumbered 0..k-1 in the order of the authors' ids (the summary's
    ``source_cluster_ids`` maps back), centroids = the mean features of each cluster's
    members in the set. The clusters run is an ordinary one (transform None: raw features,
    as the authors clustered), so triplet sampling uses it as it would a k-means run.

    ``filenames``: ``imagenet2012_filenames.npy`` (TFDS index -> file name), required when the
    archive does not name its rows itself; its length must equal the archive's rows.

    The features are never in memory whole (the authors' file is 6 GB): they are checked
    as they are streamed from the archive, then gathered in image-set order, written and
    summed per cluster ``block_rows`` rows at a time (default: :data:`POOL_BLOCK_BYTES` of
    float32 rows). A deflated archive member is decompressed once to an unlinked temporary
    file in the project's files folder (N × d × itemsize bytes while the import runs).
    Nothing is written to the project until every check has passed and every number is
    computed; a failure leaves neither a run nor a side file.
    """
    if image_set not in project.names("imagesets"):
        raise InputError(
            f"there is no image set '{image_set}' in the project; import the ImageNet images "
            f"first: alignet-cli import-images <folder> --set {image_set}",
            field="set",
        )
    images = project.imageset(image_set)
    path = Path(path)
    with disk_full_as_error(project.files_dir):  # the temporary copy of a deflated member
        rep = read_alignet_representations(
            path, features_key=features_key, labels_key=labels_key, scratch=project.files_dir
        )
    with rep.features as features:
        n_rows, dim = features.shape
        names, named_by = rep.names, path
        if filenames is not None:
            names, named_by = read_imagenet_filenames(filenames), Path(filenames)
            if names.shape[0] != n_rows:
                raise InputError(
                    f"names {names.shape[0]} images but {path.name} has {n_rows} rows; both "
                    "must follow the same TFDS order (imagenet2012 train)",
                    source=filenames,
                )
        if names is None:
            raise InputError(
                "does not name its rows; give the authors' imagenet2012_filenames.npy "
                "(--filenames), which names the TFDS index of every row",
                source=path,
            )
        rows = pool_rows(names, images, named_by)
        source_ids, labels = np.unique(rep.labels[rows], return_inverse=True)
        k = int(source_ids.size)
        if k < 2:
            raise InputError(
                f"puts all {len(images)} images of '{image_set}' in one cluster "
                f"({int(source_ids[0])}); triplet sampling needs at least two",
                source=path,
            )
        labels = labels.astype(np.int64)
        step = block_rows or max(1, POOL_BLOCK_BYTES // (4 * dim))
        X, sums = _write_pool_rows(project, features, rows, labels, k, step)
    counts = np.bincount(labels, minlength=k)
    centroids = (sums / counts[:, None]).astype(np.float32)
    config = ClusterConfig(image_set=image_set, model=label, transform=None, k=k)
    source = str(path.resolve())
    try:
        with sf.open_side(project.arrays_dir, X, "the imported features") as f:
            inertia = _inertia(f["data"], labels, centroids, step)
            summaries = cluster_summaries(
                f["data"],
                labels,
                centroids,
                n_nearest=config.n_nearest,
                memory_budget_mb=2 * step * dim * 4 / 2**20,  # reads step rows as float64
            )
        features_run = _write_features(
            project,
            X,
            {
                "image_set": image_set,
                "model": label,
                "source": source,
                "key": rep.keys["features"],
                "imported": True,
                "row_order": f"matched by file name ({named_by.name})",
            },
        )
    except BaseException:
        (project.arrays_dir / X.file).unlink(missing_ok=True)  # no run refers to it
        raise
    clusters_run = project.begin_job(CLUSTER_STAGE, config.to_dict())
    project.write_run(
        CLUSTER_STAGE,
        clusters_run,
        slot=CLUSTER_SLOT,
        params=config.to_dict(),
        arrays={"labels": labels, "centroids": centroids},
        inputs={features_slot(image_set, label): f"features/{features_run}"},
        summary={
            "k": k,
            "inertia": inertia,
            "sizes": counts.tolist(),
            "clusters": summaries,
            "imported": True,
            "source": source,
            "source_cluster_ids": source_ids.tolist(),
        },
    )
    return PoolImport(features_run, clusters_run, len(images), dim, k, n_rows)


def _write_pool_rows(
    project: Project,
    features: PoolFeatures,
    rows: np.ndarray,
    labels: np.ndarray,
    k: int,
    step: int,
) -> tuple[SideArray, np.ndarray]:
    """Write the file's rows ``rows`` (n,) (image-set order) as an (n, d) float32 side
    array, ``step`` rows at a time, and sum each cluster's rows (``labels`` (n,) in [0, k))
    on the way. Returns the finished side array and the sums, (k, d) float64. A failure
    deletes the unfinished side file.

    The sums add each cluster's rows one after the other in image-set order. (The former
    in-memory import summed each cluster with ``np.add.reduceat``, which numpy sums
    pairwise: the float64 sums may differ in their last bits, which a float32 centroid
    shows only where large values cancel.)"""
    n, dim = int(rows.size), features.shape[1]
    sums = np.zeros((k, dim), dtype=np.float64)
    with project.new_side_array("X", (n, dim), np.float32) as writer:
        for lo in range(0, n, step):
            block = features.rows(rows[lo : lo + step])
            writer[lo : lo + block.shape[0]] = block
            # one row at a time onto its cluster's sum, in image-set order (ufunc.at is
            # unbuffered): the sums do not depend on the block size
            np.add.at(sums, labels[lo : lo + step], block.astype(np.float64))
        return writer.finish(), sums


def _inertia(X: RowArray, labels: np.ndarray, centroids: np.ndarray, step: int) -> float:
    """Sum of squared distances of the rows of ``X`` (n, d) to their cluster's centroid
    (``labels`` (n,), ``centroids`` (k, d)), in float64, ``step`` rows at a time."""
    total = 0.0
    c = centroids.astype(np.float64)
    for lo in range(0, int(X.shape[0]), step):
        diff = np.asarray(X[lo : lo + step], dtype=np.float64) - c[labels[lo : lo + step]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total
