"""One frozen, validated configuration dataclass per pipeline stage, with a JSON round trip.

Every field has a default a researcher can start from and is declared once with
:func:`~alignet_engine.params.param`: its help text (the CLI's ``--help`` and the GUI's
tooltip), its range (checked on construction) and its older CLI spellings. Choices are
``Literal`` types. ``__post_init__`` checks the declarations, then ``validate()`` the rules
that tie fields together, so an invalid configuration can never reach a job.

This package is the one home of the stage configs: :class:`StageConfig` and the configs of
features, transform, clusters, triplets, evaluate and matrix triplets here, the
distillation's (:class:`~alignet_engine.config.distill.DistillConfig`, the optimisation
settings, and :class:`~alignet_engine.config.distill.DistillStageConfig`) in :mod:`.distill`.
It sits above ``models`` (model specs are validated with :mod:`alignet_engine.models.spec`,
pure string work) and below ``align``, ``distill`` and ``stages``, which read it; it imports
no torch (the CLI builds its parser from it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal, TypeVar

from alignet_engine.errors import InputError
from alignet_engine.models.spec import POOLINGS as POOLINGS  # the choices of Pooling below
from alignet_engine.models.spec import model_label, resolve_spec
from alignet_engine.params import Interval, check_params, param

C = TypeVar("C", bound="StageConfig")

# The choices a stage offers, declared here (a light module: the CLI's parser and the GUI's
# forms read them without importing torch or scikit-learn) and re-exported where they are used.
#: triplet sampling strategies (``alignet_engine.align.triplet_sampling``)
Strategy = Literal[
    "cluster_boundary",
    "within_cluster",
    "between_clusters",
    "random",
    "class_boundary",
    "within_class",
    "between_classes",
]
STRATEGIES: tuple[str, ...] = Strategy.__args__  # type: ignore[attr-defined]
#: how a layer's output becomes (n, d) features (``alignet_engine.models.spec``)
Pooling = Literal["auto", "mean", "cls", "flatten"]  # models.spec.POOLINGS (a test checks)
#: what ``export`` can write (``alignet_engine.stages.export``)
EXPORTABLE: tuple[str, ...] = ("student", "pt2", "torchscript", "onnx", "transform", "triplets")
#: what ``export`` writes when not told: every format but TorchScript, which torch 2.14
#: deprecates (``pt2``, its ``torch.export`` successor, takes its place)
DEFAULT_EXPORTS: tuple[str, ...] = ("student", "pt2", "onnx", "transform", "triplets")
#: what ``evaluate`` compares representations with: a triplet similarity
#: (:data:`~alignet_engine.base.similarity.SimilarityMetric`), or pearson for RSA on a matrix
EvaluateMetric = Literal["cosine", "dot", "euclidean", "pearson"]
JudgmentFormat = Literal[
    "things-tsv",
    "oddone-npy",
    "oddone-txt",
    "oddone-csv",
    "materials-json",
    "twoafc-csv",
    "alignet-npz",
    "levels-pkl",
]
#: the human-judgment file formats ``import-judgments`` reads (``alignet_engine.stages.imports``)
JUDGMENT_FORMATS: tuple[str, ...] = JudgmentFormat.__args__  # type: ignore[attr-defined]
#: Default working memory of the chunked stages, MiB: a 1.28 M × 1280 float32 pool is 6.5 GB,
#: so the budget, not the pool, sets their peak memory.
DEFAULT_MEMORY_BUDGET_MB = 512


# ranges used by many fields (scikit-learn's Interval, see alignet_engine.params)
_POSITIVE_INT = Interval(Integral, 1, None, closed="left")
_NONNEGATIVE_INT = Interval(Integral, 0, None, closed="left")
_POSITIVE = Interval(Real, 0, None, closed="neither")
_NONNEGATIVE = Interval(Real, 0, None, closed="left")

_SEED_HELP = "Seed of every random choice of the stage: the same seed gives the same result."
_DEVICE_HELP = "auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps."
_MEMORY_HELP = (
    "Working memory of the chunked paths, MiB: a pool larger than this is read in chunks "
    "(transform, mini-batch k-means) through a temporary memory map."
)
_TEACHER_MODEL_HELP = "The teacher's features label (as extract stored it)."


@dataclass(frozen=True)
class StageConfig:
    """Base: declared-parameter checks, validation hook and JSON round trip."""

    def __post_init__(self) -> None:
        check_params(self)
        try:
            self.validate()
        except InputError:
            raise
        except ValueError as exc:
            # a setting the user gave: an InputError (exit 2 in the CLI), still a ValueError
            raise InputError(str(exc)) from exc

    def validate(self) -> None:  # overridden by stages with rules tying fields together
        """Raise ValueError naming the field when values do not fit together."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}",
                source=cls.__name__,
                field=unknown[0],
            )
        return cls(**dict(data))


