"""Distillation job features: gradient accumulation, the triplet head, the preservation term,
extra validators, pause, AMP on CPU and out-of-memory advice.

Same toy problem as ``test_distill.py``: a tiny conv net on 16-px noise images whose teacher
similarities are dot products of a fixed random projection of the pixels.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import (
    DistillOutOfMemoryError,
    DistillResult,
    distill,
    kl_triplet_loss,
    load_student_head,
    load_student_state,
    make_triplet_head,
    save_student,
    stacked_pair_similarities,
    triplet_head_from_state,
)
from alignet_engine.distill.checkpoint import load_checkpoint
from alignet_engine.errors import AlignetError, InputError
from alignet_engine.jobs import Cancelled, Event, JobControl, LossBatch, Message, Progress, run_job
from tests.engine.distill.toys import Toy, pair_sims, quick, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")


def collect(job) -> tuple[DistillResult, list[Event]]:  # type: ignore[no-untyped-def]
    events: list[Event] = []
    return run_job(job, events.append), events


def assert_same_run(got: DistillResult, expected: DistillResult) -> None:
    assert got.history.keys() == expected.history.keys()
    for key, curve in expected.history.items():
        np.testing.assert_array_equal(got.history[key], curve, err_msg=key)
    for key, value in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], value), key
    if expected.head_state is None:
        assert got.head_state is None
    else:
        assert got.head_state is not None
        for key, value in expected.head_state.items():
            assert torch.equal(got.head_state[key], value), key


# ------------------------------------------------------------------------------------------
# gradient accumulation


def test_accumulation_equals_the_large_batch(toy: Toy) -> None:
    images, triplets, sims = toy
    net = tiny_net()
    settings = {"steps": 6, "augment": True, "grad_clip": 0.0, "warmup_steps": 0}
    big = run_job(
        distill(copy.deepcopy(net), images, triplets, sims, quick(batch_size=8, **settings))
    )
    acc = run_job(
        distill(
            copy.deepcopy(net),
            images,
            triplets,
            sims,
            quick(batch_size=4, accumulation_steps=2, **settings),
        )
    )
    assert acc.config.effective_batch_size == 8
    for key in ("loss", "triplet", "agreement", "grad_norm", "drift"):
        np.testing.assert_allclose(acc.history[key], big.history[key], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(acc.history["agreement"], big.history["agreement"])
    for key, value in big.state_dict.items():
        torch.testing.assert_close(acc.state_dict[key], value, rtol=1e-4, atol=1e-6)
    # and it is not trivially so: half the batch alone is another update
    half = run_job(
        distill(copy.deepcopy(net), images, triplets, sims, quick(batch_size=4, **settings))
    )
    assert not np.allclose(half.history["loss"], big.history["loss"], rtol=1e-3)


# ------------------------------------------------------------------------------------------
# triplet head


def test_head_defines_the_similarities_and_is_not_pulled(toy: Toy) -> None:
    images, triplets, sims = toy
    net = tiny_net()
    config = quick(steps=8, head_dim=6, grad_clip=0.0)
    result = run_job(distill(copy.deepcopy(net), images, triplets, sims, config))
    assert result.head_state is not None
    assert result.head_state["weight"].shape == (6, 32) and result.head_state["bias"].shape == (6,)

    # step 1's loss, recomputed by hand: the first batch's similarities are those of the
    # *head's* output (the head as make_triplet_head builds it) on the untrained net
    rows = np.random.default_rng(config.seed).permutation(len(triplets))[: config.batch_size]
    head0 = make_triplet_head(32, 6, config.seed + 2)
    reference = copy.deepcopy(net).eval()
    with torch.no_grad():
        x = images[torch.from_numpy(triplets[rows].reshape(-1))]
        s = stacked_pair_similarities(head0(reference(x)).reshape(-1, 3, 6), "cosine")
        expected = kl_triplet_loss(
            torch.from_numpy(sims[rows]), s, student_temperature=config.student_temperature
        )
    assert result.history["loss"][0] == pytest.approx(float(expected), rel=1e-5)

    # a pull so strong that the backbone restarts from θ₀ every step leaves the head free
    def distances(lam: float) -> tuple[float, float]:
        r = run_job(
            distill(
                copy.deepcopy(net),
                images,
                triplets,
                sims,
                quick(steps=8, head_dim=6, lr=1e-2, weight_decay_to_init=lam),
            )
        )
        assert r.head_state is not None
        head_moved = float((r.head_state["weight"] - head0.weight.detach()).norm())
        return head_moved, float(r.history["drift"][-1])

    head_free, drift_free = distances(0.0)
    head_pulled, drift_pulled = distances(1e9)
    assert drift_pulled < 0.25 * drift_free
    assert head_pulled > 0.5 * head_free


def test_student_file_carries_the_head(tmp_path: Path) -> None:
    net = tiny_net()
    head = make_triplet_head(32, 5, seed=3)
    path = tmp_path / "student.safetensors"
    save_student(path, net, {"architecture": "tiny"}, head_state=head.state_dict())
    state = load_student_state(path)
    assert state.keys() == net.state_dict().keys()  # loads strictly into the backbone
    saved = load_student_head(path)
    assert saved is not None
    restored = triplet_head_from_state(saved)
    x = torch.randn(4, 32)
    assert torch.equal(restored(x), head(x))
    plain = tmp_path / "plain.safetensors"
    save_student(plain, net, {"architecture": "tiny"})
    assert load_student_head(plain) is None


# ------------------------------------------------------------------------------------------
# representation preservation


def _pool_drift(state: dict[str, torch.Tensor], net: nn.Module, images: torch.Tensor) -> float:
    """Mean 1 − cos between the features of ``state`` and of ``net`` on every pool image."""
    trained = copy.deepcopy(net)
    trained.load_state_dict(state)
    with torch.no_grad():
        before = net.eval()(images)
        after = trained.eval()(images)
    return float((1 - F.cosine_similarity(after, before, dim=-1)).mean())


def test_preserve_term_is_streamed_and_keeps_the_representation(toy: Toy) -> None:
    images, triplets, sims = toy
    net = tiny_net()
    settings = {"steps": 15, "lr": 1e-2, "weight_decay_to_init": 0.0, "augment": True}
    free = run_job(distill(copy.deepcopy(net), images, triplets, sims, quick(**settings)))
    kept, events = collect(
        distill(copy.deepcopy(net), images, triplets, sims, quick(preserve_weight=20.0, **settings))
    )
    h = kept.history
    assert "preserve" in h and "preserve" not in free.history
    np.testing.assert_allclose(h["loss"], h["triplet"] + 20.0 * h["preserve"], rtol=1e-12)
    # θ = θ₀ at step 1: current features equal the cached pretrained ones of the same images
    # in the same orientation (a wrongly flipped cache would not give ~0 here)
    assert 0 <= h["preserve"][0] < 1e-5
    assert h["preserve"][-1] > h["preserve"][0]
    train = [e for e in events if isinstance(e, LossBatch) and "loss" in e.values]
    np.testing.assert_array_equal(
        np.concatenate([e.values["preserve"] for e in train]), h["preserve"]
    )
    caching = [e for e in events if isinstance(e, Progress) and "caching" in e.message]
    assert caching and caching[-1].done == caching[-1].total == len(np.unique(triplets))
    # the term does what it is for: features on the whole pool stay closer to θ₀'s
    assert _pool_drift(kept.state_dict, net, images) < 0.5 * _pool_drift(
        free.state_dict, net, images
    )


def test_everything_on_resumes_bitwise(toy: Toy, tmp_path: Path) -> None:
    """Head + preservation + accumulation + augmentation + a validator: exact resume."""
    images, triplets, sims = toy
    config = quick(
        steps=12,
        batch_size=4,
        accumulation_steps=2,
        head_dim=6,
        preserve_weight=1.0,
        augment=True,
        val_every=4,
        checkpoint_every=5,
    )
    val = (triplets[200:], sims[200:])
    validators = {"mean_norm": lambda student: float(student(images[:8]).norm(dim=1).mean())}

    def job(control: JobControl | None = None, path: Path | None = None, resume: bool = False):  # type: ignore[no-untyped-def]
        return distill(
            tiny_net(),
            images,
            triplets[:200],
            sims[:200],
            config,
            val=val,
            validators=validators,
            control=control,
            checkpoint_path=path,
            resume_from=path if resume else None,
        )

    expected = run_job(job())
    path = tmp_path / "run.ckpt"
    control = JobControl()
    interrupted = job(control, path)
    for event in interrupted:
        if isinstance(event, Progress) and event.done == 7 and not event.message:
            control.cancel()
            break
    with pytest.raises(Cancelled):
        next(interrupted)
    ckpt = load_checkpoint(path)
    assert ckpt.steps_done == 7 and ckpt.preserve_features is not None
    assert ckpt.preserve_features.shape == (len(np.unique(triplets[:200])), 2, 32)
    assert "triplet_head.weight" in ckpt.model and "triplet_head.weight" not in ckpt.init
    resumed = run_job(job(path=path, resume=True))
    assert_same_run(resumed, expected)
    np.testing.assert_array_equal(expected.history["val_step"], [0, 4, 8, 12])
    assert resumed.seconds >= ckpt.seconds > 0

    # a checkpoint without a head does not resume a run with one
    with pytest.raises(InputError, match="head_dim"):
        distill(tiny_net(), images, triplets[:200], sims[:200], quick(), resume_from=path)


# ------------------------------------------------------------------------------------------
# validators


def _independent_accuracy(net: nn.Module, images: torch.Tensor, judged: np.ndarray) -> float:
    with torch.no_grad():
        z = net.eval()(images).double().numpy()
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    s = pair_sims(z[judged])
    return float(np.mean((s[:, 0] > s[:, 1]) & (s[:, 0] > s[:, 2])))


def test_validators_stream_a_curve_starting_at_the_base_value(toy: Toy) -> None:
    from alignet_engine.align.metrics import oddone_correct

    images, triplets, sims = toy
    judged = triplets[200:]  # the teacher's choices stand in for human judgments

    def accuracy(student: nn.Module) -> float:
        assert not student.training and not torch.is_grad_enabled()
        features = student(images).double().numpy()
        return float(oddone_correct(features, judged, metric="cosine").mean())

    net = tiny_net()
    base = _independent_accuracy(copy.deepcopy(net), images, judged)
    result, events = collect(
        distill(
            net,
            images,
            triplets[:200],
            sims[:200],
            quick(steps=10, val_every=5, channels_last=False),
            validators={"human": accuracy},
        )
    )
    h = result.history
    np.testing.assert_array_equal(h["val_step"], [0, 5, 10])
    assert "val_agreement" not in h  # no validation triplets given: the validator alone
    assert h["val_human"][0] == base
    val = [e for e in events if isinstance(e, LossBatch) and "val_human" in e.values]
    assert [int(e.steps[0]) for e in val] == [0, 5, 10]
    np.testing.assert_array_equal(
        np.concatenate([e.values["val_human"] for e in val]), h["val_human"]
    )
    assert net.training  # modes restored

    with pytest.raises(InputError, match="validator") as info:
        distill(net, images, triplets, sims, quick(), validators={"loss": accuracy})
    assert info.value.field == "validators"


# ------------------------------------------------------------------------------------------
# pause, AMP on CPU


def test_pause_is_not_counted_and_changes_nothing(toy: Toy) -> None:
    images, triplets, sims = toy
    config = quick(steps=10, augment=True)
    expected = run_job(distill(tiny_net(), images, triplets, sims, config))

    control = JobControl()
    events: list[Event] = []
    job = distill(tiny_net(), images, triplets, sims, config, control=control)
    pause = 0.6
    began = time.monotonic()
    resumer: threading.Timer | None = None
    try:
        while True:
            event = next(job)
            events.append(event)
            if isinstance(event, Progress) and event.done == 4 and resumer is None:
                control.pause()
                resumer = threading.Timer(pause, control.resume)
                resumer.start()
    except StopIteration as stop:
        result: DistillResult = stop.value
    wall = time.monotonic() - began
    assert resumer is not None
    assert_same_run(result, expected)
    assert result.paused_seconds >= pause - 0.05
    assert result.seconds <= wall - result.paused_seconds + 0.05
    done = [e for e in events if isinstance(e, Message)][-1].text
    assert "paused" in done and "steps/s" in done


def test_amp_is_a_noop_on_cpu_and_says_so(toy: Toy) -> None:
    images, triplets, sims = toy
    plain = run_job(distill(tiny_net(), images, triplets, sims, quick(steps=4)))
    amp, events = collect(distill(tiny_net(), images, triplets, sims, quick(steps=4, amp=True)))
    notes = [e for e in events if isinstance(e, Message) and "amp" in e.text]
    assert notes and notes[0].level == "WARNING" and "float32" in notes[0].text
    for key in plain.history:
        np.testing.assert_array_equal(amp.history[key], plain.history[key])


# ------------------------------------------------------------------------------------------
# out of memory


class _Exploding(nn.Module):
    """The tiny net, raising a device out-of-memory error at a given forward call."""

    def __init__(self, error: BaseException, at: int, training_only: bool = True) -> None:
        super().__init__()
        self.net = tiny_net()
        self.error = error
        self.at = at
        self.training_only = training_only
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.training_only:
            self.calls += 1
            if self.calls == self.at:
                raise self.error
        return self.net(x)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"),
    ],
)
def test_out_of_memory_in_a_step_gives_advice(toy: Toy, error: BaseException) -> None:
    images, triplets, sims = toy
    net = _Exploding(error, at=3)
    config = quick(batch_size=8, accumulation_steps=1)
    with pytest.raises(DistillOutOfMemoryError) as info:
        run_job(distill(net, images, triplets, sims, config))
    message = str(info.value)
    assert isinstance(info.value, AlignetError)
    assert "training step 3" in message
    assert "batch_size (now 8; e.g. 4 — accumulation_steps=2 keeps the effective batch of 8" in (
        message
    )
    assert "image_size (images are 16×16 px)" in message
    assert net.training  # modes restored on the way out
    # every gradient was dropped with the failed step
    assert all(p.grad is None for p in net.parameters())


def test_out_of_memory_in_validation_and_other_errors(toy: Toy) -> None:
    images, triplets, sims = toy
    net = _Exploding(torch.OutOfMemoryError("CUDA out of memory"), at=1, training_only=False)
    net.eval()  # the first forward is the validation before training
    with pytest.raises(DistillOutOfMemoryError, match=r"during validation.*eval_batch_size"):
        run_job(
            distill(
                net, images, triplets[:200], sims[:200], quick(), val=(triplets[200:], sims[200:])
            )
        )
    # any other RuntimeError passes through unchanged
    boom = _Exploding(RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"), at=2)
    with pytest.raises(RuntimeError, match="CUDNN_STATUS") as info:
        run_job(distill(boom, images, triplets, sims, quick()))
    assert not isinstance(info.value, AlignetError)


def test_new_config_fields_are_validated() -> None:
    for field, value in (
        ("head_dim", -1),
        ("accumulation_steps", 0),
        ("preserve_weight", -0.5),
        ("amp", "yes"),
    ):
        with pytest.raises(InputError) as info:
            DistillConfig(**{field: value})  # type: ignore[arg-type]
        assert info.value.field == field
    config = DistillConfig(head_dim=1024, preserve_weight=0.5, accumulation_steps=4, amp=True)
    assert DistillConfig.from_dict(config.to_dict()) == config
    assert config.effective_batch_size == 64
