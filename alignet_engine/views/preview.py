"""Import previews, summaries of a project's imported data, and import jobs (headless).

The GUI's import dialog shows what a file holds *before* anything is written: the format
guessed from the file, counts (items, triplets, participants, repeats; images per
category), the first rows, and the readers' :class:`~alignet_engine.errors.InputError`
messages (file, row, field). Everything here parses with the same readers the import
functions use, so a clean preview means the import will accept the file.

:func:`import_job` wraps the plain import functions of :mod:`alignet_engine.stages.imports`
in a job so the GUI can run them on its engine thread like every other write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.config import JUDGMENT_FORMATS
from alignet_engine.data import importers
from alignet_engine.data._io_common import looks_number, read_npy_header
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Message, Progress
from alignet_engine.stages import imports
from alignet_engine.stages.imports import read_judgments

log = logging.getLogger(__name__)

ImportKind = Literal["images", "judgments", "matrix", "features", "transform"]
IMPORT_KINDS: tuple[str, ...] = ImportKind.__args__  # type: ignore[attr-defined]
MATRIX_KINDS: tuple[str, ...] = ("similarity", "dissimilarity")

#: Rows of a file shown in a preview table.
PREVIEW_ROWS = 12
#: Columns of a numeric array shown in a preview table.
PREVIEW_COLUMNS = 8

_TEXT_JUDGMENT_SUFFIXES = (".tsv", ".txt")
_MATRIX_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")


# --------------------------------------------------------------------------- guessing
@dataclass(frozen=True)
class Guess:
    """What a dropped path probably is: the import ``kind``, a judgment ``fmt`` (or None)
    and a suggested ``name`` (the file or folder name without suffix)."""

    kind: str
    fmt: str | None = None
    name: str = ""


def _first_line(path: Path) -> str:
    try:
        with path.open("r", encoding="utf-8-sig", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line.strip()
    except OSError:
        pass
    return ""


def _tokens(line: str) -> list[str]:
    for sep in (",", "\t", ";"):
        if sep in line:
            return [t.strip().strip('"').lower() for t in line.split(sep)]
    return [t.lower() for t in line.split()]


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of a ``.npy`` without reading its data (None if unreadable)."""
    try:
        with path.open("rb") as f:
            shape, _fortran, dtype = read_npy_header(f)
    except (OSError, ValueError, EOFError):
        return None
    return shape, np.dtype(dtype)


def guess_import(path: str | Path) -> Guess:
    """Guess the import kind (and judgment format) of ``path`` from its suffix and header.

    A folder is an image set; ``.csv`` files are told apart by their header (``path`` →
    an image manifest, ``anchor`` → 2AFC, ``item_1`` / ``odd_position`` → odd-one-out, only
    numbers → a matrix); ``.npy`` by shape and dtype ((t, 3) integers → odd-one-out
    triplets, (n, n) or (s, n, n) → a matrix, else features); ``.npz`` by its keys. The guess
    is only a default: the user (or the reader's error) has the last word.
    """
    p = Path(path)
    name = p.name if p.is_dir() else p.name.split(".")[0]
    if p.is_dir():
        return Guess("images", None, name)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        toks = _tokens(_first_line(p))
        if "path" in toks:
            return Guess("images", None, name)
        if "anchor" in toks:
            return Guess("judgments", "twoafc-csv", name)
        if toks and all(looks_number(t) for t in toks) and len(toks) not in (4, 5):
            return Guess("matrix", None, name)
        return Guess("judgments", "oddone-csv", name)
    if suffix in _TEXT_JUDGMENT_SUFFIXES:
        toks = _tokens(_first_line(p))
        if toks and all(looks_number(t) for t in toks) and len(toks) not in (4, 5):
            return Guess("matrix", None, name)
        return Guess("judgments", "things-tsv", name)
    if suffix == ".json":
        return Guess("judgments", "materials-json", name)
    if suffix == ".npy":
        header = _npy_header(p)
        if header is not None:
            shape, dtype = header
            if len(shape) == 2 and shape[1] == 3 and dtype.kind in "iu":
                return Guess("judgments", "oddone-npy", name)
            if (len(shape) == 2 and shape[0] == shape[1]) or (
                len(shape) == 3 and shape[1] == shape[2]
            ):
                return Guess("matrix", None, name)
        return Guess("features", None, name)
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as data:
                keys = {k.lower() for k in data.files}
        except (OSError, ValueError):
            keys = set()
        if "weights" in keys or "w" in keys:
            return Guess("transform", None, name)
        if keys & {"triplets", "indices", "filenames", "sims", "similarities"}:
            return Guess("judgments", "alignet-npz", name)
        return Guess("features", None, name)
    if suffix in importers.FEATURE_SUFFIXES:
        return Guess("features", None, name)
    return Guess("judgments", None, name)