def features_slot(image_set: str, model_label: str) -> str:
    """The slot name under which features of ``image_set`` by ``model_label`` live."""
    return f"features:{image_set}:{model_label}"


@dataclass(frozen=True)
class ExtractConfig(StageConfig):
    """Extract penultimate-layer features of every image of ``image_set``.

    ``checkpoint`` names a distill run (``distill/<id>`` or the slot ``distill``) whose
    student weights replace the pretrained ones; the features are then stored under the
    label ``<model>+distilled``.

    ``model`` is a model spec (see ``alignet_engine.models.spec``); ``weights``, ``layer``
    and ``pooling`` replace the spec's own options and enter the features label.
    ``num_workers`` decoding processes run beside the model (0: decode in the job's own
    thread, the safe choice inside the GUI); stored features are float32 even with ``amp``.
    """

    image_set: str = param(
        help="The images whose features are extracted (one row per image, in set order).",
        aliases=("--set",),
    )
    model: str = param(
        "efficientnet_lite0",
        "An embedded model (efficientnet_lite0/1/2, offline) or a spec: torchvision:resnet18, "
        "timm:convnext_tiny, a TorchScript file, module.path:factory (runs Python code from "
        "MODULE: name only code you trust); options after '?', e.g. "
        "torchvision:resnet18?layer=layer3&pooling=mean (see `alignet-cli models`).",
    )
    batch_size: int = param(
        32, "Images per forward pass (lower it if memory runs out).", bounds=_POSITIVE_INT
    )
    image_size: int | None = param(
        None, "Input side in pixels (auto: the model's own input size).", bounds=_POSITIVE_INT
    )
    device: str = param("auto", _DEVICE_HELP)
    checkpoint: str | None = param(
        None, "Use the student of this distill run (distill/<id>, or 'distill': the current)."
    )
    weights: str | None = param(
        None,
        "A state-dict file (.pt/.pth/.safetensors) replacing the model's weights, or 'random' "
        "(auto: the model's own pretrained weights).",
    )
    layer: str | None = param(
        None,
        "The module whose output is the representation (see `alignet-cli layers`; auto: "
        "pre_logits, the classifier's input).",
    )
    pooling: Pooling = param(
        "auto",
        "How a layer's (b, c, h, w) or (b, tokens, d) output becomes (b, d): auto, mean, cls "
        "(ViT class token) or flatten.",
    )
    num_workers: int = param(
        0,
        "Image-decoding worker processes (0: decode in the job's own thread).",
        bounds=_NONNEGATIVE_INT,
        aliases=("--workers",),
    )
    amp: bool = param(False, "bf16/fp16 autocast on CUDA (faster; features stored as float32).")
    skip_corrupt: bool = param(
        False, "Store unreadable images as NaN rows (recorded in the run) instead of failing."
    )
    resume: bool = param(
        True,
        "Keep finished rows in a side file so an interrupted extraction of the same settings "
        "continues where it stopped.",
    )
    preprocessing: Literal["auto", "model", "whole"] = param(
        "auto",
        "whole: the whole stimulus resized to the model's input (ImageNet mean/std), as people "
        "saw it; model: the model's own resize and centre crop; auto: whole for image sets "
        "with judgments or matrices (evaluated against people), model for pools.",
    )

    def validate(self) -> None:
        # spec syntax only: no files are read
        resolve_spec(self.model, weights=self.weights, layer=self.layer, pooling=self.pooling)

    @property
    def label(self) -> str:
        """The features label: the model spec's label (``efficientnet_lite0``,
        ``torchvision-resnet18@layer3``...; see ``ModelSpec.label``), ``+distilled`` for a
        distilled student's features."""
        base = model_label(self.model, weights=self.weights, layer=self.layer, pooling=self.pooling)
        return base if self.checkpoint is None else f"{base}+distilled"


