"""The steps every epoch-by-epoch fit in ``align`` shares.

:class:`~alignet_engine.align.transform.AffineTransform`,
:class:`~alignet_engine.align.human_models.VICE` and
:class:`~alignet_engine.align.model_selection.TransformSearch` fit as generators: ``iter_fit``
yields one frozen record per epoch (for progress and cancellation) and sets the fitted
attributes only when it finishes; ``fit`` runs it to the end. What they do the same way lives
here, once:

run_epochs          the epoch loop: yield each epoch's record, stop when asked, count epochs
shuffled_batches    one random permutation per epoch, cut into consecutive batches
torch_generator     the torch random stream, seeded by one draw of the estimator's numpy stream
EarlyStopping       best monitored loss, its epoch and parameters, patience and tolerance
new_history,        per-epoch lists (``history_``) filled from the epoch records, whose field
append_history      names are the history's keys
check_param_table   the "invalid name=value" check of an estimator's numeric parameters
fit_from_iter       ``fit`` = "drain ``iter_fit`` and return its value"

The records, the history keys and the random streams are exactly those the estimators had
before this module existed (a fit with a fixed ``random_state`` is bitwise unchanged).
torch is imported inside the functions that use it, so :mod:`human_models` (which only needs
torch once a VICE model is fitted) stays cheap to import.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from alignet_engine.errors import InputError

if TYPE_CHECKING:
    import torch

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E")


def run_epochs(
    max_epochs: int, epoch: Callable[[int], E], stop: Callable[[E], bool]
) -> Generator[E, None, int]:
    """Run ``epoch(1)``, ``epoch(2)``, … up to ``max_epochs``, yielding each record.

    ``stop(record)`` is asked after the record was yielded; True ends the loop. Returns the
    number of epochs run (the last epoch number; 0 when ``max_epochs`` < 1).
    """
    n = 0
    for n in range(1, max_epochs + 1):
        record = epoch(n)
        yield record
        if stop(record):
            break
    return n


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Positions ``0 .. n−1`` in one random order, in consecutive (≤ batch_size,) int64 slices.

    The permutation is drawn from ``gen`` (``torch.randperm``) when the first batch is asked
    for, so the draws a training step makes from ``gen`` come after it, as in a plain loop.
    """
    import torch

    order = torch.randperm(n, generator=gen)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch Generator seeded with one draw of ``rng`` (an int in [0, 2⁶²)).

    The estimator's numpy stream (its ``random_state``) thereby decides the torch draws too.
    """
    import torch

    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


class EarlyStopping:
    """Keep the parameters with the lowest monitored loss; stop after ``patience`` epochs
    without an improvement by more than ``tol``.

    Parameters
    ----------
    start_loss : monitored loss (nats) of the starting parameters, the first checkpoint.
    params : the tensors being optimised; copies are kept (``best_state``).
    patience : epochs without improvement before :attr:`stop`, >= 1.
    tol : an epoch improves when its loss is below ``best − tol``.

    Attributes
    ----------
    best : float, lowest monitored loss so far; best_epoch : int, its epoch (0 = the start);
    best_state : list of detached copies of ``params`` at ``best_epoch``; wait : int, epochs
    since then.
    """

    def __init__(
        self, start_loss: float, params: Sequence[torch.Tensor], patience: int, tol: float
    ) -> None:
        self.best = start_loss
        self.best_epoch = 0
        self.wait = 0
        self.patience = patience
        self.tol = tol
        self.best_state = [p.detach().clone() for p in params]

    def update(self, epoch: int, loss: float, params: Sequence[torch.Tensor]) -> bool:
        """Record epoch ``epoch``'s monitored ``loss``; returns whether it improved (then the
        current ``params`` become the kept state)."""
        improved = loss < self.best - self.tol
        if improved:
            self.best, self.best_epoch, self.wait = loss, epoch, 0
            self.best_state = [p.detach().clone() for p in params]
        else:
            self.wait += 1
        return improved

    @property
    def stop(self) -> bool:
        """``patience`` epochs have passed without an improvement."""
        return self.wait >= self.patience


def new_history(*keys: str) -> dict[str, list[float]]:
    """An empty ``history_``: one list per key, in this order."""
    return {key: [] for key in keys}


def append_history(history: dict[str, list[float]], record: object) -> None:
    """Append to each list of ``history`` the field of the epoch ``record`` with the same name."""
    for key, values in history.items():
        values.append(getattr(record, key))


def check_param_table(checks: Sequence[tuple[str, Any, bool]]) -> None:
    """Raise :class:`InputError` (``field`` = the name) for the first ``(name, value, ok)``
    whose ``ok`` is False or whose value is a non-finite number (``None`` passes: automatic)."""
    for name, value, ok in checks:
        if not (ok and (value is None or np.isfinite(value))):
            raise InputError(f"invalid {name}={value!r}", field=name)


def fit_from_iter(
    iter_fit: Callable[P, Generator[Any, None, R]],
) -> Callable[P, R]:
    """``fit`` made from ``iter_fit``: the same parameters, runs the generator to the end and
    returns its return value (the fitted estimator), discarding the progress records.

    Use in a class body as ``fit = fit_from_iter(iter_fit)``; ``inspect.signature(fit)`` is
    that of ``iter_fit`` without its return annotation (scikit-learn introspects ``fit``).
    """

    @functools.wraps(iter_fit)
    def fit(*args: P.args, **kwargs: P.kwargs) -> R:
        fitting = iter_fit(*args, **kwargs)
        while True:
            try:
                next(fitting)
            except StopIteration as done:
                return done.value

    # the signature callers see: iter_fit's parameters, returning what its generator returns
    fit.__signature__ = inspect.signature(iter_fit).replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty
    )
    fit.__name__ = "fit"
    fit.__qualname__ = iter_fit.__qualname__.removesuffix("iter_fit") + "fit"
    fit.__doc__ = (
        "Fit without progress records: the parameters of :meth:`iter_fit`, which it runs to "
        "the end. Returns ``self``."
    )
    return fit
