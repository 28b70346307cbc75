"""Object-disjoint cross-validation and grid search for :class:`AffineTransform`.

Folds (method.md §1.1, gLocal ``partition_triplets``)
-----------------------------------------------------
The objects (item ids) that occur in the triplets are shuffled and split into ``n_splits``
near-equal groups (KFold over OBJECTS). For fold f, a triplet is a *test* row if all three of its
objects are in group f and a *training* row if none of them is; a triplet that mixes the two
sides is used in neither for that fold. Held-out scores therefore measure generalisation to
objects the transform never saw, as in gLocal and the ICLR'23 probing.

Rows lost: with objects drawn at random, a fold keeps a fraction f³ of the rows for testing
and (1 − f)³ for training, f = 1/n_splits. For 3 folds that is 1/27 + 8/27 = 1/3 of the rows
per fold (2/3 are dropped); for 4 folds 28/64 ≈ 44 %; for 5 folds 65/125 = 52 %. Every fold's
test set is disjoint from every other's, and each row is a test row in at most one fold.
:func:`object_disjoint_folds` logs the exact counts, and :class:`TransformSearch` records them
in ``folds_``.

Scores
------
Per (setting, fold): ``test_accuracy`` — :meth:`AffineTransform.score` on the test rows (the
row's answer, or for soft targets the majority answer that
:func:`~alignet_engine.align.soft_targets.choice_distributions` puts last, ties wrong);
``test_loss`` — the objective's loss on the test rows without the regulariser: mean
cross-entropy −log q(answer) (``objective="hard"``) or mean KL(p ‖ q) (``"soft"``), in nats.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import ParameterGrid

from alignet_engine.align.fitloop import fit_from_iter
from alignet_engine.align.metrics import check_features, check_triplets
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

TripletKind = Literal["oddone", "twoafc"]


# --------------------------------------------------------------------------------------------
# folds
# --------------------------------------------------------------------------------------------
def object_disjoint_folds(
    triplets: np.ndarray,
    n_items: int,
    n_splits: int = 3,
    random_state: int | np.random.Generator | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Object-disjoint K-fold split of triplet rows (gLocal's ``partition_triplets``).

    Parameters
    ----------
    triplets : (t, 3) int item ids in ``[0, n_items)``.
    n_items : number of items (rows of the feature matrix).
    n_splits : number of object groups / folds, >= 2.
    random_state : seed or Generator of the object shuffle.

    Returns
    -------
    list of ``n_splits`` pairs ``(train_rows, test_rows)``, each a sorted (m,) int64 array of row
    indices into ``triplets``. Rows of fold f: test = all three objects in group f, train = no
    object in group f; mixed rows are in neither (about 2/3 of the rows per fold for 3 folds,
    see the module docstring).

    Raises
    ------
    InputError
        bad triplets, ``n_splits`` < 2 or above the number of objects, or a fold without a
        training or a test row (too few triplets for that many folds).
    """
    trip = check_triplets(triplets, int(n_items))
    if int(n_splits) != n_splits or n_splits < 2:
        raise InputError(f"n_splits must be an integer >= 2, got {n_splits!r}", field="n_splits")
    n_splits = int(n_splits)
    objects = np.unique(trip)
    if objects.size < n_splits:
        raise InputError(
            f"cannot split {objects.size} objects into {n_splits} object-disjoint folds",
            field="n_splits",
        )
    rng = np.random.default_rng(random_state)
    group = np.full(int(n_items), -1, dtype=np.int64)
    for f, members in enumerate(np.array_split(rng.permutation(objects), n_splits)):
        group[members] = f
    g = group[trip]  # (t, 3) group of each object
    folds = []
    for f in range(n_splits):
        inside = g == f
        test = np.flatnonzero(inside.all(axis=1))
        train = np.flatnonzero(~inside.any(axis=1))
        if test.size == 0 or train.size == 0:
            raise InputError(
                f"object-disjoint fold {f + 1} of {n_splits} has {train.size} training and "
                f"{test.size} test triplets; use fewer folds or more triplets",
                field="n_splits",
            )
        logger.info(
            "fold %d/%d: %d train, %d test, %d mixed rows dropped (of %d)",
            f + 1,
            n_splits,
            train.size,
            test.size,
            trip.shape[0] - train.size - test.size,
            trip.shape[0],
        )
        folds.append((train, test))
    return folds


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchStep:
    """Progress record yielded by :meth:`TransformSearch.iter_fit`.

    setting : 1-based index of the parameter setting (0 during the final refit).
    n_settings : number of settings in the grid.
    fold : 1-based fold (0 during the final refit).
    n_splits : number of folds.
    epoch : epoch of the current fit just finished (0 in a ``fold_done`` record).
    params : the full setting being fitted (grid values only).
    fold_done : this (setting, fold) fit finished; ``test_accuracy``/``test_loss`` are set.
    test_accuracy, test_loss : held-out scores of the finished fit (NaN otherwise).
    done_fits : fits finished so far, of ``n_fits`` = n_settings · n_splits + 1 (the refit).
    """

    setting: int
    n_settings: int
    fold: int
    n_splits: int
    epoch: int
    params: dict[str, Any] = field(default_factory=dict)
    fold_done: bool = False
    test_accuracy: float = math.nan
    test_loss: float = math.nan
    done_fits: int = 0
    n_fits: int = 0

    @property
    def refit(self) -> bool:
        """The record belongs to the final refit on all triplets."""
        return self.setting == 0