@dataclass(frozen=True)
class TransformConfig(StageConfig):
    """Fit the affine alignment transform of ``model``'s features on human judgments.

    ``targets`` says where the (soft) training targets come from:

    - ``"judgments"``: the judgments themselves (choice distributions of repeated triplets
      or vote counts for ``objective="soft"``, each response for ``"hard"``);
    - ``"vice"``: a VICE embedding fitted on the judgments; its posterior predictive labels
      ``n_model_triplets`` random triplets over all items (triplets nobody answered);
    - ``"embedding:<label>"``: an imported human embedding stored as features of the same
      image set (e.g. the THINGS VICE embedding) labels ``n_model_triplets`` random triplets;
      no judgments are needed then.

    ``lam``, ``lr``, ``batch_size`` and ``patience`` left ``None`` are chosen from the problem
    size (``preset="auto"``; λ by cross-validation when the problem is small enough, see
    ``stages/transform.py``) or take gLocal's values (``preset="glocal"``).

    ``search`` (optional) is a grid over AffineTransform parameters, e.g.
    ``{"lam": [0.01, 0.1, 1.0], "lr": [1e-3, 1e-2]}``, chosen by object-disjoint
    ``n_splits``-fold cross-validation; the whole grid is stored in the run.
    """

    image_set: str = param(help="The image set the judgments refer to.", aliases=("--set",))
    judgments: tuple[str, ...] = param(
        (), "Judgments to fit on (not needed with targets embedding:LABEL)."
    )
    model: str = param("efficientnet_lite2", _TEACHER_MODEL_HELP)
    objective: Literal["hard", "soft"] = param(
        "soft",
        "soft: fit the distribution of human choices per triplet (AligNet's uncertainty "
        "distillation, needs repeated triplets or vote counts); hard: each response as a "
        "label (gLocal).",
    )
    lam: float | None = param(
        None,
        "λ, the weight of the regulariser pulling W toward a scaled identity (keeps the "
        "transform close to the original features). Empty = automatic: cross-validated over "
        "0.001…1 on small problems, from the problem size on large ones. gLocal grid 1e-5…10.",
        bounds=_NONNEGATIVE,
    )
    alpha: float = param(
        0.0,
        "α, the weight of gLocal's local-structure term, which keeps nearest-neighbour "
        "structure of a pool of images (needs a pool image set). 0 = global term only; gLocal "
        "final: 0.1.",
        bounds=Interval(Real, 0, 1, closed="left"),
    )
    tau: float = param(
        0.1,
        "τ, the temperature of the local-structure softmax (only with alpha > 0). gLocal grid "
        "0.01…1.",
        bounds=_POSITIVE,
    )
    lr: float | None = param(
        None,
        "Adam learning rate. Empty = from the batch size. gLocal default 1e-3.",
        bounds=_POSITIVE,
    )
    max_epochs: int = param(
        100,
        "Upper bound on training epochs over the triplets (gLocal: ≤ 100).",
        bounds=_POSITIVE_INT,
    )
    batch_size: int | None = param(
        None,
        "Triplets per gradient step. Empty = from the number of triplets (large problems get "
        "large, fast batches). gLocal: 256.",
        bounds=_POSITIVE_INT,
    )
    patience: int | None = param(
        None,
        "Stop after this many epochs without a better held-out loss; the best epoch's weights "
        "are kept. Empty = automatic. gLocal: 15.",
        bounds=_POSITIVE_INT,
    )
    preset: Literal["auto", "glocal"] = param(
        "auto",
        "auto: empty settings are chosen from the problem size; glocal: gLocal's exact "
        "settings (batch 256, lr 1e-3, λ 0.1, patience 15), slow on large problems. Settings "
        "given explicitly win.",
    )
    threads: int | None = param(
        None,
        "CPU threads of the fit; empty = all that torch may use (in the app: its thread "
        "preference).",
        bounds=_POSITIVE_INT,
    )
    val_fraction: float = param(
        0.1,
        "Fraction of the triplets held out for early stopping.",
        bounds=Interval(Real, 0, 1, closed="left"),
    )
    standardize: Literal["scalar", "perdim", "none"] = param(
        "scalar",
        "scalar: one mean / std over the whole feature matrix (gLocal); perdim: per "
        "dimension; none: raw features.",
    )
    similarity: Literal["dot", "cosine"] = param(
        "dot",
        "How transformed features are compared in the triplet softmax: dot (gLocal, AligNet) "
        "or cosine.",
    )
    targets: str = param(
        "judgments",
        "Where the training targets come from: judgments (the judgments themselves), vice (a "
        "VICE embedding fitted on them labels n_model_triplets random triplets), or "
        "embedding:LABEL (an imported human embedding stored as features of this image set).",
    )
    n_model_triplets: int = param(
        50_000,
        "Random triplets labelled by the human model (targets vice or embedding:…).",
        bounds=_POSITIVE_INT,
    )
    vice_max_epochs: int = param(
        1000, "Epochs of the VICE fit (targets = vice).", bounds=_POSITIVE_INT
    )
    search: dict[str, list[Any]] | None = param(
        None,
        "Grid search by object-disjoint cross-validation over AffineTransform parameters, "
        "e.g. lam=0.01,0.1 lr=1e-3.",
    )
    n_splits: int = param(
        3,
        "Object-disjoint cross-validation folds of the search grid.",
        bounds=Interval(Integral, 2, None, closed="left"),
        aliases=("--folds",),
    )
    pool: str | None = param(
        None, "Image set (same model's features) for gLocal's local term (needs alpha > 0)."
    )
    pool_max_rows: int = param(
        100_000,
        "At most this many pool rows, drawn at random (seeded), feed the local term: its "
        "batches are random pool rows, and a 1.28M-image pool would be held in memory several "
        "times over. A smaller pool is used whole.",
        bounds=Interval(Integral, 3, None, closed="left"),
    )
    random_state: int = param(0, _SEED_HELP, bounds=_NONNEGATIVE_INT, aliases=("--seed",))
    name: str = param(
        "teacher",
        "Name of the transform (slot transform:NAME); 'teacher' is what clustering, triplet "
        "sampling and distillation use.",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "judgments", tuple(self.judgments))
        super().__post_init__()

    def validate(self) -> None:
        if not self.judgments and not self.targets.startswith("embedding:"):
            raise ValueError("TransformConfig.judgments: name at least one set of judgments")
        if self.targets not in ("judgments", "vice") and not (
            self.targets.startswith("embedding:") and len(self.targets) > len("embedding:")
        ):
            raise ValueError(
                f"TransformConfig.targets {self.targets!r}: use judgments, vice or "
                "embedding:<features label>"
            )
        if self.alpha > 0 and self.pool is None:
            raise ValueError("TransformConfig: alpha > 0 needs a pool image set for the local term")
        if self.search is not None and not self.search:
            raise ValueError("TransformConfig.search: give at least one parameter to search")