# --------------------------------------------------------------------------- previews
@dataclass(frozen=True)
class Preview:
    """What an import would write, for display.

    title : one line, e.g. ``"odd-one-out judgments (oddone-csv)"``.
    counts : (label, value) pairs, values already formatted.
    columns, rows : a small table (first rows of the file, or images per category).
    warnings : things worth knowing that do not stop the import.
    """

    kind: str
    title: str
    counts: tuple[tuple[str, str], ...]
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    warnings: tuple[str, ...] = ()

    def count(self, label: str) -> str | None:
        """The value of count ``label`` (None if absent)."""
        return dict(self.counts).get(label)


@dataclass(frozen=True)
class ImportRequest:
    """Everything one import needs; the dialog builds it, :func:`preview` and
    :func:`import_job` take it.

    kind : one of :data:`IMPORT_KINDS`.
    path : the file or folder.
    name : image-set name (images), judgments / matrix name, features label (features),
        transform name (transform).
    image_set : the image set the data refer to (all kinds but images).
    fmt : judgment format (judgments).
    matrix_kind : ``"similarity"`` or ``"dissimilarity"`` (matrix).
    key : array / dataset name inside npz, h5 or pt files (features).
    model : features label the transform applies to (transform).
    similarity : the representation's natural similarity, ``"dot"`` or ``"cosine"``, recorded
        with the features and used by evaluate (features; None: not recorded).
    """

    kind: str
    path: str
    name: str
    image_set: str = ""
    fmt: str | None = None
    matrix_kind: str = "similarity"
    key: str | None = None
    model: str = ""
    similarity: str | None = None

    def check(self) -> None:
        """Raise InputError for missing fields (named as the dialog labels them)."""
        if self.kind not in IMPORT_KINDS:
            raise InputError(f"unknown import kind {self.kind!r}; choose one of {IMPORT_KINDS}")
        if not self.path:
            raise InputError("choose a file or folder to import", field="path")
        if not Path(self.path).exists():
            raise InputError("no such file or folder", source=self.path)
        if not self.name.strip() or "/" in self.name:
            raise InputError("give a name without '/'", field="name")
        if self.kind != "images" and not self.image_set:
            raise InputError("choose the image set the data refer to", field="image set")
        if self.kind == "judgments" and self.fmt not in JUDGMENT_FORMATS:
            raise InputError(
                f"choose a judgment format ({', '.join(JUDGMENT_FORMATS)})", field="format"
            )
        if self.kind == "matrix" and self.matrix_kind not in MATRIX_KINDS:
            raise InputError("matrix kind must be similarity or dissimilarity", field="kind")
        if self.kind == "transform" and not self.model:
            raise InputError(
                "choose the features (model label) the transform applies to", field="model"
            )


def _fmt_int(n: int) -> str:
    return f"{int(n):,}"


def _fmt_float(x: float) -> str:
    return f"{float(x):.4g}"


