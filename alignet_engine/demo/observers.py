"""Simulated observers for the demo world: odd-one-out choices with Luce-choice noise.

Ground truth
------------
:func:`ground_truth_similarity` is the observers' internal similarity::

    S_ij = 1.00 · [same category] + 0.50 · [same family, other category]
           + 0.30 · hue_sim(i, j)

where ``hue_sim = 1 - 2 · d`` and ``d ∈ [0, 0.5]`` is the circular distance between the two
object hues (identical hues give 1, opposite hues 0). The graded colour term is smaller than
either level of the hierarchy: it orders the triplets the hierarchy leaves tied (three
families, three categories of one family, one category) and reflects that people notice
colour. The base CNN sees colour too, but weighs it differently, so a learned re-weighting of
its features can gain here as well as on the family level.

Choice rule
-----------
For a triplet (a, b, c) an observer picks odd one out k with the Luce / softmax rule over the
similarity of the pair that remains when k is removed::

    P(odd = k) ∝ exp(S_pair(k) / T),   pair(a) = (b, c), pair(b) = (a, c), pair(c) = (a, b)

:data:`DEFAULT_TEMPERATURE` ``T = 0.17`` puts the test split's noise ceiling (mean agreement
of responses with their triplet's majority choice, 400 triplets × 5 repeats, default world)
at about 0.81 and the ground-truth model's accuracy at about 0.76 (chance 1/3; THINGS
odd-one-out data reach ≈ 0.67). Rows are stored as ``(i, j, odd)`` with the chosen odd one
LAST, as :class:`~alignet_engine.base.types.Judgments` requires.

Triplet mix
-----------
Triplets are sampled without repetition, stratified by their type under the hierarchy (see
:data:`TRIPLET_TYPES` and :data:`DEFAULT_MIX`), so the task holds easy, medium and ambiguous
triplets in a fixed proportion rather than the mostly-three-families triplets that uniform
sampling gives. A type with too few distinct triplets hands its share to the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from alignet_engine.base.types import Judgments
from alignet_engine.demo.world import DemoWorld
from alignet_engine.errors import InputError

log = logging.getLogger(__name__)

W_CATEGORY = 1.0
W_FAMILY = 0.5
W_HUE = 0.3
DEFAULT_TEMPERATURE = 0.17

TRIPLET_TYPES: tuple[str, ...] = (
    "three_families",  # a, b, c from three different families (ambiguous: colour only)
    "family_pair",  # two of one family (different categories) + one from another family
    "category_pair_near",  # two of one category + one of another category, same family
    "category_pair_far",  # two of one category + one from another family (easy)
    "one_family",  # three different categories of one family (ambiguous)
    "one_category",  # three exemplars of one category (ambiguous)
)
DEFAULT_MIX: dict[str, float] = {
    "three_families": 0.15,
    "family_pair": 0.25,
    "category_pair_near": 0.20,
    "category_pair_far": 0.20,
    "one_family": 0.10,
    "one_category": 0.10,
}

# Up to this many candidate triplets, all are enumerated and sampled exactly; above it,
# candidates are drawn at random in batches and filtered (rejection sampling).
_ENUMERATE_MAX = 1_500_000
_BATCH = 200_000
_MAX_BATCHES = 50


def ground_truth_similarity(world: DemoWorld, item_ids: np.ndarray | None = None) -> np.ndarray:
    """The simulated observers' similarity matrix (see the module docstring).

    Parameters
    ----------
    world : the demo world.
    item_ids : (m,) int item ids to restrict to; None = all ``n`` items.

    Returns
    -------
    (m, m) float64, symmetric; rows and columns follow ``item_ids``.
    """
    ids = np.arange(len(world)) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    fam = world.family[ids]
    cat = world.category[ids]
    same_cat = cat[:, None] == cat[None, :]
    same_fam = fam[:, None] == fam[None, :]
    S = W_CATEGORY * same_cat + W_FAMILY * (same_fam & ~same_cat)
    if "hue" in world.attributes:  # a hand-built world without attributes: hierarchy only
        hue = world.attributes["hue"][ids]
        d = np.abs(hue[:, None] - hue[None, :]) % 1.0
        d = np.minimum(d, 1.0 - d)  # circular hue distance in [0, 0.5]
        S = S + W_HUE * (1.0 - 2.0 * d)
    return S.astype(np.float64)


def luce_probabilities(S: np.ndarray, triplets: np.ndarray, temperature: float) -> np.ndarray:
    """Odd-one-out choice probabilities under the Luce / softmax rule.

    Parameters
    ----------
    S : (n, n) float similarity matrix.
    triplets : (t, 3) int indices into ``S``.
    temperature : T > 0; smaller is less noisy.

    Returns
    -------
    (t, 3) float64; column k is P(odd one = ``triplets[:, k]``) ∝ exp(S of the other two / T).
    Rows sum to 1.
    """
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}", field="temperature")
    t = np.asarray(triplets, dtype=np.int64)
    a, b, c = t[:, 0], t[:, 1], t[:, 2]
    logits = np.stack([S[b, c], S[a, c], S[a, b]], axis=1).astype(np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)  # stable softmax
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def classify_triplets(family: np.ndarray, category: np.ndarray, triplets: np.ndarray) -> np.ndarray:
    """Type of each triplet under the hierarchy, as an index into :data:`TRIPLET_TYPES`.

    Parameters
    ----------
    family, category : (n,) int labels per item (category ids must be global, i.e. unique
        across families).
    triplets : (t, 3) int item ids.

    Returns
    -------
    (t,) int64 in ``0..len(TRIPLET_TYPES) - 1``.
    """
    t = np.asarray(triplets, dtype=np.int64)
    f, c = family[t], category[t]
    n_cat_pairs = (c[:, 0] == c[:, 1]).astype(int) + (c[:, 0] == c[:, 2]) + (c[:, 1] == c[:, 2])
    n_fam_pairs = (f[:, 0] == f[:, 1]).astype(int) + (f[:, 0] == f[:, 2]) + (f[:, 1] == f[:, 2])
    out = np.empty(len(t), dtype=np.int64)
    out[n_fam_pairs == 0] = 0
    out[(n_fam_pairs == 1) & (n_cat_pairs == 0)] = 1
    out[(n_fam_pairs == 3) & (n_cat_pairs == 1)] = 2
    out[(n_fam_pairs == 1) & (n_cat_pairs == 1)] = 3
    out[(n_fam_pairs == 3) & (n_cat_pairs == 0)] = 4
    out[n_cat_pairs == 3] = 5
    return out


def _allocate(n: int, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Split ``n`` into per-type targets ∝ ``weights``, none above its ``capacity``.

    A type that cannot take its share hands the rest to the others, in proportion to their
    weights (types with zero weight stay at zero unless nothing else has room).
    """
    target = np.zeros(len(weights), dtype=np.int64)
    w = np.where(capacity > 0, weights, 0.0)
    if w.sum() <= 0:  # no weighted type has room: fall back to any type with room
        w = (capacity > 0).astype(np.float64)
    remaining = n
    while remaining > 0:
        room = capacity - target
        active = (room > 0) & (w > 0)
        if not active.any():
            active = room > 0
            w = active.astype(np.float64)
            if not active.any():
                raise InputError(f"only {int(capacity.sum())} distinct triplets exist, {n} asked")
        share = w * active / (w * active).sum() * remaining
        add = np.minimum(np.floor(share).astype(np.int64), room)
        if add.sum() == 0:  # hand out the rounding remainder one by one, largest share first
            for k in np.argsort(-share):
                if active[k] and remaining > 0:
                    add[k] += 1
                    remaining -= 1
            target += add
            continue
        target += add
        remaining -= int(add.sum())
    return target