def parse_search_grid(text: str) -> dict[str, list[Any]] | None:
    """``"lam=0.01,0.1; lr=1e-3"`` → ``{"lam": [0.01, 0.1], "lr": [0.001]}``; "" → None.

    Entries are separated by ``;`` or new lines, values by ``,``; numbers become int or
    float, anything else stays a string (as ``alignet-cli fit-transform --search`` reads).
    """

    def value(item: str) -> Any:
        for kind in (int, float):
            try:
                return kind(item)
            except ValueError:
                pass
        return item

    grid: dict[str, list[Any]] = {}
    for entry in re.split(r"[;\n]", text):
        if not entry.strip():
            continue
        name, sep, values = entry.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name.strip() or not items:
            raise InputError(
                f"search grid entry {entry.strip()!r}: write NAME=V1,V2 (e.g. lam=0.01,0.1)",
                field="search",
            )
        grid[name.strip()] = [value(v) for v in items]
    return grid or None


def format_search_grid(grid: Mapping[str, list[Any]] | None) -> str:
    """Inverse of :func:`parse_search_grid`."""
    if not grid:
        return ""
    return "; ".join(f"{k}={','.join(str(v) for v in values)}" for k, values in grid.items())


@dataclass(frozen=True)
class ClusterConfig(StageConfig):
    """k-means on the (aligned) teacher representations of the pool.

    ``diagnose_ks`` (optional) also records inertia and silhouette for each of these k, for
    choosing k; ``n_nearest`` items nearest each centroid are stored as cluster summaries.
    """

    image_set: str = param(
        help="The pool image set to cluster (the images triplets are sampled from).",
        aliases=("--set",),
    )
    model: str = param("efficientnet_lite2", _TEACHER_MODEL_HELP)
    transform: str | None = param(
        "teacher", "The fitted transform the features go through ('none': raw features)."
    )
    k: int = param(
        12,
        "Number of k-means clusters (AligNet uses 500 on ImageNet).",
        bounds=Interval(Integral, 2, None, closed="left"),
    )
    diagnose_ks: tuple[int, ...] = param(
        (),
        "Also record inertia and silhouette for these numbers of clusters (to choose k).",
        aliases=("--diagnose",),
    )
    n_nearest: int = param(
        8,
        "How many of each cluster's most typical images (nearest its centre) to keep.",
        bounds=_POSITIVE_INT,
    )
    device: str = param("auto", _DEVICE_HELP)
    random_state: int = param(0, _SEED_HELP, bounds=_NONNEGATIVE_INT, aliases=("--seed",))
    memory_budget_mb: float = param(DEFAULT_MEMORY_BUDGET_MB, _MEMORY_HELP, bounds=_POSITIVE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "diagnose_ks", tuple(self.diagnose_ks))
        super().__post_init__()

    def validate(self) -> None:
        if any(k < 2 for k in self.diagnose_ks):
            raise InputError(
                f"every k must be >= 2, got {self.diagnose_ks}",
                source="ClusterConfig",
                field="diagnose_ks",
            )


