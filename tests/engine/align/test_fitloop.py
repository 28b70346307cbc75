"""The fit-loop steps the align estimators share (``align/fitloop.py``).

The estimators' own tests check the fits end to end; these check the shared pieces' contracts
that every fit relies on: when the loop stops and what it returns, that an epoch's batches
visit every row once, which state early stopping keeps, and that ``fit`` takes exactly the
parameters of ``iter_fit``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from alignet_engine.align.fitloop import (
    EarlyStopping,
    append_history,
    check_param_table,
    fit_from_iter,
    new_history,
    run_epochs,
    shuffled_batches,
    torch_generator,
)
from alignet_engine.align.human_models import VICE, VICEEpoch
from alignet_engine.align.model_selection import TransformSearch
from alignet_engine.align.transform import AffineTransform, FitEpoch
from alignet_engine.errors import InputError


def test_run_epochs_yields_each_record_and_stops_after_the_one_that_asks() -> None:
    seen: list[int] = []

    def epoch(n: int) -> int:
        seen.append(n)
        return n * 10

    loop = run_epochs(10, epoch, lambda rec: rec == 30)
    records = []
    with pytest.raises(StopIteration) as done:
        while True:
            records.append(next(loop))
    assert records == [10, 20, 30]
    assert seen == [1, 2, 3]  # epoch 4 never started
    assert done.value.value == 3

    loop = run_epochs(4, epoch, lambda rec: False)
    assert list(loop) == [10, 20, 30, 40]


def test_shuffled_batches_visit_every_position_once_in_the_randperm_order() -> None:
    batches = list(shuffled_batches(10, 4, torch.Generator().manual_seed(5)))
    assert [b.numel() for b in batches] == [4, 4, 2]
    order = torch.cat(batches)
    assert sorted(order.tolist()) == list(range(10))
    # the same permutation a plain loop draws from the same stream
    assert torch.equal(order, torch.randperm(10, generator=torch.Generator().manual_seed(5)))
    assert list(shuffled_batches(0, 4, torch.Generator())) == []


def test_torch_generator_is_decided_by_the_numpy_stream() -> None:
    a = torch.randn(3, generator=torch_generator(np.random.default_rng(1)))
    b = torch.randn(3, generator=torch_generator(np.random.default_rng(1)))
    c = torch.randn(3, generator=torch_generator(np.random.default_rng(2)))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_early_stopping_keeps_the_best_state_and_needs_more_than_tol() -> None:
    w = torch.zeros(2)
    stop = EarlyStopping(1.0, [w], patience=2, tol=0.1)
    assert stop.best_epoch == 0 and torch.equal(stop.best_state[0], torch.zeros(2))

    w += 1.0
    assert not stop.update(1, 0.95, [w])  # better, but by less than tol
    assert stop.wait == 1 and not stop.stop
    w += 1.0
    assert stop.update(2, 0.8, [w])
    assert (stop.best, stop.best_epoch, stop.wait) == (0.8, 2, 0)
    w += 1.0  # the kept state is a copy, not the live tensor
    assert torch.equal(stop.best_state[0], torch.full((2,), 2.0))

    assert not stop.update(3, 0.9, [w])
    assert not stop.stop
    assert not stop.update(4, 0.8, [w])  # equal is no improvement
    assert stop.stop and stop.best_epoch == 2


def test_history_takes_the_record_fields_named_by_its_keys() -> None:
    history = new_history("train_loss", "penalty")
    append_history(history, FitEpoch(1, 0.5, 0.6, float("nan"), 2.0, True))
    append_history(history, FitEpoch(2, 0.4, 0.5, float("nan"), 3.0, False))
    assert history == {"train_loss": [0.5, 0.4], "penalty": [2.0, 3.0]}


def test_check_param_table_names_the_first_bad_parameter() -> None:
    check_param_table([("lam", None, True), ("lr", 0.1, True)])  # None = automatic
    with pytest.raises(InputError) as err:
        check_param_table([("lr", 0.1, True), ("tau", float("nan"), True), ("k", -1, False)])
    assert err.value.field == "tau"
    with pytest.raises(InputError, match="invalid k=-1"):
        check_param_table([("k", -1, False)])


@pytest.mark.parametrize("cls", [AffineTransform, VICE, TransformSearch])
def test_fit_takes_the_parameters_of_iter_fit(cls: type) -> None:
    fit, iter_fit = inspect.signature(cls.fit), inspect.signature(cls.iter_fit)
    assert list(fit.parameters.values()) == list(iter_fit.parameters.values())
    assert fit.return_annotation is inspect.Signature.empty
    assert cls.fit.__name__ == "fit" and cls.fit.__qualname__ == f"{cls.__name__}.fit"


def test_fit_from_iter_returns_the_generators_value() -> None:
    class Counter:
        def iter_fit(self, n: int, *, step: int = 1):
            yield from range(0, n, step)
            self.n_ = n
            return self

        fit = fit_from_iter(iter_fit)

    c = Counter()
    assert c.fit(5, step=2) is c and c.n_ == 5
    with pytest.raises(TypeError):
        c.fit(5, stride=2)


def test_vice_records_match_its_history() -> None:
    rng = np.random.default_rng(0)
    trip = np.stack([rng.permutation(12)[:3] for _ in range(300)])
    vice = VICE(n_dims=4, max_epochs=3, burnin=0, ws=2, batch_size=64, random_state=0)
    records = list(vice.iter_fit(trip, 12))
    assert all(isinstance(r, VICEEpoch) for r in records)
    assert [r.epoch for r in records] == list(range(1, vice.n_epochs_ + 1))
    for key, values in vice.history_.items():
        assert [getattr(r, key) for r in records] == values
    assert vice.converged_ == records[-1].converged
