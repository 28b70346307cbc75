"""Materials study: distil a human-aligned Lite2 teacher into a Lite0 student (issue 4, item 7).

The whole AligNet pipeline (method.md §2–§5) on real human data with the real stimuli, scored
on human judgments of materials that neither the teacher's transform nor the student ever saw
judgments of.

Data
----
Lagunas et al. (2019) material-appearance judgments, read where they lie in
``../shared/data/material_similarity`` (never copied): two-alternative rows (anchor, chosen,
other) with vote counts, ``answers_processed_train.json`` and ``_test.json`` merged and grouped
into unique (anchor, candidate pair) triplets with their vote proportions
(:func:`~alignet_engine.align.choice_distributions`). Images: the 100 materials on the Havran-1
shape under two light probes, ``havran1_ennis_298x298_LDR`` (jpg) and
``havran1_stpeters_256x256_LDR`` (png). Index i = the i-th image FILE NAME in Python ``sorted``
order (what the authors' loader, PROVENANCE.md and ``read_image_folder`` use; it differs from
sorting the bare stems only at 17 = chrome-steel / 18 = chrome, because ``-`` sorts before
``.``). Both folders share the stems; this is checked.

Split (object-disjoint, as ``materials_alignment.py``)
------------------------------------------------------
:func:`object_disjoint_folds` with 3 folds, ``random_state=0`` (the same folds as
``materials_alignment.py``). For fold f the materials of group f are HELD OUT (~1/3) and the
others are FIT materials (~2/3); a triplet belongs to a side only if all three of its materials
do (mixed triplets are used nowhere). ``--folds 0`` (default) runs one split; ``--folds 0 1 2``
runs all three and also pools the held-out predictions (every held-out triplet is then scored
by a student whose teacher never saw its materials' judgments).

Teacher (surrogate teacher, method.md §2–3)
-------------------------------------------
``efficientnet_lite2`` pre-logits features (1280-d) at its native 260 px eval preprocessing.
An :class:`AffineTransform` (``objective="soft"``: KL to the human vote proportions, λ = 0.1,
dot-product similarity, learned temperature T — the settings of ``materials_alignment.py``) is
fitted on the FIT materials' triplets only, on the ennis images (the folder the authors' code
scores on), with the feature matrix restricted to the fit materials so that not even its
standardisation sees a held-out image.

Pool (unlabelled images, method.md §4)
--------------------------------------
All 100 materials × both illuminations × ``--views`` views (default 10 → 2,000 images). View 0
is the eval centre crop (resize the short side to ``size / crop_pct``, centre crop), views 1..
are augmentations: a random resized crop (area 30–100 % of the image, aspect 3/4–4/3) and a
horizontal flip with probability ½. No colour, brightness, contrast or hue jitter: what people
judged is material appearance — hue, albedo, gloss and its highlights — so a photometric jitter
would change the very thing the teacher's labels are about, while a crop or a mirror image of
the same render keeps the material. Each view is cut ONCE from the full-resolution image and
resized twice: to the teacher's 260 px (its features are taken from that) and to the student's
training resolution (``--res``, default 160 px; stored as uint8 and decoded once into one
tensor). The teacher's aligned representation of a pool image is ``transform(Lite2 features of
that view)``. Using the held-out materials' IMAGES in the pool is allowed and deliberate:
AligNet's pool is unlabelled images; the held-out HUMAN JUDGMENTS are never used for fitting,
sampling, training or any choice made here (they are only scored at the end).

Triplets (method.md §4)
-----------------------
The last view of every image (view ``views − 1``) is reserved for validation; the others are
training images. k-means (``--k`` = 30, chosen a priori: ~3 materials × 2 lights per cluster)
runs on the teacher's aligned representations of the training views; validation views get the
nearest centroid. Cluster-boundary triplets (:func:`sample_triplets`, ``"cluster_boundary"``)
are drawn among the training views (``--triplets``, default 20,000 ≥ steps × batch) and,
separately, among the validation views (2,000): validation triplets share no image with
training triplets. :func:`teacher_odd_one_out` orders each row (odd one last) and the teacher
similarities are ``T · z_a·z_b`` — the transform's own triplet logits, whose temperature was
fitted to the human vote proportions, so the soft targets carry human-calibrated uncertainty
(``teacher_temperature = 1``).

Student (method.md §5)
----------------------
``efficientnet_lite0`` (:class:`StudentFeatures`) distilled with
:func:`alignet_engine.distill.distill`: KL loss, cosine student similarity with
τ_s = 0.1, decay-to-init λ = 1, Adam lr 1e-4 with 20 warm-up steps and cosine decay, batch 16,
grad clip 1, BatchNorm frozen — the engine's defaults — for ``--steps`` (default 150) steps at
``--res`` px (2,400 triplets seen, each at most once). Two CPU threads, to fit the 2-core
machine. The step count is set by wall time, not by results: a step (48 images at 160 px) takes
~1.3 s on the two cores alone, but 4–10 s while the machine is shared (load average 6–9 when
this was run), and 150 steps are what fits a ~30-minute budget then (a 400-step run was started
and stopped at step ~50 for that reason, before any held-out number of it existed).

Evaluation
----------
2AFC accuracy on the held-out materials' strict-majority triplets (the vote for the chosen
candidate > ½; ties have no majority and are excluded): correct when sim(anchor, chosen) >
sim(anchor, other) (ties wrong), with cosine similarity of pre-logits features for every
backbone, and the transform's own (dot-product) similarity for the aligned teacher (its
cosine is reported too). Rows: base Lite0 at its native 224 px and at the training resolution,
distilled Lite0 at the training resolution (the student is evaluated at the resolution it was
trained at), base Lite2, aligned Lite2. 95 % CIs are percentile bootstraps over triplets
(:func:`accuracy_summary`, 1,000 resamples); the distilled − base student difference gets a
paired bootstrap (same resampled triplets for both). Human noise ceilings of the held-out
triplets come from the votes (:func:`noise_ceiling_twoafc`: majority agreement and
leave-one-out agreement of a response with the majority of the others). The student's
agreement with the teacher's odd one out on the validation pool triplets is reported before
and after training; the fit materials' triplets are scored too, as an in-sample diagnostic.

Control (``--teacher untransformed``): the same pool, clusters-from-raw-features, triplets and
training, but the teacher is the raw Lite2 (scalar-standardised features, dot product, one
temperature fitted on the fit materials' vote proportions) — AligNet's "UnaligNet" control. It
separates what the human-aligned transform contributes from what any distillation of Lite2 on
these images (domain adaptation, a larger teacher) contributes.

Nothing is tuned on held-out human triplets: every setting above was fixed before the first
full run; variants for diagnosis are selected on the validation pool agreement or the fit
materials' triplets only (say so when you report them).

Run: ``nice -n 10 .venv/bin/python benchmarks/materials_distillation.py [--quick]``
(``--quick``: 3 views, 5 steps, to check the script end to end). Caches (pool, features) and a
JSON of the results go to ``--cache`` (default ``/tmp/alignet-bench-cache/materials_distill``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2 as T

from alignet_engine.align import AffineTransform, choice_distributions, kmeans
from alignet_engine.align.metrics import (
    accuracy_summary,
    noise_ceiling_twoafc,
    twoafc_choice_counts,
)
from alignet_engine.align.model_selection import object_disjoint_folds
from alignet_engine.align.triplet_sampling import sample_triplets, teacher_odd_one_out
from alignet_engine.base.types import Judgments
from alignet_engine.config.distill import DistillConfig
from alignet_engine.data.importers import read_image_folder, read_materials_json
from alignet_engine.distill import distill
from alignet_engine.jobs import LossBatch, run_job
from alignet_engine.models import (
    Preprocess,
    extract_features,
    load_backbone,
    load_image,
    make_transform,
)
from alignet_engine.stages.distill import StudentFeatures

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "material_similarity"
FOLDERS = ("havran1_ennis_298x298_LDR", "havran1_stpeters_256x256_LDR")
N_MAT = 100
TEACHER, STUDENT = "efficientnet_lite2", "efficientnet_lite0"
CROP_AREA = (0.3, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


# --------------------------------------------------------------------------------------------
# data


def image_paths() -> list[list[str]]:
    """Per illumination, the 100 image paths in index order (sorted file names)."""
    out, stems = [], []
    for folder in FOLDERS:
        images = read_image_folder(DATA / folder)
        paths = [str(p) for p in images.paths]
        if len(paths) != N_MAT:
            raise SystemExit(f"{folder}: expected {N_MAT} images, found {len(paths)}")
        out.append(paths)
        stems.append([Path(p).stem for p in paths])
    if stems[0] != stems[1]:
        raise SystemExit("the two illumination folders do not share file stems in order")
    return out


def human_triplets() -> tuple[Judgments, np.ndarray, np.ndarray]:
    """All judgments, unique (anchor, chosen, other) triplets and vote proportions (u, 2)."""
    parts = [read_materials_json(DATA / f"answers_processed_{s}.json") for s in ("train", "test")]
    allj = Judgments(
        "twoafc",
        np.concatenate([j.triplets for j in parts]),
        np.concatenate([j.participant for j in parts]),
        votes=np.concatenate([j.votes for j in parts]),  # type: ignore[misc]
    )
    triplets, probs = choice_distributions(allj)
    return allj, triplets, probs


# --------------------------------------------------------------------------------------------
# pool


def _to_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def center_view(img: Image.Image, pre: Preprocess, size: int) -> torch.Tensor:
    """(3, size, size) uint8: exactly :func:`make_transform` before its float conversion."""
    scale = math.floor(size / pre.crop_pct)
    resize = T.Resize(scale, interpolation=T.InterpolationMode.BICUBIC)
    return _to_uint8(T.CenterCrop(size)(resize(img)))


def random_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random-resized-crop box (left, top, right, bottom) of the given area and aspect range."""
    area = w * h
    for _ in range(20):
        a = area * rng.uniform(*CROP_AREA)
        r = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return x, y, x + cw, y + ch
    return 0, 0, w, h