@dataclass(frozen=True)
class SampleConfig(StageConfig):
    """Sample pool triplets and label them with the teacher's odd-one-out and similarities."""

    n_triplets: int = param(
        20_000,
        "Training triplets to sample (AligNet uses 10 million).",
        bounds=_POSITIVE_INT,
        aliases=("--n",),
    )
    n_val: int = param(
        500,
        "Extra held-out triplets for validation during distillation.",
        bounds=_NONNEGATIVE_INT,
    )
    strategy: Strategy = param(
        "cluster_boundary",
        "How items are drawn: cluster_boundary (AligNet's default) takes two items from one "
        "cluster and the odd one from another; within / between clusters, random, and the "
        "class_* variants use the pool's categories instead of clusters.",
    )
    teacher_temperature: float = param(
        1.0,
        "Divides the teacher's logits: above 1 makes its choices softer.",
        bounds=_POSITIVE,
    )
    random_state: int = param(0, _SEED_HELP, bounds=_NONNEGATIVE_INT, aliases=("--seed",))
    memory_budget_mb: float = param(DEFAULT_MEMORY_BUDGET_MB, _MEMORY_HELP, bounds=_POSITIVE)


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """Score features (optionally through a fitted transform) against judgments or a matrix."""

    image_set: str = param(
        help="The image set the judgments or matrix refer to (its features are scored).",
        aliases=("--set",),
    )
    model: str = param(
        help="Which features: a features label, e.g. efficientnet_lite0; "
        "'<student>+distilled' is the distilled student."
    )
    judgments: str | None = param(
        None, "Held-out human judgments to score (give these or a matrix)."
    )
    matrix: str | None = param(
        None, "A similarity / dissimilarity matrix for RSA (give this or judgments)."
    )
    transform: str | None = param(
        None,
        "Score the features through this fitted transform (e.g. teacher, the aligned "
        "teacher); auto = raw features.",
    )
    metric: EvaluateMetric | None = param(
        None,
        "Similarity used to pick the odd one out; auto = dot through a transform (what it "
        "was fitted for), cosine otherwise; pearson applies to matrices only (RSA).",
    )
    n_boot: int = param(
        1000, "Bootstrap resamples for the 95% confidence interval.", bounds=_POSITIVE_INT
    )
    random_state: int = param(0, _SEED_HELP, bounds=_NONNEGATIVE_INT, aliases=("--seed",))
    compare: str | None = param(
        None,
        "Paired test against this features label on the same items: the difference (model "
        "minus this) with its paired-bootstrap CI and p-value.",
    )
    compare_transform: str | None = param(
        None, "Score the compared features through this transform."
    )
    ci_unit: Literal["triplets", "items", "responses"] = param(
        "triplets",
        "What accuracy CIs resample: triplets (responses to one triplet are not "
        "independent), items (a question about the stimuli) or responses. RSA: always items.",
    )

    def validate(self) -> None:
        if (self.judgments is None) == (self.matrix is None):
            raise ValueError("EvaluateConfig: give exactly one of judgments or matrix")
        if self.compare_transform is not None and self.compare is None:
            raise ValueError("EvaluateConfig.compare_transform needs compare (a features label)")
        if self.metric == "pearson" and self.matrix is None:
            raise ValueError("EvaluateConfig.metric 'pearson' applies to matrices (RSA) only")
        if self.metric in ("dot", "euclidean") and self.matrix is not None:
            # RSA compares cosine or pearson model RSMs; never fall back silently
            raise ValueError(
                f"EvaluateConfig.metric {self.metric!r} applies to judgments; RSA on a matrix "
                "uses cosine or pearson"
            )