def category_counts(images: ImageSet) -> list[tuple[str, int]]:
    """(category, number of images) in order of first appearance ("" for no category).

    Vectorised over the category codes: one entry per category, none per image.
    """
    codes, first, counts = np.unique(images.category_codes, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return [(images.category_names[int(codes[o])], int(counts[o])) for o in order]


def group_by_category(images: ImageSet) -> list[tuple[str, np.ndarray]]:
    """Item indices grouped by category, categories sorted by name ("" last).

    Returns ``(category, (m,) int64 item indices in item order)`` per category: arrays, so a
    1.28 M-image pool costs one argsort, not a Python int per image.
    """
    codes = images.category_codes
    order = np.argsort(codes, kind="stable").astype(np.int64)
    bounds = np.searchsorted(codes[order], np.arange(len(images.category_names) + 1))
    groups = [
        (name, order[bounds[c] : bounds[c + 1]])
        for c, name in enumerate(images.category_names)
        if bounds[c + 1] > bounds[c]
    ]
    return sorted(groups, key=lambda kv: (kv[0] == "", kv[0]))


def preview_images(source: str | Path) -> tuple[Preview, ImageSet]:
    """Read a folder of images (sub-folders = categories) or a manifest CSV."""
    p = Path(source)
    if p.is_dir():
        images = importers.read_image_folder(p)
        how = "folder"
    elif p.suffix.lower() == ".csv":
        images = importers.read_image_manifest(p)
        how = f"manifest ({importers.MANIFEST_SCHEMA})"
    else:
        raise InputError("expected a folder of images or a manifest .csv", source=p)
    cats = category_counts(images)
    named = [c for c, _n in cats if c]
    rows = tuple((c or "(none)", _fmt_int(n)) for c, n in cats)
    counts = (
        ("images", _fmt_int(len(images))),
        ("categories", _fmt_int(len(named))),
    )
    warnings = []
    if not named:
        warnings.append("no categories: the folder has no sub-folders (that is fine)")
    return (
        Preview(
            "images",
            f"image set from a {how}",
            counts,
            ("category", "images"),
            rows,
            tuple(warnings),
        ),
        images,
    )


def _item_label(i: int, images: ImageSet) -> str:
    if 0 <= i < len(images):
        stem = Path(images.paths[i]).name if images.paths[i] else ""
        cat = images.categories[i]
        label = "/".join(x for x in (cat, stem) if x)
        return f"{i} ({label})" if label else str(i)
    return str(i)


def judgment_counts(j: Judgments, *, repeats: bool = True) -> dict[str, int]:
    """Counts of a judgment set.

    Returns
    -------
    dict with ``triplets`` (rows), ``responses`` (rows, or the sum of votes),
    ``participants`` (distinct ids >= 0; 0 when unknown), ``items`` (distinct items in any
    triplet), ``repeated`` (distinct unordered triplets shown more than once) and
    ``repeat_rows`` (rows that belong to such triplets); with ``repeats=False`` the last two
    are not computed (-1): sorting millions of triplets takes a while.
    """
    t = np.asarray(j.triplets, dtype=np.int64)
    participants = np.unique(j.participant[j.participant >= 0]) if len(j) else np.empty(0)
    repeated = repeat_rows = -1
    items = int(np.unique(t).size) if len(t) else 0
    if len(t) and repeats:
        keys = np.sort(t, axis=1)
        _uniq, counts = np.unique(keys, axis=0, return_counts=True)
        repeated = int((counts > 1).sum())
        repeat_rows = int(counts[counts > 1].sum())
    elif repeats:
        repeated = repeat_rows = 0
    return {
        "triplets": len(j),
        "responses": j.n_responses,
        "participants": int(participants.size),
        "items": items,
        "repeated": repeated,
        "repeat_rows": repeat_rows,
    }


def preview_judgments(path: str | Path, fmt: str, images: ImageSet) -> Preview:
    """Parse judgments of format ``fmt`` about ``images`` and summarise them."""
    j = read_judgments(path, fmt, images)
    c = judgment_counts(j)
    counts = [
        ("triplets", _fmt_int(c["triplets"])),
        ("responses", _fmt_int(c["responses"])),
        ("participants", _fmt_int(c["participants"]) if c["participants"] else "unknown"),
        ("items", f"{_fmt_int(c['items'])} of {_fmt_int(len(images))}"),
        (
            "repeats",
            f"{_fmt_int(c['repeated'])} triplet{'' if c['repeated'] == 1 else 's'} "
            f"({_fmt_int(c['repeat_rows'])} rows)",
        ),
    ]
    if j.kind == "oddone":
        columns: tuple[str, ...] = ("row", "item", "item", "odd one out", "participant")
    else:
        columns = ("row", "anchor", "chosen", "other", "participant")
    if j.votes is not None:
        columns = (*columns, "votes")
    rows = []
    for r in range(min(PREVIEW_ROWS, len(j))):
        a, b, o = (int(x) for x in j.triplets[r])
        part = int(j.participant[r])
        row = [str(r + 1), _item_label(a, images), _item_label(b, images), _item_label(o, images)]
        row.append(str(part) if part >= 0 else "–")
        if j.votes is not None:
            row.append(f"{int(j.votes[r, 0])}:{int(j.votes[r, 1])}")
        rows.append(tuple(row))
    warnings = []
    if c["items"] < len(images):
        warnings.append(f"{len(images) - c['items']} images of the set appear in no triplet")
    if j.types is not None:
        kinds = sorted({str(x) for x in j.types})
        counts.append(("types", ", ".join(kinds[:6]) + (" …" if len(kinds) > 6 else "")))
    source = j.meta.get("source", "")
    if "not human" in source:
        warnings.append(source)
    what = "odd-one-out" if j.kind == "oddone" else "two-alternative"
    return Preview(
        "judgments",
        f"{what} judgments ({fmt})",
        tuple(counts),
        columns,
        tuple(rows),
        tuple(warnings),
    )


def _array_rows(a: np.ndarray) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    cols = min(PREVIEW_COLUMNS, a.shape[1])
    columns = ("row", *(str(k) for k in range(cols)))
    if a.shape[1] > cols:
        columns = (*columns, "…")
    rows = []
    for r in range(min(PREVIEW_ROWS, a.shape[0])):
        row = [str(r + 1), *(_fmt_float(v) for v in a[r, :cols])]
        if a.shape[1] > cols:
            row.append("…")
        rows.append(tuple(row))
    return columns, tuple(rows)


def preview_matrix(path: str | Path, n_items: int, kind: str = "similarity") -> Preview:
    """Parse an (n, n) or (subjects, n, n) matrix for an image set of ``n_items``."""
    m = importers.read_matrix(path, n_items)
    subjects = 1 if m.ndim == 2 else int(m.shape[0])
    first = m if m.ndim == 2 else m[0]
    counts = (
        ("shape", " × ".join(str(s) for s in m.shape)),
        ("subjects", _fmt_int(subjects)),
        ("items", _fmt_int(first.shape[0])),
        ("values", f"{_fmt_float(np.min(m))} … {_fmt_float(np.max(m))}"),
    )
    columns, rows = _array_rows(first)
    return Preview("matrix", f"{kind} matrix", counts, columns, rows)


def preview_features(path: str | Path, n_items: int | None, key: str | None = None) -> Preview:
    """Parse precomputed features; ``n_items`` None when the image set does not exist yet."""
    X = importers.read_features(path, n_items, key=key)
    nan_rows = int(np.isnan(X).any(axis=1).sum()) if X.dtype.kind == "f" else 0
    counts = [
        ("items", _fmt_int(X.shape[0])),
        ("dimensions", _fmt_int(X.shape[1])),
    ]
    warnings = []
    if nan_rows:
        counts.append(("rows with NaN", _fmt_int(nan_rows)))
        warnings.append(f"{nan_rows} rows hold NaN; later stages will refuse them")
    if n_items is None:
        warnings.append(
            f"a new image set of {X.shape[0]} items without image files will be created"
        )
    columns, rows = _array_rows(X)
    return Preview(
        "features", "precomputed features", tuple(counts), columns, rows, tuple(warnings)
    )


def preview_transform(path: str | Path, feature_dim: int | None) -> Preview:
    """Read a transform ``.npz``; ``feature_dim`` (if known) must match its input size."""
    # imported here, not above: it imports torch, which previewing other files never needs
    from alignet_engine.align.transform import AffineTransform

    est = AffineTransform.load_npz(path)
    dim_in, dim_out = (int(s) for s in est.W_.shape)
    if feature_dim is not None and dim_in != feature_dim:
        raise InputError(
            f"the transform is {dim_in}-dimensional but the chosen features have "
            f"{feature_dim} dimensions",
            source=path,
            field="weights",
        )
    counts = (
        ("weights", f"{dim_in} × {dim_out}"),
        ("similarity", str(est.similarity)),
        ("standardize", str(est.standardize)),
        ("temperature", _fmt_float(est.temperature_)),
    )
    return Preview("transform", "affine transform", counts)


@dataclass(frozen=True)
class ProjectView:
    """What a preview needs from the project, read beforehand (so the preview itself can run
    on any thread without touching the project file).

    imagesets : name → ImageSet (only the one the request refers to is needed).
    feature_dims : features label → dimension, of the request's image set.
    existing : names already used by the request's kind (a re-import replaces them).
    """

    imagesets: dict[str, ImageSet]
    feature_dims: dict[str, int]
    existing: tuple[str, ...] = ()


def project_view(
    project: Any, request: ImportRequest, info: dict[str, Any] | None = None
) -> ProjectView:
    """Read the (small) parts of ``project`` that previewing ``request`` needs (``info``:
    a cached :meth:`Project.info`, read when needed and not given)."""
    sets = {}
    names = project.names("imagesets")
    if request.image_set in names:
        sets[request.image_set] = project.imageset(request.image_set)
    dims = {}
    prefix = f"features:{request.image_set}:"
    runs = (info or project.info())["runs"] if request.kind == "transform" else ()
    for run in runs:
        if run["slot"].startswith(prefix) and "dim" in run["summary"]:
            dims[run["slot"][len(prefix) :]] = int(run["summary"]["dim"])
    existing: Sequence[str] = ()
    if request.kind == "images":
        existing = names
    elif request.kind in ("judgments", "matrix"):
        existing = project.names("judgments" if request.kind == "judgments" else "matrices")
    return ProjectView(sets, dims, tuple(existing))


def preview(request: ImportRequest, view: ProjectView) -> Preview:
    """Parse ``request``'s file with the importers' readers and summarise it.

    Raises
    ------
    InputError
        Whatever the reader finds wrong (file, row and field named), or a missing field.
    """
    request.check()
    images = view.imagesets.get(request.image_set)
    if request.kind != "images" and request.kind != "features" and images is None:
        raise InputError(
            f"there is no image set '{request.image_set}'; import its images first",
            field="image set",
        )
    if request.kind == "images":
        result, _images = preview_images(request.path)
    elif request.kind == "judgments":
        assert images is not None and request.fmt is not None
        result = preview_judgments(request.path, request.fmt, images)
    elif request.kind == "matrix":
        assert images is not None
        result = preview_matrix(request.path, len(images), request.matrix_kind)
    elif request.kind == "features":
        result = preview_features(
            request.path, len(images) if images is not None else None, request.key or None
        )
    else:
        if request.model not in view.feature_dims:
            raise InputError(
                f"there are no features '{request.model}' of image set '{request.image_set}'; "
                "extract or import them first",
                field="model",
            )
        result = preview_transform(request.path, view.feature_dims[request.model])
    if request.name in view.existing:
        result = dataclasses.replace(
            result,
            warnings=(
                *result.warnings,
                f"'{request.name}' exists already; importing replaces it",
            ),
        )
    return result


# --------------------------------------------------------------------------- import job
def import_job(
    project: Any, request: ImportRequest, control: JobControl | None = None
) -> Job[dict[str, Any]]:
    """Write ``request`` into ``project`` (the readers validate everything first).

    Returns a small JSON-able dict of what was written (the CLI's answer for the same
    import). The import functions are quick and not interruptible, so the job checks for
    cancellation only before it starts.
    """
    control = control or JobControl()
    request.check()
    control.check()
    yield Progress("import", 0, 0, f"{request.kind}: {Path(request.path).name}")
    out: dict[str, Any] = {"kind": request.kind, "name": request.name}
    if request.kind == "images":
        images = imports.import_images(project, request.name, request.path)
        out["n_images"] = len(images)
    elif request.kind == "judgments":
        assert request.fmt is not None
        j = imports.import_judgments(
            project, request.name, request.path, request.fmt, image_set=request.image_set
        )
        out["n_triplets"] = len(j)
    elif request.kind == "matrix":
        m = imports.import_matrix(
            project,
            request.name,
            request.path,
            image_set=request.image_set,
            kind=request.matrix_kind,  # type: ignore[arg-type]
        )
        out["shape"] = list(m.shape)
    elif request.kind == "features":
        out["run"] = "features/" + imports.import_features(
            project,
            request.path,
            image_set=request.image_set,
            label=request.name,
            key=request.key or None,
            similarity=request.similarity or None,  # type: ignore[arg-type]
        )
    else:
        out["run"] = "transform/" + imports.import_transform(
            project,
            request.path,
            image_set=request.image_set,
            model=request.model,
            name=request.name,
        )
    yield Message("import", f"imported {request.kind} '{request.name}': {json.dumps(out)}")
    return out


# --------------------------------------------------------------------------- data summary
@dataclass(frozen=True)
class DataRow:
    """One line of the data page's table: ``kind`` (image set, judgments, matrix,
    features), ``name``, the image set it refers to, and formatted ``details``."""

    kind: str
    name: str
    image_set: str
    details: str
    tooltip: str = ""


def summarize_data(project: Any, info: dict[str, Any] | None = None) -> list[DataRow]:
    """Everything imported into ``project`` (and every stored features run), one row each.

    Reads the project (the judgments' arrays for participant counts), so call it when the
    project changes, not per repaint.
    """
    info = info if info is not None else project.info()
    rows: list[DataRow] = []
    for name in project.names("imagesets"):
        images = project.imageset(name)
        cats = [c for c, _n in category_counts(images) if c]
        no_files = bool(len(images)) and not images.path_bytes.size
        details = f"{_fmt_int(len(images))} images, {len(cats)} categories"
        if no_files:
            details = f"{_fmt_int(len(images))} items without image files"
        tip = ", ".join(f"{c}: {n}" for c, n in category_counts(images)[:30] if c)
        rows.append(DataRow("image set", name, name, details, tip))
    for name in project.names("judgments"):
        j, image_set = project.judgments(name)
        c = judgment_counts(j, repeats=False)
        what = "odd-one-out" if j.kind == "oddone" else "2AFC"
        parts = [what, f"{_fmt_int(c['triplets'])} triplets"]
        if c["responses"] != c["triplets"]:
            parts.append(f"{_fmt_int(c['responses'])} responses")
        parts.append(
            f"{_fmt_int(c['participants'])} participants"
            if c["participants"]
            else "participants unknown"
        )
        if j.simulated:
            parts.append("simulated")
        tip = "; ".join(f"{k}: {v}" for k, v in j.meta.items())
        rows.append(DataRow("judgments", name, image_set, ", ".join(parts), tip))
    for name in project.names("matrices"):
        m, kind, image_set = project.matrix(name)
        shape = " × ".join(str(s) for s in m.shape)
        rows.append(DataRow("matrix", name, image_set, f"{kind}, {shape}"))
    for run in info["runs"]:
        slot = run["slot"]
        if not slot.startswith("features:") or info["current"].get(slot) != run["run"]:
            continue
        _stage, image_set, label = slot.split(":", 2)
        s = run["summary"]
        details = f"{_fmt_int(s.get('n', 0))} × {_fmt_int(s.get('dim', 0))}"
        rows.append(DataRow("features", label, image_set, details, run["run"]))
    return rows