def normalise(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (n, 3, H, W) → float32 normalised with the model's mean/std."""
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def build_pool(
    paths: list[list[str]], views: int, res: int, cache: Path, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Student-resolution uint8 views (n, 3, res, res) and teacher features (n, 1280).

    Pool id = (illumination · 100 + material) · views + view.
    """
    key = cache / f"pool_v{views}_r{res}_s{seed}"
    if (key.with_suffix(".pt")).is_file() and (key.with_suffix(".npy")).is_file():
        return torch.load(key.with_suffix(".pt")), np.load(key.with_suffix(".npy"))
    teacher = load_backbone(TEACHER)
    tpre, tsize = teacher.preprocess, teacher.preprocess.input_size
    spre = load_backbone(STUDENT).preprocess
    t_eval = make_transform(tpre)
    rng = np.random.default_rng(seed)
    student_views, feats = [], []
    t0 = time.perf_counter()
    for illum in range(len(paths)):
        for m, path in enumerate(paths[illum]):
            img = load_image(path)
            t_batch = [t_eval(img)]
            s_batch = [center_view(img, spre, res)]
            for _ in range(1, views):
                crop = img.crop(random_box(*img.size, rng))
                if rng.random() < 0.5:
                    crop = ImageOps.mirror(crop)
                t_batch.append(
                    normalise(_to_uint8(crop.resize((tsize, tsize), Image.BICUBIC))[None], tpre)[0]
                )
                s_batch.append(_to_uint8(crop.resize((res, res), Image.BICUBIC)))
            with torch.no_grad():
                feats.append(teacher.features(torch.stack(t_batch)).numpy())
            student_views.append(torch.stack(s_batch))
            if m % 25 == 24:
                print(
                    f"  pool: illumination {illum}, {m + 1}/{N_MAT} materials "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    pool = torch.cat(student_views)
    F = np.concatenate(feats).astype(np.float32)
    torch.save(pool, key.with_suffix(".pt"))
    np.save(key.with_suffix(".npy"), F)
    return pool, F


def student_features(model: torch.nn.Module, images: torch.Tensor, batch: int = 50) -> np.ndarray:
    """Eval-mode features of already normalised images (n, 3, H, W)."""
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch):
            out.append(model(images[s : s + batch]).float().numpy())
    model.train(was)
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# scoring


def twoafc_correct(F: np.ndarray, t: np.ndarray, similarity: str = "cosine") -> np.ndarray:
    """(t,) bool: sim(anchor, chosen) > sim(anchor, other); ties are wrong."""
    if similarity == "cosine":
        F = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)
    a, c, o = F[t[:, 0]], F[t[:, 1]], F[t[:, 2]]
    return np.sum(a * c, 1) > np.sum(a * o, 1)


def paired_diff(base: np.ndarray, new: np.ndarray, seed: int = 0, n_boot: int = 2000) -> dict:
    """Accuracy difference new − base with a paired percentile-bootstrap 95 % CI."""
    rng = np.random.default_rng(seed)
    b, n = base.astype(np.float64), new.astype(np.float64)
    idx = rng.integers(0, b.size, size=(n_boot, b.size))
    d = n[idx].mean(1) - b[idx].mean(1)
    return {
        "diff": float(n.mean() - b.mean()),
        "ci_low": float(np.percentile(d, 2.5)),
        "ci_high": float(np.percentile(d, 97.5)),
        "n": int(b.size),
    }


# --------------------------------------------------------------------------------------------
# one split


def run_fold(
    fold: int,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    triplets: np.ndarray,
    probs: np.ndarray,
    pool_u8: torch.Tensor,
    Fpool: np.ndarray,
    args: argparse.Namespace,
) -> dict:
    t0 = time.perf_counter()
    V = args.views
    fit_mat = np.unique(triplets[train_rows])
    held_mat = np.unique(triplets[test_rows])
    assert not np.intersect1d(fit_mat, held_mat).size
    ennis0 = np.arange(N_MAT) * V  # pool ids of the ennis centre views
    X = Fpool[ennis0]  # Lite2 features of the ennis images, eval preprocessing

    # ---- teacher: soft transform on the fit materials' triplets only
    remap = np.full(N_MAT, -1, dtype=np.int64)
    remap[fit_mat] = np.arange(fit_mat.size)
    transform = AffineTransform("soft", lam=0.1, n_threads=2, random_state=0).fit(
        X[fit_mat], remap[triplets[train_rows]], kind="twoafc", targets=probs[train_rows]
    )
    Tt = float(transform.temperature_)
    print(
        f"[fold {fold}] {fit_mat.size} fit / {held_mat.size} held-out materials; "
        f"{train_rows.size} fit / {test_rows.size} held-out triplets; transform fitted, "
        f"T = {Tt:.3g} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )

    # ---- teacher's aligned pool representations, clusters, triplets
    Z = transform.transform(Fpool)
    if args.teacher == "untransformed":
        # UnaligNet-style control: the same pipeline on the raw (scalar-standardised) Lite2
        # features, with one softmax temperature fitted on the FIT materials' vote proportions
        Xf = X[fit_mat]
        mu, sd = float(Xf.mean()), float(Xf.std())
        Z = ((Fpool - mu) / sd).astype(np.float32)
        Zf, tf, pf = Z[ennis0][fit_mat], remap[triplets[train_rows]], probs[train_rows]
        s2 = np.stack([np.sum(Zf[tf[:, 0]] * Zf[tf[:, k]], 1) for k in (1, 2)], 1)
        grid = np.geomspace(1e-5, 10, 300)
        loss = [
            -np.mean(np.sum(pf * torch.log_softmax(torch.from_numpy(s2 * g), 1).numpy(), 1))
            for g in grid
        ]
        Tt = float(grid[int(np.argmin(loss))])
        print(f"[fold {fold}] CONTROL: untransformed teacher, T = {Tt:.3g}", flush=True)
    is_val_view = (np.arange(Fpool.shape[0]) % V) == V - 1
    tr_ids, va_ids = np.flatnonzero(~is_val_view), np.flatnonzero(is_val_view)
    labels, centroids, _ = kmeans(Z[tr_ids], args.k, random_state=fold, device="cpu")
    d2 = ((Z[va_ids, None, :] - centroids[None]) ** 2).sum(-1)
    va_labels = d2.argmin(1)
    trip_tr = tr_ids[
        sample_triplets("cluster_boundary", args.triplets, labels=labels, random_state=fold)
    ]
    trip_va = va_ids[
        sample_triplets(
            "cluster_boundary", args.val_triplets, labels=va_labels, random_state=1000 + fold
        )
    ]
    trip_tr, sims_tr = teacher_odd_one_out(Z, trip_tr, similarity="dot", device="cpu")
    trip_va, sims_va = teacher_odd_one_out(Z, trip_va, similarity="dot", device="cpu")
    sims_tr, sims_va = sims_tr * Tt, sims_va * Tt  # the transform's own triplet logits
    p_teacher = torch.softmax(torch.from_numpy(sims_tr), 1).numpy()
    teacher_entropy = float(-(p_teacher * np.log(p_teacher + 1e-12)).sum(1).mean())
    print(
        f"[fold {fold}] k-means k={args.k} on {tr_ids.size} training views; "
        f"{len(trip_tr)} training / {len(trip_va)} validation pool triplets; teacher p(top pair) "
        f"mean {p_teacher[:, 0].mean():.3f}, entropy {teacher_entropy:.3f} nats",
        flush=True,
    )

    # ---- student
    torch.manual_seed(fold)
    backbone = load_backbone(STUDENT)
    spre = backbone.preprocess
    pool = normalise(pool_u8, spre)
    student = StudentFeatures(backbone)
    S_base = student_features(student, pool[ennis0])
    config = DistillConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=min(20, args.steps),
        student_temperature=args.student_temperature,
        seed=fold,
        log_every_s=30.0,
        val_every=max(args.steps // 4, 1),
    )

    def show(ev: object) -> None:
        if isinstance(ev, LossBatch) and "loss" in ev.values:
            print(
                f"  step {int(ev.steps[-1])}: loss {ev.values['loss'][-5:].mean():.4f}, "
                f"batch agreement {ev.values['agreement'][-20:].mean():.3f}, "
                f"drift {ev.values['drift'][-1]:.2e} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        elif isinstance(ev, LossBatch) and "val_agreement" in ev.values:
            print(
                f"  val @ step {int(ev.steps[-1])}: teacher agreement "
                f"{ev.values['val_agreement'][-1]:.3f}, loss {ev.values['val_loss'][-1]:.4f}",
                flush=True,
            )

    result = run_job(
        distill(student, pool, trip_tr, sims_tr, config, device="cpu", val=(trip_va, sims_va)),
        show,
    )
    S_dist = student_features(student, pool[ennis0])

    # ---- scoring on human triplets
    te, tr = triplets[test_rows], triplets[train_rows]
    strict_te = probs[test_rows][:, 0] > 0.5
    strict_tr = probs[train_rows][:, 0] > 0.5
    ZX = transform.transform(X)
    correct = {
        "lite0_base": twoafc_correct(S_base, te[strict_te]),
        "lite0_distilled": twoafc_correct(S_dist, te[strict_te]),
        "lite2_base": twoafc_correct(X, te[strict_te]),
        "lite2_aligned": twoafc_correct(ZX, te[strict_te], "dot"),
        "lite2_aligned_cosine": twoafc_correct(ZX, te[strict_te], "cosine"),
    }
    fit_side = {
        "lite0_base": twoafc_correct(S_base, tr[strict_tr]),
        "lite0_distilled": twoafc_correct(S_dist, tr[strict_tr]),
        "lite2_base": twoafc_correct(X, tr[strict_tr]),
        "lite2_aligned": twoafc_correct(ZX, tr[strict_tr], "dot"),
    }
    h = result.history
    out = {
        "fold": fold,
        "held_out_materials": held_mat.tolist(),
        "n_fit_triplets": int(train_rows.size),
        "n_test_triplets": int(test_rows.size),
        "n_test_strict": int(strict_te.sum()),
        "transform_temperature": Tt,
        "teacher_entropy_nats": teacher_entropy,
        "n_pool_train_triplets": len(trip_tr),
        "n_pool_val_triplets": len(trip_va),
        "val_agreement_before": float(h["val_agreement"][0]),
        "val_agreement_after": float(h["val_agreement"][-1]),
        "val_loss_before": float(h["val_loss"][0]),
        "val_loss_after": float(h["val_loss"][-1]),
        "val_curve": {
            "step": h["val_step"].tolist(),
            "agreement": h["val_agreement"].tolist(),
            "loss": h["val_loss"].tolist(),
        },
        "train_loss_first20": float(h["loss"][:20].mean()),
        "train_loss_last20": float(h["loss"][-20:].mean()),
        "final_drift": float(h["drift"][-1]),
        "distill_seconds": float(result.seconds),
        "config": config.to_dict(),
        "held_out": {k: accuracy_summary(v, random_state=0) for k, v in correct.items()},
        "fit_side": {k: accuracy_summary(v, random_state=0) for k, v in fit_side.items()},
        "distilled_minus_base": paired_diff(correct["lite0_base"], correct["lite0_distilled"]),
        "_correct": correct,
    }
    print(f"[fold {fold}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def print_table(title: str, acc: dict, ceiling: dict, res: int) -> None:
    names = {
        "lite0_native": "Lite0 base (224 px, native)",
        "lite0_base": f"Lite0 base ({res} px) — student before",
        "lite0_distilled": f"Lite0 distilled ({res} px) — student after",
        "lite2_base": "Lite2 base (260 px) — teacher, zero-shot",
        "lite2_aligned": "Lite2 + soft transform (dot) — aligned teacher",
        "lite2_aligned_cosine": "Lite2 + soft transform (cosine)",
    }
    print(f"\n{title}\n")
    print("| model | 2AFC accuracy | 95% CI | n |")
    print("|---|---|---|---|")
    for key, label in names.items():
        if key in acc:
            a = acc[key]
            print(
                f"| {label} | {a['accuracy']:.3f} | [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | "
                f"{a['n']} |"
            )
    if ceiling:
        print(
            f"| human noise ceiling: leave-one-out / majority agreement | "
            f"{ceiling['leave_one_out']:.3f} / {ceiling['majority_agreement']:.3f} | — | "
            f"{ceiling['n_triplets']} triplets, {ceiling['n_responses']} responses |"
        )


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--res", type=int, default=160)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--triplets", type=int, default=20_000)
    parser.add_argument("--val-triplets", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--student-temperature", type=float, default=0.1)
    parser.add_argument(
        "--teacher",
        choices=("aligned", "untransformed"),
        default="aligned",
        help="'untransformed': control run distilling the raw Lite2 similarities (UnaligNet)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the pool augmentations")
    parser.add_argument("--quick", action="store_true", help="3 views, 5 steps: a smoke test")
    parser.add_argument("--tag", default="", help="suffix of the results JSON")
    parser.add_argument("--cache", default="/tmp/alignet-bench-cache/materials_distill")
    args = parser.parse_args()
    if args.quick:
        args.views, args.steps, args.triplets, args.val_triplets = 3, 5, 500, 200
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    paths = image_paths()
    allj, triplets, probs = human_triplets()
    pool_u8, Fpool = build_pool(paths, args.views, args.res, cache, args.seed)
    print(
        f"pool: {pool_u8.shape[0]} images ({args.views} views × 2 lights × {N_MAT}), "
        f"{args.res} px student / 260 px teacher ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    ref = Path("/tmp/alignet-bench-cache/materials_efficientnet_lite2.npy")
    if ref.is_file():  # sanity: our view 0 = the engine's extraction of the ennis folder
        diff = np.abs(np.load(ref) - Fpool[np.arange(N_MAT) * args.views]).max()
        print(f"check: |view-0 teacher features − extract_features| max = {diff:.2e}")

    native_path = cache / "lite0_native_ennis.npy"
    if native_path.is_file():
        S_native = np.load(native_path)
    else:
        S_native = run_job(extract_features(load_backbone(STUDENT), paths[0], batch_size=25))
        np.save(native_path, S_native)

    folds = object_disjoint_folds(triplets, n_items=N_MAT, n_splits=3, random_state=0)
    keys, counts = twoafc_choice_counts(allj)
    results = []
    for f in args.folds:
        train_rows, test_rows = folds[f]
        r = run_fold(f, train_rows, test_rows, triplets, probs, pool_u8, Fpool, args)
        te = triplets[test_rows][probs[test_rows][:, 0] > 0.5]
        r["_correct"]["lite0_native"] = twoafc_correct(S_native, te)
        r["held_out"]["lite0_native"] = accuracy_summary(r["_correct"]["lite0_native"])
        held = np.zeros(N_MAT, bool)
        held[r["held_out_materials"]] = True
        inside = held[keys].all(1)
        ceil = noise_ceiling_twoafc(
            Judgments("twoafc", keys[inside], np.full(inside.sum(), -1), votes=counts[inside])
        )
        r["noise_ceiling"] = ceil
        print_table(
            f"Fold {f}: held-out materials' strict-majority triplets "
            f"(n = {r['n_test_strict']} of {r['n_test_triplets']})",
            r["held_out"],
            ceil,
            args.res,
        )
        d = r["distilled_minus_base"]
        print(
            f"\ndistilled − base student: {d['diff']:+.3f} [{d['ci_low']:+.3f}, "
            f"{d['ci_high']:+.3f}] (paired bootstrap); student–teacher agreement on "
            f"{r['n_pool_val_triplets']} validation pool triplets "
            f"{r['val_agreement_before']:.3f} → {r['val_agreement_after']:.3f} "
            f"(val KL {r['val_loss_before']:.4f} → {r['val_loss_after']:.4f})"
        )
        fs = r["fit_side"]
        print(
            "fit materials' strict-majority triplets (in-sample for the teacher): "
            + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in fs.items())
            + f" (n = {fs['lite0_base']['n']})",
            flush=True,
        )
        results.append(r)
        write_json(results, args, cache, t0)  # after every fold, so a partial run is kept

    summary = write_json(results, args, cache, t0)
    if len(results) > 1:
        pooled = {
            k: accuracy_summary(np.concatenate([r["_correct"][k] for r in results]))
            for k in results[0]["_correct"]
        }
        # pooled ceiling: triplets held out in any fold (each lies in exactly one fold)
        groups = np.full(N_MAT, -1)
        for r in results:
            groups[r["held_out_materials"]] = r["fold"]
        g = groups[keys]
        same = (g[:, 0] >= 0) & (g[:, 0] == g[:, 1]) & (g[:, 1] == g[:, 2])
        ceil = noise_ceiling_twoafc(
            Judgments("twoafc", keys[same], np.full(same.sum(), -1), votes=counts[same])
        )
        base = np.concatenate([r["_correct"]["lite0_base"] for r in results])
        dist = np.concatenate([r["_correct"]["lite0_distilled"] for r in results])
        summary["pooled"] = {
            "held_out": pooled,
            "noise_ceiling": ceil,
            "distilled_minus_base": paired_diff(base, dist),
        }
        print_table(
            f"Pooled over folds {args.folds}: held-out strict-majority triplets (n = {base.size})",
            pooled,
            ceil,
            args.res,
        )
        d = summary["pooled"]["distilled_minus_base"]
        print(f"\ndistilled − base: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    path = write_json(results, args, cache, t0, summary)["path"]
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; results in {path}")


def write_json(
    results: list[dict], args: argparse.Namespace, cache: Path, t0: float, extra: dict | None = None
) -> dict:
    """Write the results JSON (per-fold results, plus pooled ones when given); return it."""
    summary: dict = dict(extra or {})
    summary["args"] = vars(args)
    summary["folds"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    summary["wall_seconds"] = time.perf_counter() - t0
    name = "results_quick" if args.quick else "results"
    path = cache / f"{name}{('_' + args.tag) if args.tag else ''}.json"
    summary["path"] = str(path)
    path.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
