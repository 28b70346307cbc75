"""Stage 5 (distillation): triplet losses against NumPy, and the training job's mechanics.

The training tests use a tiny conv net on 16-px noise images whose teacher similarities are
dot products of a fixed random projection of the pixels — a target the student can learn —
so the whole file runs in a few seconds on two CPU cores.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import (
    DistillDivergedError,
    DistillResult,
    contrastive_triplet_loss,
    distill,
    jsd_triplet_loss,
    kl_triplet_loss,
    load_student_config,
    load_student_state,
    odd_one_out_agreement,
    save_student,
    stacked_pair_similarities,
)
from alignet_engine.errors import InputError
from alignet_engine.jobs import (
    Cancelled,
    Event,
    Job,
    JobControl,
    LossBatch,
    Message,
    Progress,
    run_job,
)
from tests.engine.distill.toys import Toy, quick, tiny_net, toy_problem

# ------------------------------------------------------------------------------------------
# NumPy references


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


@pytest.fixture
def sims() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.normal(0, 3, (64, 3)).astype(np.float32),
        rng.normal(0, 1, (64, 3)).astype(np.float32),
    )


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


# ------------------------------------------------------------------------------------------
# losses


@pytest.mark.parametrize(("tau_t", "tau_s"), [(1.0, 1.0), (0.5, 0.1), (2.0, 3.0)])
def test_kl_matches_numpy(sims: tuple[np.ndarray, np.ndarray], tau_t: float, tau_s: float) -> None:
    teacher, student = sims
    p = np.exp(np_log_softmax(teacher / tau_t))
    q = np.exp(np_log_softmax(student / tau_s))
    expected = np_kl(p, q)
    got = kl_triplet_loss(
        t(teacher), t(student), teacher_temperature=tau_t, student_temperature=tau_s
    )
    assert got.ndim == 0
    assert float(got) == pytest.approx(expected.mean(), rel=1e-5)
    per = kl_triplet_loss(
        t(teacher),
        t(student),
        teacher_temperature=tau_t,
        student_temperature=tau_s,
        reduction="none",
    )
    np.testing.assert_allclose(per.numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("tau_t", "tau_s"), [(1.0, 1.0), (0.5, 0.1)])
def test_jsd_matches_numpy(sims: tuple[np.ndarray, np.ndarray], tau_t: float, tau_s: float) -> None:
    teacher, student = sims
    p = np.exp(np_log_softmax(teacher / tau_t))
    q = np.exp(np_log_softmax(student / tau_s))
    m = (p + q) / 2
    expected = 0.5 * np_kl(p, m) + 0.5 * np_kl(q, m)
    per = jsd_triplet_loss(
        t(teacher),
        t(student),
        teacher_temperature=tau_t,
        student_temperature=tau_s,
        reduction="none",
    )
    np.testing.assert_allclose(per.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert float(per.max()) <= math.log(2) + 1e-6


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_contrastive_matches_numpy(sims: tuple[np.ndarray, np.ndarray], tau: float) -> None:
    _, student = sims
    expected = -np_log_softmax(student / tau)[:, 0]
    got = contrastive_triplet_loss(t(student), tau, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    target = torch.tensor([0, 1, 2] * 21 + [1])
    got = contrastive_triplet_loss(t(student), tau, target=target)
    expected = -np_log_softmax(student / tau)[np.arange(64), target.numpy()]
    assert float(got) == pytest.approx(expected.mean(), rel=1e-5)


def test_losses_hand_computed() -> None:
    # teacher [ln 2, 0, 0] → p = [1/2, 1/4, 1/4]; uniform student q = 1/3 each
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    student = torch.zeros(1, 3)
    kl = 0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75)
    assert float(kl_triplet_loss(teacher, student)) == pytest.approx(kl, rel=1e-6)
    assert float(contrastive_triplet_loss(student)) == pytest.approx(math.log(3.0), rel=1e-6)
    assert float(kl_triplet_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    assert float(jsd_triplet_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)


def test_losses_are_stable_for_huge_logits() -> None:
    teacher = torch.tensor([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[-1e4, 1e4, 0.0], [3e4, 0.0, -3e4]], requires_grad=True)
    for loss in (
        kl_triplet_loss(teacher, student),
        jsd_triplet_loss(teacher, student),
        contrastive_triplet_loss(student),
    ):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(grad).all()
    # JSD saturates at ln 2 for disjoint one-hot distributions
    assert float(
        jsd_triplet_loss(teacher[:1], student[:1].detach(), reduction="none")
    ) == pytest.approx(math.log(2), rel=1e-5)


def test_no_gradient_into_the_teacher() -> None:
    teacher = torch.randn(4, 3, requires_grad=True)
    student = torch.randn(4, 3, requires_grad=True)
    kl_triplet_loss(teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None


def test_triplet_similarities_and_agreement() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(5, 3, 7)).astype(np.float32)
    dots = np.stack(
        [(f[:, 0] * f[:, 1]).sum(-1), (f[:, 0] * f[:, 2]).sum(-1), (f[:, 1] * f[:, 2]).sum(-1)], 1
    )
    np.testing.assert_allclose(stacked_pair_similarities(t(f), "dot").numpy(), dots, rtol=1e-5)
    n = np.linalg.norm(f, axis=-1)
    cos = dots / np.stack([n[:, 0] * n[:, 1], n[:, 0] * n[:, 2], n[:, 1] * n[:, 2]], 1)
    np.testing.assert_allclose(stacked_pair_similarities(t(f), "cosine").numpy(), cos, rtol=1e-5)

    teacher = torch.tensor([[3.0, 1.0, 0.0]] * 4)
    student = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])
    # a tied maximum counts as wrong, even when the teacher's pair is among the tied
    assert odd_one_out_agreement(student, teacher).tolist() == [True, False, False, False]


def test_loss_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\(b, 3\)"):
        kl_triplet_loss(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        jsd_triplet_loss(torch.zeros(2, 3), torch.zeros(2, 3), student_temperature=0.0)


# ------------------------------------------------------------------------------------------
# a learnable toy problem (tests/engine/distill/toys.py; the `toy` fixture is in conftest.py)


def collect(job: Job[DistillResult]) -> tuple[DistillResult, list[Event]]:
    events: list[Event] = []
    result = run_job(job, events.append)
    return result, events


def test_loss_decreases_and_val_agreement_rises(toy: Toy) -> None:
    images, triplets, sims = toy
    config = quick(steps=60, batch_size=16, lr=3e-3, warmup_steps=5, weight_decay_to_init=0.0)
    config = DistillConfig.from_dict({**config.to_dict(), "val_every": 20})
    result = run_job(
        distill(
            tiny_net(), images, triplets[:200], sims[:200], config, val=(triplets[200:], sims[200:])
        )
    )
    h = result.history
    assert result.steps_done == 60
    assert len(h["step"]) == 60
    assert h["loss"][-10:].mean() < 0.7 * h["loss"][:10].mean()
    np.testing.assert_array_equal(h["val_step"], [0, 20, 40, 60])
    assert h["val_agreement"][-1] > h["val_agreement"][0] + 0.1
    assert all(np.isfinite(v).all() for v in h.values())
    # decoupled decay is not a loss term: loss and triplet coincide
    np.testing.assert_array_equal(h["loss"], h["triplet"])


@pytest.mark.parametrize("channels_last", [True, False])
def test_update_rule_matches_reference(toy: Toy, channels_last: bool) -> None:
    """θ ← θ − η[Adam(g) + λ(θ − θ₀)], checked against a hand-written loop."""
    images, triplets, sims = toy
    m, lr, lam, steps = 8, 1e-2, 3.0, 4
    config = quick(
        steps=steps,
        batch_size=m,  # every batch is all m triplets, so the reference sees the same data
        lr=lr,
        warmup_steps=0,
        schedule="constant",
        weight_decay_to_init=lam,
        grad_clip=0.0,
        channels_last=channels_last,
    )
    student = tiny_net()
    reference = copy.deepcopy(student)
    result = run_job(distill(student, images, triplets[:m], sims[:m], config))

    reference.eval()  # the toy net has only BatchNorm, which the trainer freezes
    params = list(reference.parameters())
    theta0 = [p.detach().clone() for p in params]
    adam = torch.optim.Adam(params, lr=lr)
    x = images[torch.from_numpy(triplets[:m].reshape(-1))]
    teacher = torch.from_numpy(sims[:m])
    for _ in range(steps):
        s = stacked_pair_similarities(reference(x).reshape(m, 3, -1), "cosine")
        loss = kl_triplet_loss(teacher, s, student_temperature=config.student_temperature)
        adam.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in params]
        adam.step()
        with torch.no_grad():
            for p, b, p0 in zip(params, before, theta0, strict=True):
                p -= lr * lam * (b - p0)
    for name, value in reference.state_dict().items():
        assert result.state_dict[name].is_contiguous()
        torch.testing.assert_close(result.state_dict[name], value, rtol=1e-4, atol=2e-6)


def test_decay_to_init_holds_weights_near_init(toy: Toy) -> None:
    images, triplets, sims = toy
    drifts = {}
    for lam in (0.0, 1e9):
        net = tiny_net()
        theta0 = {k: v.clone() for k, v in net.state_dict().items()}
        result = run_job(
            distill(net, images, triplets, sims, quick(lr=1e-2, weight_decay_to_init=lam))
        )
        distance = math.sqrt(
            sum(float((result.state_dict[k] - v).pow(2).sum()) for k, v in theta0.items())
        )
        drifts[lam] = (distance, result.history["drift"][-1])
    # with λη ≥ 1 every step restarts from θ₀: the weights are one Adam step (≈ η) away
    assert drifts[1e9][0] < 0.25 * drifts[0.0][0]
    assert drifts[1e9][1] < 0.25 * drifts[0.0][1]


def test_same_seed_same_history(toy: Toy) -> None:
    images, triplets, sims = toy
    config = quick(augment=True)
    net = tiny_net()
    a = run_job(distill(copy.deepcopy(net), images, triplets, sims, config))
    b = run_job(distill(copy.deepcopy(net), images, triplets, sims, config))
    # the same data through a load_batch callable gives the same run too
    c = run_job(
        distill(
            copy.deepcopy(net),
            lambda ids: images[torch.from_numpy(ids)],
            triplets,
            sims,
            config,
        )
    )
    d = run_job(distill(copy.deepcopy(net), images, triplets, sims, quick(augment=True, seed=1)))
    for other in (b, c):
        assert other.history.keys() == a.history.keys()
        for key in a.history:
            np.testing.assert_array_equal(other.history[key], a.history[key])
        for key in a.state_dict:
            assert torch.equal(other.state_dict[key], a.state_dict[key])
    assert not np.array_equal(d.history["loss"], a.history["loss"])


def test_event_stream(toy: Toy) -> None:
    images, triplets, sims = toy
    config = quick(steps=12, val_every=5)
    result, events = collect(
        distill(
            tiny_net(), images, triplets[:200], sims[:200], config, val=(triplets[200:], sims[200:])
        )
    )
    train = [e for e in events if isinstance(e, LossBatch) and "loss" in e.values]
    val = [e for e in events if isinstance(e, LossBatch) and "val_agreement" in e.values]
    progress = [e for e in events if isinstance(e, Progress)]
    assert isinstance(events[0], Message) and isinstance(events[-1], Message)
    assert all(e.stage == "distill" for e in events)
    # log_every_s=0: one LossBatch and one Progress per step, plus the Progress at step 0
    assert len(train) == 12
    assert [p.done for p in progress] == list(range(13))
    assert all(p.total == 12 for p in progress)
    steps = np.concatenate([e.steps for e in train])
    np.testing.assert_array_equal(steps, np.arange(1, 13))
    np.testing.assert_array_equal(steps, result.history["step"])
    for name in ("loss", "triplet", "agreement", "lr", "grad_norm", "drift"):
        values = np.concatenate([e.values[name] for e in train])
        np.testing.assert_array_equal(values, result.history[name])
        assert values.dtype == np.float64
    assert steps.dtype == np.int64
    assert [int(e.steps[0]) for e in val] == [0, 5, 10, 12]
    np.testing.assert_array_equal(
        np.concatenate([e.values["val_agreement"] for e in val]), result.history["val_agreement"]
    )


def test_events_are_throttled_but_no_point_is_lost(toy: Toy) -> None:
    images, triplets, sims = toy
    _, events = collect(distill(tiny_net(), images, triplets, sims, quick(log_every_s=1e6)))
    train = [e for e in events if isinstance(e, LossBatch)]
    progress = [e.done for e in events if isinstance(e, Progress)]
    # the first step passes the throttle, the rest arrive in the final flush
    assert [len(e.steps) for e in train] == [1, 19]
    assert progress == [0, 1, 20]


def test_cancel_within_one_step(toy: Toy) -> None:
    images, triplets, sims = toy

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.net(x)

    net = Counting()
    control = JobControl()
    job = distill(net, images, triplets, sims, quick(), control=control)
    for event in job:
        if isinstance(event, Progress) and event.done == 2:
            control.cancel()
            calls = net.calls
            break
    with pytest.raises(Cancelled):
        next(job)
    assert net.calls == calls == 2
    assert net.training  # train/eval flags restored


def test_bn_frozen_by_default_and_modes_restored(toy: Toy) -> None:
    images, triplets, sims = toy
    net = tiny_net().eval()
    bn = net[1]
    before = bn.running_mean.clone()
    run_job(distill(net, images, triplets, sims, quick(steps=3)))
    assert torch.equal(bn.running_mean, before)
    assert not net.training and not bn.training

    run_job(distill(net, images, triplets, sims, quick(steps=3, train_bn=True)))
    assert not torch.equal(bn.running_mean, before)


def test_divergence_is_reported(toy: Toy) -> None:
    images, triplets, sims = toy
    net = tiny_net()
    with torch.no_grad():
        net[0].weight.fill_(float("nan"))
    with pytest.raises(DistillDivergedError, match="step 1"):
        run_job(distill(net, images, triplets, sims, quick()))


def test_bad_inputs_raise_input_error(toy: Toy) -> None:
    images, triplets, sims = toy
    bad = triplets.copy()
    bad[5, 1] = len(images)
    with pytest.raises(InputError, match="row 6") as info:
        distill(tiny_net(), images, bad, sims, quick())
    assert info.value.field == "triplets"
    with pytest.raises(InputError, match="shape"):
        distill(tiny_net(), images, triplets, sims[:10], quick())
    nan_sims = sims.copy()
    nan_sims[3, 0] = np.nan
    with pytest.raises(InputError, match="row 4"):
        distill(tiny_net(), images, triplets, nan_sims, quick())
    with pytest.raises(InputError, match="load_batch"):
        run_job(distill(tiny_net(), lambda ids: torch.zeros(2, 3, 16, 16), triplets, sims, quick()))
    with pytest.raises(InputError, match="feature_fn"):
        run_job(distill(nn.Conv2d(3, 4, 3), images, triplets, sims, quick()))


@pytest.mark.filterwarnings("error")
def test_read_only_arrays_are_accepted(toy: Toy) -> None:
    images, triplets, sims = toy
    triplets, sims = triplets.copy(), sims.copy()
    triplets.setflags(write=False)
    sims.setflags(write=False)
    result = run_job(
        distill(tiny_net(), images, triplets, sims, quick(steps=2), val=(triplets, sims))
    )
    assert result.steps_done == 2


def test_timm_efficientnet_lite0_smoke() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    images, triplets, sims = toy_problem(n=12, m=8, size=32)
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    result = run_job(distill(model, images, triplets, sims, quick(steps=2, batch_size=2)))
    assert result.steps_done == 2
    assert np.isfinite(result.history["loss"]).all()
    assert result.history["drift"][-1] > 0
    for key, value in bn_before.items():
        assert torch.equal(result.state_dict[key], value)


# ------------------------------------------------------------------------------------------
# configuration


def test_config_round_trip_and_schedule() -> None:
    config = DistillConfig(steps=100, warmup_steps=10, lr=1e-3, loss="jsd")
    data = json.loads(json.dumps(config.to_dict()))
    assert DistillConfig.from_dict(data) == config
    assert DistillConfig.from_dict({}) == DistillConfig()
    lrs = np.array([config.lr_at(s) for s in range(100)])
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[10:]) < 0) and 0 < lrs[-1] < 1e-5
    flat = DistillConfig(steps=10, warmup_steps=0, schedule="constant", lr=0.5)
    assert [flat.lr_at(s) for s in range(10)] == [0.5] * 10


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", 1.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("warmup_steps", 301),
        ("warmup_steps", -1),
        ("schedule", "linear"),
        ("weight_decay_to_init", -1.0),
        ("loss", "mse"),
        ("similarity", "l2"),
        ("teacher_temperature", 0.0),
        ("student_temperature", -0.1),
        ("grad_clip", float("inf")),
        ("seed", -1),
        ("seed", True),
        ("log_every_s", -1.0),
        ("val_every", -5),
        ("eval_batch_size", 0),
        ("train_bn", "no"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        DistillConfig(**{field: value})  # type: ignore[arg-type]
    assert isinstance(info.value, InputError) and info.value.field == field


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        DistillConfig.from_dict({"learning_rate": 0.1})


# ------------------------------------------------------------------------------------------
# checkpoints


def test_save_and_load_student(tmp_path: Path) -> None:
    net = tiny_net()
    path = tmp_path / "student.safetensors"
    meta = {"backbone": "tiny", "distill": DistillConfig().to_dict()}
    digest = save_student(path, net, meta)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]  # no temp left
    state = load_student_state(path)
    assert state.keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value)
    assert load_student_config(path) == meta
    restored = tiny_net(seed=1)
    restored.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(restored.eval()(x), net.eval()(x))

    # overwriting replaces the file in one step
    with torch.no_grad():
        net[0].bias.add_(1.0)
    assert save_student(path, net, meta) != digest
    assert torch.equal(load_student_state(path)["0.bias"], net[0].bias)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(InputError, match="not an AligNet student"):
        load_student_state(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"junk\.safetensors"):
        load_student_state(junk)
    with pytest.raises(FileNotFoundError):
        load_student_state(tmp_path / "missing.safetensors")
