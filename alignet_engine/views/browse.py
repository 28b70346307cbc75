"""Browsing results: lazy triplet views, triplet filters, and the pool map of the clusters page.

Everything the Triplets and Clusters pages show is computed here, so the GUI only indexes and
formats. Two kinds of triplet *sources* are browsed the same way:

* **pool triplets** of a triplets run (:class:`PoolTriplets`): up to tens of millions of rows
  stored in the HDF5 project. The view keeps the file open read-only and reads row slices on
  demand, so opening it costs a few reads whatever the run's size, and a filter walks the rows
  in chunks (:func:`filter_triplets`) with bounded memory.
* **human judgment sets** of odd-one-out triplets (:class:`JudgmentTriplets`): the human's
  choice, the empirical choice distribution where a triplet was answered several times, and the
  teacher's (aligned) probabilities computed from the stored features and transform. These sets
  are small enough (THINGS: 4.7 M rows) to hold in memory.

Conventions. A row's items are ``items[r] = (a, b, c)``. ``odd_probs[r, i]`` is the teacher's
probability that item ``i`` of the row is the odd one out. Stored pool similarities are logits
``[s01, s02, s12]`` (triplets.py) and :func:`~alignet_engine.align.triplet_sampling.
teacher_probabilities` gives ``p[:, 0]`` = P(pair (0, 1) most similar) = P(item 2 odd), so
``odd_probs = p[:, ::-1]``. Entropies are in bits (at most log2 3 ≈ 1.585).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from alignet_engine.align.triplet_sampling import teacher_probabilities, triplet_similarities
from alignet_engine.config import ClusterConfig
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.store import ArrayReader, Project

log = logging.getLogger(__name__)

TRIPLET_SLOT = "triplets"
CLUSTER_SLOT = "clusters"
#: Rows a filter reads and tests at once: ~40 MB of temporaries per 1 M rows, whatever n is.
FILTER_CHUNK = 1 << 20
#: The largest entropy of a three-way choice, in bits.
MAX_ENTROPY = float(np.log2(3.0))
#: Rows closer than this are read as one slice rather than separately (a chunk of the stored
#: (n, 3) int64 triplets is ~43 k rows, so nearby rows share a decompressed chunk anyway).
_GAP = 4096

SourceKind = Literal["pool", "judgments"]


# --------------------------------------------------------------------------------------------
# sources and rows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TripletSource:
    """Something the inspector can browse.

    kind : ``"pool"`` (a triplets run; ``name`` is its ref ``triplets/<id>``) or
        ``"judgments"`` (an imported odd-one-out set; ``name`` is its name).
    label : what the source chooser shows. n : rows. image_set : the items' image set.
    """

    kind: SourceKind
    name: str
    label: str
    n: int
    image_set: str


@dataclass(frozen=True)
class TripletRows:
    """A block of rows of a triplet view, everything per row already computed.

    rows : (k,) int64 row numbers in the source. items : (k, 3) int64 item ids.
    odd_probs : (k, 3) float64, the teacher's P(item i of the row is the odd one out).
    entropy : (k,) float64 bits of the teacher's choice distribution.
    teacher_odd : (k,) int64 position (0..2) of the teacher's odd one out.
    is_val : (k,) bool validation rows (pool triplets; False for judgments).
    clusters : (k, 3) int64 each item's cluster in the current clusters run, -1 if none.
    human_odd : (k,) int64 position of the human's odd one, -1 without human data.
    human_probs : (k, 3) float64 the human choice distribution over the row's items (all
        responses to the same three items, in any order), NaN without human data.
    agreement : (k,) float64 fraction of those responses that chose this row's odd one (NaN
        without human data). repeats : (k,) int64 responses to the same three items.
    kind : (k,) str the row's strategy (pool) or triplet type (judgments), "" if none.
    """

    rows: np.ndarray
    items: np.ndarray
    odd_probs: np.ndarray
    entropy: np.ndarray
    teacher_odd: np.ndarray
    is_val: np.ndarray
    clusters: np.ndarray
    human_odd: np.ndarray
    human_probs: np.ndarray
    agreement: np.ndarray
    repeats: np.ndarray
    kind: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def odd_probabilities(sims: np.ndarray) -> np.ndarray:
    """(m, 3) float64 P(item i is the odd one out) from logits ``[s01, s02, s12]``."""
    p = teacher_probabilities(np.asarray(sims, dtype=np.float64))
    return np.ascontiguousarray(p[:, ::-1])  # pair (1,2) similar ⇔ item 0 odd, etc.


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    """(m,) entropy in bits of each row of (m, 3) probabilities (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.maximum(-terms.sum(axis=1), 0.0)


def _current_labels(project: Project, image_set: str, n_items: int) -> tuple[np.ndarray, str]:
    """Cluster id per item of ``image_set`` from the current clusters run (-1s if it has none)."""
    ref = project.current(CLUSTER_SLOT)
    if ref is not None:
        run = project.run(ref, arrays=False)
        if run.params.get("image_set") == image_set:
            with project.open_array(ref, "labels") as ds:
                labels = np.asarray(ds[()], dtype=np.int64)
            if labels.shape == (n_items,):
                return labels, ref
    return np.full(n_items, -1, dtype=np.int64), ""


def triplet_sources(project: Project) -> list[TripletSource]:
    """The current triplets run (if any) and every odd-one-out judgment set, in that order."""
    out: list[TripletSource] = []
    ref = project.current(TRIPLET_SLOT)
    if ref is not None:
        run = project.run(ref, arrays=False)
        n = int(run.summary.get("n_train", 0)) + int(run.summary.get("n_val", 0))
        strategy = run.params.get("strategy", "")
        label = f"Pool triplets ({strategy}, {n:,} rows)"
        out.append(TripletSource("pool", ref, label, n, str(run.summary.get("image_set", ""))))
    with project.reading() as f:
        group = f["data"].get("judgments", {})
        found = []
        for name in sorted(group):
            g = group[name]
            kind = json.loads(g.attrs.get("kind", '""'))
            image_set = json.loads(g.attrs.get("image_set", '""'))
            found.append((name, kind, image_set))
    for name, kind, image_set in found:
        if kind == "oddone":
            n = project.array_shape(f"data/judgments/{name}", "triplets")[0]
            out.append(
                TripletSource("judgments", name, f"Human: {name} ({n:,} rows)", n, image_set)
            )
    return out


class TripletView:
    """Rows of one triplet source, read on demand (see :class:`PoolTriplets`,
    :class:`JudgmentTriplets`).

    Attributes: ``source``; ``n`` rows; ``paths`` / ``categories`` (n_items,) of its image set;
    ``item_clusters`` (n_items,) int64 (-1 without a matching clusters run); ``n_clusters``;
    ``kinds`` the strategy or type names a filter can select; ``has_human``.
    """

    source: TripletSource
    n: int
    paths: Sequence[str]
    categories: Sequence[str]
    item_clusters: np.ndarray
    n_clusters: int
    kinds: tuple[str, ...]
    has_human: bool = False
    is_split: bool = False

    def rows(self, start: int, stop: int) -> TripletRows:
        """Rows ``start:stop`` (clipped to the view)."""
        start, stop = max(0, int(start)), min(self.n, int(stop))
        return self._read(np.arange(start, max(start, stop), dtype=np.int64))

    def take(self, indices: np.ndarray) -> TripletRows:
        """The rows with these numbers (any order; each must be in [0, n))."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise InputError(f"row numbers must be in [0, {self.n})", field="rows")
        return self._read(idx)

    def _read(self, idx: np.ndarray) -> TripletRows:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release files the view holds open."""


class PoolTriplets(TripletView):
    """The rows of a triplets run, read lazily from the project file.

    The run's arrays stay open read-only for the view's life (side files never change,
    and writes replace the index atomically, so the view keeps reading the run it opened).
    """

    def __init__(self, project: Project, ref: str = TRIPLET_SLOT) -> None:
        run = project.run(ref, arrays=False)
        self.ref = f"{run.stage}/{run.run_id}"
        self.path = project.path
        image_set = str(run.summary.get("image_set", ""))
        images = project.imageset(image_set)
        self.paths, self.categories = images.paths, images.categories
        self.strategy = str(run.params.get("strategy", ""))
        self.kinds = (self.strategy,) if self.strategy else ()
        self.item_clusters, self.clusters_ref = _current_labels(project, image_set, len(self.paths))
        self.n_clusters = int(self.item_clusters.max()) + 1 if self.item_clusters.size else 0
        self._project = project
        self._reader: ArrayReader | None = None
        g = self._group()
        self.n = int(g["triplets"].shape[0])
        self.is_split = "is_val" in g
        self.source = TripletSource(
            "pool", self.ref, f"Pool triplets ({self.strategy}, {self.n:,} rows)", self.n, image_set
        )

    def _group(self) -> ArrayReader:
        if self._reader is None:
            self._reader = self._project.array_reader(self.ref)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read_arrays(self, idx: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Datasets ``names`` at rows ``idx``: sorted, grouped into nearby runs, one slice each."""
        g = self._group()
        out = {
            name: np.empty((idx.size, *g[name].shape[1:]), dtype=g[name].dtype) for name in names
        }
        if idx.size == 0:
            return out
        order = np.argsort(idx, kind="stable")
        s = idx[order]
        breaks = np.flatnonzero(np.diff(s) > _GAP) + 1
        for part_pos in np.split(np.arange(s.size), breaks):
            lo, hi = int(s[part_pos[0]]), int(s[part_pos[-1]]) + 1
            for name in names:
                block = g[name][lo:hi]
                out[name][order[part_pos]] = block[s[part_pos] - lo]
        return out

    def _read(self, idx: np.ndarray) -> TripletRows:
        names = ("triplets", "sims", "is_val") if self.is_split else ("triplets", "sims")
        a = self._read_arrays(idx, names)
        items = a["triplets"].astype(np.int64)
        probs = odd_probabilities(a["sims"])
        k = idx.size
        return TripletRows(
            rows=idx,
            items=items,
            odd_probs=probs,
            entropy=entropy_bits(probs),
            teacher_odd=probs.argmax(axis=1) if k else np.zeros(0, np.int64),
            is_val=a["is_val"].astype(bool) if self.is_split else np.zeros(k, bool),
            clusters=self.item_clusters[items] if k else np.zeros((0, 3), np.int64),
            human_odd=np.full(k, -1, dtype=np.int64),
            human_probs=np.full((k, 3), np.nan),
            agreement=np.full(k, np.nan),
            repeats=np.zeros(k, dtype=np.int64),
            kind=np.full(k, self.strategy, dtype=object),
        )

    def chunks(
        self, names: tuple[str, ...], chunk: int = FILTER_CHUNK
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(start, {name: rows start:start+chunk})`` over the whole run, from a fresh handle
        (so a filter on the engine thread never shares the GUI's file object)."""
        with self._project.array_reader(self.ref) as g:
            for start in range(0, self.n, chunk):
                yield start, {name: g[name][start : start + chunk] for name in names}


class JudgmentTriplets(TripletView):
    """An imported odd-one-out judgment set with the teacher's choices, held in memory.

    Parameters
    ----------
    project : the project. name : the judgment set.
    model, transform : the teacher: features of the set's images by ``model`` through the
        fitted transform ``transform`` (None: raw features, cosine). Defaults: the current
        clusters run's teacher, else the first fitted transform fitted on this image set.
    """

    def __init__(
        self,
        project: Project,
        name: str,
        *,
        model: str | None = None,
        transform: str | None = None,
    ) -> None:
        # imported here: stages.clusters / transform import torch (~1.5 s), which pool
        # browsing never needs
        from alignet_engine.stages.clusters import teacher_representation
        from alignet_engine.stages.transform import stored_transform, transform_similarity

        j, image_set = project.judgments(name)
        if j.kind != "oddone":
            raise InputError(
                f"judgments '{name}' are {j.kind} triplets; the inspector shows odd-one-out sets",
                field="judgments",
            )
        if model is None:
            model, transform = _default_teacher(project, image_set)
        images = project.imageset(image_set)
        self.paths, self.categories = images.paths, images.categories
        self.model, self.transform = model, transform
        Z, _ = teacher_representation(project, image_set, model, transform)
        metric = transform_similarity(project, transform)
        temperature = 1.0
        if transform is not None:
            temperature = float(stored_transform(project, transform)[0].temperature_)
        items = j.triplets.astype(np.int64)
        sims = triplet_similarities(Z, items, similarity=metric, device="cpu") * temperature
        self.items = items
        self.odd_probs = odd_probabilities(sims)
        self.entropy = entropy_bits(self.odd_probs)
        self.teacher_odd = self.odd_probs.argmax(axis=1)
        self.human_probs, self.repeats = human_choice_distributions(items)
        self.agreement = self.human_probs[:, 2].copy()  # the human's odd one is last
        self.types = (
            np.asarray(j.types, dtype=object)
            if j.types is not None
            else np.full(len(j), "", dtype=object)
        )
        self.kinds = tuple(sorted({str(t) for t in self.types} - {""}))
        self.item_clusters, self.clusters_ref = _current_labels(project, image_set, len(self.paths))
        self.n_clusters = int(self.item_clusters.max()) + 1 if self.item_clusters.size else 0
        self.n = len(j)
        self.has_human = True
        self.is_split = False
        teacher = model + (f" + transform '{transform}'" if transform else " (raw)")
        self.source = TripletSource(
            "judgments", name, f"Human: {name} ({self.n:,} rows)", self.n, image_set
        )
        self.teacher = teacher

    def _read(self, idx: np.ndarray) -> TripletRows:
        items = self.items[idx]
        return TripletRows(
            rows=idx,
            items=items,
            odd_probs=self.odd_probs[idx],
            entropy=self.entropy[idx],
            teacher_odd=self.teacher_odd[idx],
            is_val=np.zeros(idx.size, dtype=bool),
            clusters=self.item_clusters[items],
            human_odd=np.full(idx.size, 2, dtype=np.int64),
            human_probs=self.human_probs[idx],
            agreement=self.agreement[idx],
            repeats=self.repeats[idx],
            kind=self.types[idx],
        )


def _default_teacher(project: Project, image_set: str) -> tuple[str, str | None]:
    """(model, transform) of the teacher to compare with judgments on ``image_set``."""
    slots = project.slots()
    transforms = sorted(s.split(":", 1)[1] for s in slots if s.startswith("transform:"))
    ref = slots.get(CLUSTER_SLOT)
    if ref is not None:
        cc = ClusterConfig.from_dict(project.run(ref, arrays=False).params)
        if f"features:{image_set}:{cc.model}" in slots:
            return cc.model, cc.transform
    for name in transforms:
        params = project.run(f"transform:{name}", arrays=False).params
        if f"features:{image_set}:{params.get('model')}" in slots:
            return str(params["model"]), name
    models = [s.split(":", 2)[2] for s in slots if s.startswith(f"features:{image_set}:")]
    if not models:
        raise InputError(
            f"no features of image set '{image_set}' yet: extract them (Models & features) to "
            "compare the teacher with these judgments",
            field="judgments",
        )
    return models[0], None


def human_choice_distributions(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical odd-one-out distributions of repeated triplets.

    Parameters
    ----------
    items : (m, 3) int64 odd-one-out rows ``(i, j, odd)`` (odd last), one response each.

    Returns
    -------
    probs : (m, 3) float64, for each row the fraction of all responses to the same three items
        (in any order) that chose the row's item 0, 1, 2 as the odd one.
    repeats : (m,) int64 responses to the same three items (1 for a triplet asked once).
    """
    t = np.asarray(items, dtype=np.int64)
    m = t.shape[0]
    if m == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    key = np.sort(t, axis=1)
    _, group, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    # votes per (triplet, chosen item): encode as one int64 key and count
    n_items = int(t.max()) + 1
    vote_key = group * n_items + t[:, 2]
    vkeys, vcounts = np.unique(vote_key, return_counts=True)
    probs = np.empty((m, 3), dtype=np.float64)
    for col in range(3):
        q = group * n_items + t[:, col]
        pos = np.searchsorted(vkeys, q)
        pos_c = np.minimum(pos, vkeys.size - 1)
        hit = vkeys[pos_c] == q
        probs[:, col] = np.where(hit, vcounts[pos_c], 0) / counts[group]
    return probs, counts[group].astype(np.int64)


def open_source(project: Project, source: TripletSource) -> TripletView:
    """The view of ``source`` (pool triplets are lazy; judgments are computed now)."""
    if source.kind == "pool":
        return PoolTriplets(project, source.name)
    return JudgmentTriplets(project, source.name)


def open_source_job(
    project: Project, source: TripletSource, control: JobControl | None = None
) -> Job[TripletView]:
    """:func:`open_source` as a job (a large judgment set takes seconds to score)."""
    control = control or JobControl()
    yield Progress("browse", 0, 1, f"opening {source.label}")
    control.check()
    view = open_source(project, source)
    yield Progress("browse", 1, 1, f"opened {source.label}")
    return view


# --------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TripletFilter:
    """Which rows to keep; every condition given must hold.

    entropy_min, entropy_max : bits (None: no bound). cluster : keep rows with an item in this
    cluster (``cluster_of="any"``) or whose teacher's odd one is in it (``"odd"``).
    kind : a strategy (pool) or triplet type (judgments). split : ``"train"`` / ``"val"``.
    disagreements : only rows where the human's odd one differs from the teacher's.
    """

    entropy_min: float | None = None
    entropy_max: float | None = None
    cluster: int | None = None
    cluster_of: Literal["any", "odd"] = "any"
    kind: str | None = None
    split: Literal["all", "train", "val"] = "all"
    disagreements: bool = False

    @property
    def empty(self) -> bool:
        """True when the filter keeps every row."""
        return self == TripletFilter(cluster_of=self.cluster_of)


@dataclass(frozen=True)
class FilterResult:
    """indices : (k,) int64 ascending row numbers kept (None: all rows). n : the view's rows."""

    filter: TripletFilter
    indices: np.ndarray | None
    n: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.n if self.indices is None else int(self.indices.size)


def check_filter(view: TripletView, spec: TripletFilter) -> None:
    if spec.disagreements and not view.has_human:
        raise InputError(
            "'disagreements only' needs human judgments: choose a human judgment set as the source",
            field="disagreements",
        )
    if spec.cluster is not None and view.n_clusters == 0:
        raise InputError(
            f"no clusters run on image set '{view.source.image_set}': cluster the pool first, "
            "or clear the cluster filter",
            field="cluster",
        )
    if spec.split != "all" and not view.is_split:
        raise InputError("this source has no train / validation split", field="split")
    for name in ("entropy_min", "entropy_max"):
        v = getattr(spec, name)
        if v is not None and not np.isfinite(v):
            raise InputError(f"must be a number, got {v!r}", field=name)
    if (
        spec.entropy_min is not None
        and spec.entropy_max is not None
        and spec.entropy_min > spec.entropy_max
    ):
        raise InputError(
            f"the entropy range is empty ({spec.entropy_min:g} > {spec.entropy_max:g})",
            field="entropy",
        )


def _mask(
    spec: TripletFilter,
    view: TripletView,
    *,
    items: np.ndarray | None,
    sims_or_probs: np.ndarray | None,
    is_val: np.ndarray | None,
    kind: np.ndarray | None,
    teacher_odd: np.ndarray | None,
    human_odd: np.ndarray | None,
    m: int,
) -> np.ndarray:
    keep = np.ones(m, dtype=bool)
    if spec.cluster_of == "odd":
        assert sims_or_probs is not None
    if spec.entropy_min is not None or spec.entropy_max is not None:
        assert sims_or_probs is not None
        h = entropy_bits(sims_or_probs)
        if spec.entropy_min is not None:
            keep &= h >= spec.entropy_min
        if spec.entropy_max is not None:
            keep &= h <= spec.entropy_max
    if spec.cluster is not None:
        assert items is not None
        if spec.cluster_of == "odd":
            assert teacher_odd is not None
            odd_items = np.take_along_axis(items, teacher_odd[:, None], axis=1)[:, 0]
            keep &= view.item_clusters[odd_items] == spec.cluster
        else:
            keep &= (view.item_clusters[items] == spec.cluster).any(axis=1)
    if spec.split != "all":
        assert is_val is not None
        keep &= is_val if spec.split == "val" else ~is_val
    if spec.kind is not None:
        assert kind is not None
        keep &= kind == spec.kind
    if spec.disagreements:
        assert teacher_odd is not None and human_odd is not None
        keep &= teacher_odd != human_odd
    return keep


def filter_triplets(
    view: TripletView,
    spec: TripletFilter,
    *,
    chunk: int = FILTER_CHUNK,
    control: JobControl | None = None,
) -> Job[FilterResult]:
    """The rows of ``view`` that ``spec`` keeps, computed ``chunk`` rows at a time.

    Yields :class:`Progress` after each chunk (cancel / pause between chunks). Memory: the
    chunk's arrays (~40 bytes a row) plus the kept row numbers (int64). A filter that keeps
    everything returns ``indices=None`` without reading anything.
    """
    control = control or JobControl()
    check_filter(view, spec)
    if spec.empty:
        return FilterResult(spec, None, view.n)
    if isinstance(view, PoolTriplets):
        if spec.kind is not None and spec.kind != view.strategy:
            # the whole run has one strategy: all rows or none
            return FilterResult(spec, np.zeros(0, dtype=np.int64), view.n)
        spec_rows = spec if spec.kind is None else TripletFilter(**{**spec.__dict__, "kind": None})
        names: list[str] = []
        if spec.cluster is not None:
            names.append("triplets")
        if spec.entropy_min is not None or spec.entropy_max is not None or spec.cluster_of == "odd":
            names.append("sims")
        if spec.split != "all":
            names.append("is_val")
        parts: list[np.ndarray] = []
        for start, arrays in view.chunks(tuple(dict.fromkeys(names)), chunk):
            control.check()
            m = next(iter(arrays.values())).shape[0] if arrays else min(chunk, view.n - start)
            probs = odd_probabilities(arrays["sims"]) if "sims" in arrays else None
            keep = _mask(
                spec_rows,
                view,
                items=arrays.get("triplets"),
                sims_or_probs=probs,
                is_val=arrays.get("is_val"),
                kind=None,
                teacher_odd=probs.argmax(axis=1) if probs is not None else None,
                human_odd=None,
                m=m,
            )
            parts.append(np.flatnonzero(keep).astype(np.int64) + start)
            done = min(view.n, start + chunk)
            yield Progress("browse", done, view.n, f"filtering triplets: {done:,}/{view.n:,}")
        indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return FilterResult(spec, indices, view.n)
    assert isinstance(view, JudgmentTriplets)
    parts = []
    for start in range(0, view.n, chunk):
        control.check()
        sl = slice(start, start + chunk)
        keep = _mask(
            spec,
            view,
            items=view.items[sl],
            sims_or_probs=view.odd_probs[sl],
            is_val=None,
            kind=view.types[sl],
            teacher_odd=view.teacher_odd[sl],
            human_odd=np.full(min(chunk, view.n - start), 2, dtype=np.int64),
            m=min(chunk, view.n - start),
        )
        parts.append(np.flatnonzero(keep).astype(np.int64) + start)
        done = min(view.n, start + chunk)
        yield Progress("browse", done, view.n, f"filtering triplets: {done:,}/{view.n:,}")
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return FilterResult(spec, indices, view.n)


def judgment_summary(view: JudgmentTriplets) -> dict[str, Any]:
    """Teacher–human agreement of a judgment set: overall, and the repeated-triplet ceiling."""
    agree = view.teacher_odd == 2
    repeated = view.repeats > 1
    return {
        "n": view.n,
        "teacher_agreement": float(agree.mean()) if view.n else float("nan"),
        "n_disagreements": int((~agree).sum()),
        "n_repeated_rows": int(repeated.sum()),
        "human_agreement": float(view.agreement[repeated].mean()) if repeated.any() else None,
        "teacher": view.teacher,
    }


# --------------------------------------------------------------------------------------------
# clusters page
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterOverview:
    """What the clusters page shows of a clusters run (all small; read on any thread).

    ref : the run. k : clusters. labels : (n,) int64. sizes : (k,) int64.
    nearest : k lists of item ids, most typical (closest to the centroid) first.
    diagnostics : the run's ``{"k", "inertia", "silhouette", "best_k", ...}`` or None.
    paths, categories : (n,) of the clustered image set. params : the run's ClusterConfig dict.
    """

    ref: str
    k: int
    labels: np.ndarray
    sizes: np.ndarray
    nearest: tuple[tuple[int, ...], ...]
    diagnostics: dict[str, Any] | None
    paths: Sequence[str]
    categories: Sequence[str]
    params: dict[str, Any]


def cluster_overview(project: Project, ref: str = CLUSTER_SLOT) -> ClusterOverview:
    """The :class:`ClusterOverview` of a clusters run (default: the current one)."""
    run = project.run(ref, arrays=False)
    full_ref = f"{run.stage}/{run.run_id}"
    with project.open_array(full_ref, "labels") as ds:
        labels = np.asarray(ds[()], dtype=np.int64)
    images = project.imageset(run.params["image_set"])
    k = int(run.summary.get("k", run.params.get("k", labels.max() + 1)))
    summaries = sorted(run.summary.get("clusters", []), key=lambda c: c["cluster"])
    return ClusterOverview(
        ref=full_ref,
        k=k,
        labels=labels,
        sizes=np.bincount(labels, minlength=k).astype(np.int64),
        nearest=tuple(tuple(int(i) for i in c.get("nearest", [])) for c in summaries),
        diagnostics=run.summary.get("diagnostics"),
        paths=images.paths,
        categories=images.categories,
        params=dict(run.params),
    )


#: Points the pool map draws at most: a scatter of a million points would stall the GUI and
#: show nothing more than a random sample of this many does.
MAP_MAX_POINTS = 20_000


@dataclass(frozen=True)
class PoolMap:
    """A 2-D map of a clustered pool, or of a random sample of it.

    ref : the clusters run mapped. items : (s,) int64 sorted item ids of the drawn points (all
    n items when n <= MAP_MAX_POINTS, else a seeded random sample of that many). xy : (s, 2)
    float32 coordinates on the first two principal components of the teacher's representation
    of those items. explained : (2,) float64 variance fractions. labels : (s,) int64 clusters
    of those items.
    """

    ref: str
    xy: np.ndarray
    explained: np.ndarray
    labels: np.ndarray
    items: np.ndarray

    def position(self, item: int) -> int | None:
        """The row of ``item`` in ``xy``, or None when the map does not draw it."""
        at = int(np.searchsorted(self.items, item))
        return at if at < self.items.size and self.items[at] == item else None


def pca_2d(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of ``Z`` (n, d), deterministically.

    Uses the smaller of the (d, d) covariance and the (n, n) Gram matrix, so a 100 k × 1280
    pool costs one 1280² eigendecomposition. Each axis's sign is fixed so the item with the
    largest absolute coordinate is positive (the same input always gives the same picture).

    Returns ``(xy (n, 2) float32, explained (2,) float64 variance fractions)``.
    """
    X = np.asarray(Z, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise InputError(f"must be an (n, d) array with n >= 1, got {X.shape}", field="Z")
    n, d = X.shape
    X = X - X.mean(axis=0)
    total = float((X * X).sum())
    xy = np.zeros((n, 2))
    explained = np.zeros(2)
    if total <= 0 or n < 2:
        return xy.astype(np.float32), explained
    n_comp = min(2, n, d)
    if d <= n:
        w, V = np.linalg.eigh(X.T @ X)
        order = np.argsort(w)[::-1][:n_comp]
        xy[:, :n_comp] = X @ V[:, order]
        explained[:n_comp] = np.maximum(w[order], 0) / total
    else:
        w, U = np.linalg.eigh(X @ X.T)
        order = np.argsort(w)[::-1][:n_comp]
        xy[:, :n_comp] = U[:, order] * np.sqrt(np.maximum(w[order], 0))
        explained[:n_comp] = np.maximum(w[order], 0) / total
    for c in range(2):
        i = int(np.argmax(np.abs(xy[:, c])))
        if xy[i, c] < 0:
            xy[:, c] = -xy[:, c]
    return xy.astype(np.float32), explained


def pool_map(
    project: Project, ref: str = CLUSTER_SLOT, *, max_points: int = MAP_MAX_POINTS
) -> PoolMap:
    """PCA map of the representation a clusters run clustered (features through its transform).

    A pool of more than ``max_points`` items is mapped by a seeded random sample of that many:
    the principal axes are those of the sample (so a 1.28 M pool costs a 20 k × d PCA), and
    only the sampled rows are transformed.
    """
    # imported here for the same reason as in JudgmentTriplets: stages.clusters imports torch
    from alignet_engine.stages.clusters import teacher_rows

    run = project.run(ref, arrays=False)
    full_ref = f"{run.stage}/{run.run_id}"
    cc = ClusterConfig.from_dict(run.params)
    with project.open_array(full_ref, "labels") as ds:
        labels = np.asarray(ds[()], dtype=np.int64)
    n = labels.size
    if n <= max_points:
        items = np.arange(n, dtype=np.int64)
    else:
        rng = np.random.default_rng(0)
        items = np.sort(rng.choice(n, size=max_points, replace=False)).astype(np.int64)
    Z = teacher_rows(project, cc.image_set, cc.model, cc.transform, items)
    xy, explained = pca_2d(Z)
    return PoolMap(full_ref, xy, explained, labels[items], items)


def pool_map_job(
    project: Project, ref: str = CLUSTER_SLOT, control: JobControl | None = None
) -> Job[PoolMap]:
    """:func:`pool_map` as a job for the engine thread."""
    control = control or JobControl()
    yield Progress("browse", 0, 1, "mapping the pool (PCA)")
    control.check()
    result = pool_map(project, ref)
    yield Progress("browse", 1, 1, "mapped the pool")
    return result