def _jsonable(value: Any) -> Any:
    """Python scalars for numpy scalars (``cv_results_`` must survive ``json.dumps``)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


class _SearchRun:
    """One run of a :class:`TransformSearch`: its checked data, folds and score tables.

    Attributes
    ----------
    settings : the grid's parameter dicts; X : (n, d) float64; trip : (t, 3) int64; tg : (t, k)
    float64 targets or None; folds : ``(train_rows, test_rows)`` per fold; n_splits, n_fits
    (every setting × fold, plus the refit); acc, loss, secs : (n_settings, n_splits) float64
    held-out accuracy, loss (nats) and fit seconds, NaN until fitted; epochs : the same, int64
    epochs run; done : fits finished so far.
    """

    def __init__(
        self,
        search: TransformSearch,
        X: np.ndarray,
        triplets: np.ndarray,
        kind: TripletKind,
        targets: np.ndarray | None,
        pool: np.ndarray | None,
        n_items: int | None,
    ) -> None:
        if search.scoring not in ("accuracy", "loss"):
            raise InputError(
                f"scoring must be 'accuracy' or 'loss', got {search.scoring!r}", field="scoring"
            )
        self.search, self.kind, self.pool = search, kind, pool
        self.settings = search._settings()
        self.X = check_features(X, name="X")
        n_items = self.X.shape[0] if n_items is None else int(n_items)
        if n_items > self.X.shape[0]:
            raise InputError(
                f"n_items={n_items} exceeds the {self.X.shape[0]} feature rows", field="n_items"
            )
        self.trip = check_triplets(triplets, n_items)
        self.tg = None
        if targets is not None:
            self.tg = np.asarray(targets, dtype=np.float64)
            if self.tg.ndim != 2 or self.tg.shape[0] != self.trip.shape[0]:
                raise InputError(
                    f"must have one row per triplet ({self.trip.shape[0]}), got shape "
                    f"{self.tg.shape}",
                    field="targets",
                )
        self.folds = object_disjoint_folds(self.trip, n_items, search.n_splits, search.random_state)
        self.n_splits = len(self.folds)
        self.n_fits = len(self.settings) * self.n_splits + 1
        shape = (len(self.settings), self.n_splits)
        self.acc = np.full(shape, np.nan)
        self.loss = np.full(shape, np.nan)
        self.secs = np.full(shape, np.nan)
        self.epochs = np.zeros(shape, dtype=np.int64)
        self.done = 0

    def _rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The triplets and targets (or None) of ``rows``."""
        return self.trip[rows], None if self.tg is None else self.tg[rows]

    def step(
        self,
        setting: int,
        fold: int,
        params: Mapping[str, Any],
        epoch: int = 0,
        *,
        fold_done: bool = False,
        test_accuracy: float = math.nan,
        test_loss: float = math.nan,
    ) -> SearchStep:
        """A progress record (``setting``/``fold`` 1-based, 0 in the refit)."""
        return SearchStep(
            setting=setting,
            n_settings=len(self.settings),
            fold=fold,
            n_splits=self.n_splits,
            epoch=epoch,
            params=dict(params),
            fold_done=fold_done,
            test_accuracy=test_accuracy,
            test_loss=test_loss,
            done_fits=self.done,
            n_fits=self.n_fits,
        )

    def relay(
        self, fitting: Iterator[Any], setting: int, fold: int, params: Mapping[str, Any]
    ) -> Generator[SearchStep, None, None]:
        """One progress record per epoch record of the fit ``fitting``."""
        for ep in fitting:
            yield self.step(setting, fold, params, ep.epoch)

    def fit_fold(self, s: int, f: int) -> Generator[SearchStep, None, None]:
        """Fit setting ``s`` on fold ``f``'s training rows (0-based) and score its test rows."""
        setting = self.settings[s]
        train, test = self.folds[f]
        est = self.search._estimator(setting)
        t0 = time.perf_counter()
        trip, tg = self._rows(train)
        fitting = est.iter_fit(self.X, trip, kind=self.kind, targets=tg, pool=self.pool)
        yield from self.relay(fitting, s + 1, f + 1, setting)
        self.secs[s, f] = time.perf_counter() - t0
        self.epochs[s, f] = est.n_epochs_
        test_trip, test_tg = self._rows(test)
        self.acc[s, f], self.loss[s, f] = self.search._heldout(
            est, self.X, test_trip, self.kind, test_tg
        )
        self.done += 1
        logger.info(
            "setting %d/%d %s fold %d/%d: held-out accuracy %.4f, loss %.4f (%.1f s)",
            s + 1,
            len(self.settings),
            setting,
            f + 1,
            self.n_splits,
            self.acc[s, f],
            self.loss[s, f],
            self.secs[s, f],
        )
        yield self.step(
            s + 1,
            f + 1,
            setting,
            fold_done=True,
            test_accuracy=float(self.acc[s, f]),
            test_loss=float(self.loss[s, f]),
        )

    def cross_validate(self) -> Generator[SearchStep, None, None]:
        """Every (setting, fold) fit, settings in grid order, folds in order."""
        for s in range(len(self.settings)):
            for f in range(self.n_splits):
                yield from self.fit_fold(s, f)

    def rank(self, scoring: str) -> tuple[int, dict[str, list[Any]]]:
        """(row of the best setting, ``cv_results_``) from the finished score tables."""
        acc, loss, secs, settings = self.acc, self.loss, self.secs, self.settings
        mean_acc, mean_loss = acc.mean(axis=1), loss.mean(axis=1)
        if scoring == "accuracy":
            order = np.argsort(-mean_acc, kind="stable")
        else:
            order = np.argsort(mean_loss, kind="stable")
        rank = np.empty(len(settings), dtype=np.int64)
        rank[order] = np.arange(1, len(settings) + 1)

        results: dict[str, list[Any]] = {"params": [dict(p) for p in settings]}
        for key in sorted({k for p in settings for k in p}):
            results[f"param_{key}"] = [p.get(key) for p in settings]
        results["mean_test_accuracy"] = mean_acc.tolist()
        results["std_test_accuracy"] = acc.std(axis=1).tolist()
        results["mean_test_loss"] = mean_loss.tolist()
        results["std_test_loss"] = loss.std(axis=1).tolist()
        for f in range(self.n_splits):
            results[f"split{f}_test_accuracy"] = acc[:, f].tolist()
            results[f"split{f}_test_loss"] = loss[:, f].tolist()
            results[f"split{f}_n_epochs"] = self.epochs[:, f].tolist()
            results[f"split{f}_fit_time"] = secs[:, f].tolist()
        results["mean_fit_time"] = secs.mean(axis=1).tolist()
        results["std_fit_time"] = secs.std(axis=1).tolist()
        results["rank_test_score"] = rank.tolist()
        return int(order[0]), results

    def refit(self, best: int) -> Generator[SearchStep, None, Any]:
        """Fit setting ``best`` on every triplet; returns the fitted transform."""
        est = self.search._estimator(self.settings[best])
        fitting = est.iter_fit(self.X, self.trip, kind=self.kind, targets=self.tg, pool=self.pool)
        yield from self.relay(fitting, 0, 0, self.settings[best])
        return est