@dataclass(frozen=True)
class MatrixTripletsConfig(StageConfig):
    """Derive odd-one-out judgments ``name`` from the per-subject matrix set ``matrix``.

    Every subject's matrix answers ``n_triplets`` random triplets over the items of ``split``
    (an object-disjoint ``fit`` / ``test`` split of ``test_fraction`` of the items drawn with
    ``random_state``, complementary for the same seed; ``all``: every item); see
    ``alignet_engine.align.matrix_triplets``.
    """

    matrix: str = param(
        help="The imported per-subject similarity or dissimilarity matrices whose answers are used."
    )
    name: str = param("matrix-fit", "Name of the new judgments.")
    n_triplets: int = param(
        10_000,
        "Distinct triplets sampled; every subject's matrix answers each one.",
        bounds=_POSITIVE_INT,
        aliases=("--n",),
    )
    split: Literal["fit", "test", "all"] = param(
        "fit",
        "Which items: the fit or the test side of an object-disjoint split (complementary for "
        "the same seed), or all items.",
    )
    test_fraction: float = param(
        0.5,
        "Share of the items on the test side.",
        bounds=Interval(Real, 0, 1, closed="neither"),
    )
    random_state: int = param(
        0,
        "Seed of the split and of the triplets (fit and test with one seed are complementary "
        "halves).",
        bounds=_NONNEGATIVE_INT,
        aliases=("--seed",),
    )

    def validate(self) -> None:
        if not self.name.strip():
            raise ValueError("MatrixTripletsConfig.name must not be empty")