def _keys(t: np.ndarray, m: int) -> np.ndarray:
    """A unique int64 key per unordered triplet of local ids in ``0..m-1``."""
    s = np.sort(t, axis=1)
    return (s[:, 0] * m + s[:, 1]) * m + s[:, 2]


def sample_demo_triplets(
    family: np.ndarray,
    category: np.ndarray,
    item_ids: np.ndarray,
    n_triplets: int,
    rng: np.random.Generator,
    mix: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n_triplets`` distinct unordered triplets among ``item_ids``, stratified by type.

    Parameters
    ----------
    family, category : (n,) int labels of all items.
    item_ids : (m,) int ids of the items that may appear.
    n_triplets : how many distinct triplets.
    rng : the random generator.
    mix : weight per :data:`TRIPLET_TYPES` name (missing names weigh 0); default
        :data:`DEFAULT_MIX`.

    Returns
    -------
    triplets : (n_triplets, 3) int64 item ids, in random order (rows and within rows).
    types : (n_triplets,) int64 index into :data:`TRIPLET_TYPES` per row.
    """
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(TRIPLET_TYPES)
    if unknown:
        raise InputError(f"unknown triplet types {sorted(unknown)}; use {TRIPLET_TYPES}")
    weights = np.asarray([max(0.0, float(mix.get(k, 0.0))) for k in TRIPLET_TYPES])
    ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    m = len(ids)
    n_possible = math.comb(m, 3)
    if n_triplets > n_possible:
        raise InputError(
            f"{n_triplets} distinct triplets asked but {m} items give only {n_possible}",
            field="n_triplets",
        )
    fam, cat = family[ids], category[ids]
    if n_possible <= _ENUMERATE_MAX:
        local = _all_triplets(m)
        types = classify_triplets(fam, cat, local)
        capacity = np.bincount(types, minlength=len(TRIPLET_TYPES))
        target = _allocate(n_triplets, weights, capacity)
        chosen = [
            rng.choice(np.flatnonzero(types == k), size=int(target[k]), replace=False)
            for k in range(len(TRIPLET_TYPES))
            if target[k] > 0
        ]
        pick = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        out_local, out_types = local[pick], types[pick]
    else:
        out_local, out_types = _reject_sample(fam, cat, m, n_triplets, weights, rng)
    order = rng.permutation(len(out_local))
    out_local, out_types = out_local[order], out_types[order]
    out_local = rng.permuted(out_local, axis=1)  # random presentation order within a row
    return ids[out_local], out_types


def _all_triplets(m: int) -> np.ndarray:
    """(C(m, 3), 3) int64, every i < j < k in ``0..m-1``."""
    i, j, k = np.meshgrid(np.arange(m), np.arange(m), np.arange(m), indexing="ij", sparse=True)
    mask = (i < j) & (j < k)
    ii, jj, kk = np.nonzero(mask)
    return np.stack([ii, jj, kk], axis=1).astype(np.int64)


def _reject_sample(
    fam: np.ndarray,
    cat: np.ndarray,
    m: int,
    n: int,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified sampling for large item sets: random batches, filtered by type and novelty."""
    target = _allocate(n, weights, np.full(len(weights), n, dtype=np.int64))
    got_t: list[np.ndarray] = []
    got_k: list[np.ndarray] = []
    seen = np.zeros(0, dtype=np.int64)
    have = np.zeros(len(weights), dtype=np.int64)
    for _ in range(_MAX_BATCHES):
        if (have >= target).all():
            break
        cand = rng.integers(0, m, size=(_BATCH, 3))
        cand = cand[
            (cand[:, 0] != cand[:, 1]) & (cand[:, 0] != cand[:, 2]) & (cand[:, 1] != cand[:, 2])
        ]
        keys = _keys(cand, m)
        _, first = np.unique(keys, return_index=True)
        first = np.sort(first)  # keep draw order: np.unique sorts by key
        cand, keys = cand[first], keys[first]
        fresh = ~np.isin(keys, seen)
        cand, keys = cand[fresh], keys[fresh]
        types = classify_triplets(fam, cat, cand)
        for k in range(len(weights)):
            need = target[k] - have[k]
            if need <= 0:
                continue
            sel = np.flatnonzero(types == k)[:need]
            got_t.append(cand[sel])
            got_k.append(types[sel])
            seen = np.concatenate([seen, keys[sel]])
            have[k] += len(sel)
    short = int(n - have.sum())
    if short > 0:  # a type too rare to fill: top up with any fresh triplets
        log.warning("triplet mix: %d triplets of rare types replaced by other types", short)
        while short > 0:
            cand = rng.integers(0, m, size=(_BATCH, 3))
            ok = (
                (cand[:, 0] != cand[:, 1]) & (cand[:, 0] != cand[:, 2]) & (cand[:, 1] != cand[:, 2])
            )
            cand = cand[ok]
            keys = _keys(cand, m)
            _, first = np.unique(keys, return_index=True)
            first = np.sort(first)
            cand, keys = cand[first], keys[first]
            fresh_rows = np.flatnonzero(~np.isin(keys, seen))[:short]
            got_t.append(cand[fresh_rows])
            got_k.append(classify_triplets(fam, cat, cand[fresh_rows]))
            seen = np.concatenate([seen, keys[fresh_rows]])
            short -= len(fresh_rows)
    return np.concatenate(got_t).astype(np.int64), np.concatenate(got_k)


def simulate_oddone(
    world: DemoWorld,
    item_ids: np.ndarray,
    *,
    n_triplets: int,
    n_repeats: int = 1,
    n_participants: int = 20,
    temperature: float = DEFAULT_TEMPERATURE,
    random_state: int | np.random.Generator | None = 0,
    mix: Mapping[str, float] | None = None,
) -> Judgments:
    """Simulated odd-one-out judgments on distinct triplets among ``item_ids``.

    Parameters
    ----------
    world : the demo world; item ids index ``world.paths``.
    item_ids : (m,) int ids of the items that may appear (e.g. ``world.ids("fit")``).
    n_triplets : number of distinct unordered triplets, sampled by :func:`sample_demo_triplets`.
    n_repeats : responses per triplet, each from a different participant where
        ``n_repeats <= n_participants``.
    n_participants : participant ids are ``0..n_participants-1``, drawn at random per response.
    temperature : Luce-choice temperature T (see :func:`luce_probabilities`).
    random_state : seed or generator; the same seed gives identical judgments.
    mix : triplet type weights, default :data:`DEFAULT_MIX`.

    Returns
    -------
    Judgments, kind ``"oddone"``, ``simulated=True``, ``n_triplets · n_repeats`` rows in random
    order; ``triplets[r] = (i, j, odd)`` with the chosen odd one LAST.
    """
    if n_repeats < 1 or n_participants < 1:
        raise InputError("n_repeats and n_participants must be >= 1")
    rng = np.random.default_rng(random_state)
    trip, _ = sample_demo_triplets(world.family, world.category, item_ids, n_triplets, rng, mix)
    # Similarities among the allowed items only: a large world's full (n, n) matrix is not needed.
    allowed = np.unique(np.asarray(item_ids, dtype=np.int64))
    S = ground_truth_similarity(world, allowed)
    p = luce_probabilities(S, np.searchsorted(allowed, trip), temperature)

    rows = np.repeat(trip, n_repeats, axis=0)
    p_rows = np.repeat(p, n_repeats, axis=0)
    if n_repeats <= n_participants:  # distinct participants answer the same triplet
        who = np.argsort(rng.random((len(trip), n_participants)), axis=1)[:, :n_repeats]
        participant = who.reshape(-1)
    else:
        participant = rng.integers(0, n_participants, size=len(rows))
    u = rng.random(len(rows))
    odd = (u[:, None] > np.cumsum(p_rows, axis=1)[:, :2]).sum(axis=1)  # inverse-CDF draw
    # Reorder each row so the chosen odd one comes last, the remaining pair keeps its order.
    keep = np.asarray([[1, 2, 0], [0, 2, 1], [0, 1, 2]])[odd]
    out = np.take_along_axis(rows, keep, axis=1)
    order = rng.permutation(len(out))  # interleave repeats like a real session log
    return Judgments(
        kind="oddone",
        triplets=out[order].astype(np.int64),
        participant=participant[order].astype(np.int64),
        simulated=True,
        meta={
            "source": "alignet demo: simulated observers",
            "temperature": repr(float(temperature)),
            "n_repeats": str(n_repeats),
        },
    )


def make_demo_judgments(
    world: DemoWorld,
    *,
    random_state: int | np.random.Generator | None = 0,
    n_fit_triplets: int = 3000,
    n_test_triplets: int = 400,
    n_test_repeats: int = 5,
    temperature: float = DEFAULT_TEMPERATURE,
) -> dict[str, Judgments]:
    """The demo's two judgment sets, object-disjoint.

    Returns
    -------
    ``{"fit": ..., "test": ...}``: ``fit`` has ``n_fit_triplets`` distinct triplets among
    ``world.ids("fit")``, answered once; ``test`` has ``n_test_triplets`` distinct triplets
    among ``world.ids("test")``, each answered ``n_test_repeats`` times (for a noise ceiling).
    No test triplet contains a fit item and vice versa. Item ids index ``world.paths``.
    Counts are reduced (with a warning) where a small world has fewer distinct triplets.
    """
    rng = np.random.default_rng(random_state)
    fit_rng, test_rng = rng.spawn(2)
    out: dict[str, Judgments] = {}
    for role, n, reps, r in (
        ("fit", n_fit_triplets, 1, fit_rng),
        ("test", n_test_triplets, n_test_repeats, test_rng),
    ):
        ids = world.ids(role)
        n_max = math.comb(len(ids), 3)
        if n > n_max:
            log.warning(
                "demo %s judgments: only %d distinct triplets exist, not %d", role, n_max, n
            )
            n = n_max
        j = simulate_oddone(
            world, ids, n_triplets=n, n_repeats=reps, temperature=temperature, random_state=r
        )
        out[role] = replace(j, meta={**j.meta, "split": role})
    return out


__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_TEMPERATURE",
    "TRIPLET_TYPES",
    "classify_triplets",
    "ground_truth_similarity",
    "luce_probabilities",
    "make_demo_judgments",
    "sample_demo_triplets",
    "simulate_oddone",
]