class TransformSearch(BaseEstimator):
    """Grid search of :class:`AffineTransform` parameters by object-disjoint cross-validation.

    Parameters
    ----------
    param_grid : ``{name: [values, ...]}`` over any :class:`AffineTransform` constructor
        parameter (e.g. ``lam``, ``alpha``, ``tau``, ``lr``, ``batch_size``); the settings are
        the Cartesian product, in :class:`sklearn.model_selection.ParameterGrid` order (keys
        sorted, the last key varying fastest). A list of such dicts searches their union.
    n_splits : number of object-disjoint folds (>= 2).
    base_params : constructor parameters shared by every fit (grid values override them).
        ``random_state`` defaults to this search's ``random_state``.
    scoring : ``"accuracy"`` (pick the highest mean held-out accuracy) or ``"loss"`` (the
        lowest mean held-out loss).
    random_state : seed of the folds and (unless ``base_params`` sets one) of every fit.

    Attributes
    ----------
    cv_results_ : dict of lists, one entry per setting, JSON-able:
        ``params`` (dicts), ``param_<name>`` (values), ``mean_test_accuracy``,
        ``std_test_accuracy``, ``mean_test_loss``, ``std_test_loss``,
        ``split<k>_test_accuracy``, ``split<k>_test_loss``, ``split<k>_n_epochs``,
        ``split<k>_fit_time`` (k = 0 .. n_splits−1), ``mean_fit_time``, ``std_fit_time``
        (seconds per fit), ``rank_test_score`` (1 = best under ``scoring``).
    best_index_ : int, row of the best setting in ``cv_results_``.
    best_params_ : dict, its grid values.
    best_score_ : float, its mean held-out accuracy or loss (per ``scoring``).
    best_estimator_ : AffineTransform refitted on all triplets with ``base_params`` +
        ``best_params_``.
    folds_ : list of ``{"n_train", "n_test", "n_dropped"}`` per fold.
    n_splits_ : int.
    refit_time_ : float, seconds of the final refit.
    """

    def __init__(
        self,
        param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
        *,
        n_splits: int = 3,
        base_params: Mapping[str, Any] | None = None,
        scoring: Literal["accuracy", "loss"] = "accuracy",
        random_state: int | None = None,
    ) -> None:
        self.param_grid = param_grid
        self.n_splits = n_splits
        self.base_params = base_params
        self.scoring = scoring
        self.random_state = random_state

    def _settings(self) -> list[dict[str, Any]]:
        from alignet_engine.align.transform import AffineTransform

        allowed = set(AffineTransform().get_params())
        grids = [self.param_grid] if isinstance(self.param_grid, Mapping) else self.param_grid
        for grid in grids:
            if not isinstance(grid, Mapping) or not grid:
                raise InputError("must be a non-empty dict of lists", field="param_grid")
            for key, values in grid.items():
                if key not in allowed:
                    raise InputError(
                        f"{key!r} is not an AffineTransform parameter; use one of "
                        f"{sorted(allowed)}",
                        field="param_grid",
                    )
                if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
                    raise InputError(f"{key!r} must map to a list of values", field="param_grid")
                if len(values) == 0:
                    raise InputError(f"{key!r} has no values", field="param_grid")
        for key in self.base_params or {}:
            if key not in allowed:
                raise InputError(
                    f"{key!r} is not an AffineTransform parameter", field="base_params"
                )
        return [{k: _jsonable(v) for k, v in s.items()} for s in ParameterGrid(list(grids))]

    def _estimator(self, setting: Mapping[str, Any]) -> Any:
        from alignet_engine.align.transform import AffineTransform

        params = {"random_state": self.random_state, **(self.base_params or {}), **setting}
        return AffineTransform(**params)

    @staticmethod
    def _heldout(
        est: Any,
        X: np.ndarray,
        trip: np.ndarray,
        kind: TripletKind,
        targets: np.ndarray | None,
    ) -> tuple[float, float]:
        """(accuracy, loss) of a fitted transform on held-out rows."""
        acc = est.score(X, trip, kind=kind)
        logq = est.predict_log_proba(X, trip, kind=kind)
        if targets is None:
            loss = float(-logq[:, 0].mean())
        else:
            p = targets
            plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
            loss = float((plogp - p * logq).sum(axis=1).mean())
        return acc, loss

    def iter_fit(
        self,
        X: np.ndarray,
        triplets: np.ndarray,
        *,
        kind: TripletKind = "oddone",
        targets: np.ndarray | None = None,
        pool: np.ndarray | None = None,
        n_items: int | None = None,
    ) -> Generator[SearchStep, None, TransformSearch]:
        """Search, yielding a :class:`SearchStep` after every epoch of every fit and after every
        finished fold (for progress and cancellation: stop iterating to cancel; the fitted
        attributes are only set when the generator finishes).

        Parameters
        ----------
        X : (n, d) float features.
        triplets : (t, 3) int rows as for :meth:`AffineTransform.iter_fit`.
        kind : ``"oddone"`` or ``"twoafc"``.
        targets : (t, k) soft targets (``objective="soft"``); each fold takes the rows of its
            triplets, so targets follow their rows.
        pool : (m, d) local-term features (for settings with ``alpha > 0``), shared by all fits.
        n_items : item count for the id check (default ``n``).
        """
        run = _SearchRun(self, X, triplets, kind, targets, pool, n_items)
        yield from run.cross_validate()
        best, results = run.rank(self.scoring)
        # refit the winner on every triplet (its own validation split does the early stopping)
        t0 = time.perf_counter()
        est = yield from run.refit(best)

        self.cv_results_ = results
        self.best_index_ = best
        self.best_params_ = dict(run.settings[best])
        self.best_score_ = float(results[f"mean_test_{self.scoring}"][best])
        self.best_estimator_ = est
        self.refit_time_ = time.perf_counter() - t0
        self.n_splits_ = run.n_splits
        self.folds_ = [
            {
                "n_train": int(train.size),
                "n_test": int(test.size),
                "n_dropped": int(run.trip.shape[0] - train.size - test.size),
            }
            for train, test in run.folds
        ]
        logger.info(
            "transform search: best %s (%s %.4f) of %d settings x %d folds",
            self.best_params_,
            self.scoring,
            self.best_score_,
            len(run.settings),
            run.n_splits,
        )
        return self

    fit = fit_from_iter(iter_fit)
