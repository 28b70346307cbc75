"""One frozen, validated configuration dataclass per pipeline stage, with a JSON round trip.

Every field has a default a researcher can start from; ``validate()`` runs in
``__post_init__`` so an invalid configuration can never reach a job.

This package is the one home of the stage configs: :class:`StageConfig` and the configs of
features, transform, clusters, triplets and evaluate here, the distillation's
(:class:`~alignet_engine.config.distill.DistillConfig`, the optimisation settings, and
:class:`~alignet_engine.config.distill.DistillStageConfig`) in :mod:`.distill`. It sits
above ``models`` (model specs are validated with :mod:`alignet_engine.models.spec`, pure
string work) and below ``align``, ``distill`` and ``stages``, which read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from alignet_engine.errors import InputError
from alignet_engine.models.spec import POOLINGS as POOLINGS  # one of the choices below
from alignet_engine.models.spec import model_label, resolve_spec

C = TypeVar("C", bound="StageConfig")

# The choices a stage offers, declared here (a light module: the CLI's parser and the GUI's
# forms read them without importing torch or scikit-learn) and re-exported where they are used;
# POOLINGS (imported above) is the model spec's.
#: triplet sampling strategies (``alignet_engine.align.triplet_sampling``)
STRATEGIES: tuple[str, ...] = (
    "cluster_boundary",
    "within_cluster",
    "between_clusters",
    "random",
    "class_boundary",
    "within_class",
    "between_classes",
)
#: what ``export`` can write (``alignet_engine.stages.export``)
EXPORTABLE: tuple[str, ...] = ("student", "pt2", "torchscript", "onnx", "transform", "triplets")
#: what ``export`` writes when not told: every format but TorchScript, which torch 2.14
#: deprecates (``pt2``, its ``torch.export`` successor, takes its place)
DEFAULT_EXPORTS: tuple[str, ...] = ("student", "pt2", "onnx", "transform", "triplets")
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


@dataclass(frozen=True)
class StageConfig:
    """Base: JSON round trip and validation hooks."""

    def __post_init__(self) -> None:
        try:
            self.validate()
        except InputError:
            raise
        except ValueError as exc:
            # a setting the user gave: an InputError (exit 2 in the CLI), still a ValueError
            raise InputError(str(exc)) from exc

    def validate(self) -> None:  # overridden by stages with constraints
        """Raise ValueError naming the field when a value is out of range."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        return cls(**data)


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value}")


def features_slot(image_set: str, model_label: str) -> str:
    """The slot name under which features of ``image_set`` by ``model_label`` live."""
    return f"features:{image_set}:{model_label}"


@dataclass(frozen=True)
class ExtractConfig(StageConfig):
    """Extract penultimate-layer features of every image of ``image_set``.

    ``checkpoint`` names a distill run (``distill/<id>`` or the slot ``distill``) whose
    student weights replace the pretrained ones; the features are then stored under the
    label ``<model>+distilled``.

    ``model`` is a model spec (``efficientnet_lite0``, ``torchvision:resnet18``,
    ``timm:NAME``, a TorchScript file, ``module.path:factory``; see
    ``alignet_engine.models.spec``); ``weights``, ``layer`` and ``pooling`` replace the
    spec's own options and enter the features label.

    ``num_workers`` decoding processes run beside the model (0: decode in the job's own
    thread, the safe choice inside the GUI); ``amp`` uses bf16/fp16 autocast on CUDA only
    (stored features are float32 either way); ``skip_corrupt`` turns unreadable images into
    NaN rows recorded in the run instead of failing; ``resume`` keeps finished rows in a side
    file so an interrupted extraction continues where it stopped.
    """

    image_set: str
    model: str = "efficientnet_lite0"
    batch_size: int = 32
    image_size: int | None = None  # None: the model's own input size
    device: str = "auto"
    checkpoint: str | None = None
    # A weights file replacing the model's default weights ("random": random init), the layer
    # whose output is the representation (None: pre_logits, the classifier's input) and how
    # it is pooled to (n, d): auto, mean, cls or flatten. See alignet_engine.models.spec.
    weights: str | None = None
    layer: str | None = None
    pooling: str = "auto"
    num_workers: int = 0
    amp: bool = False
    skip_corrupt: bool = False
    resume: bool = True
    # How images are prepared (alignet_engine.models.preprocess.PREPROCESSING_PRESETS):
    # "model" — the model's own resize + centre crop; "whole" — the whole stimulus resized to
    # the input size with ImageNet mean/std; "auto" — "whole" for image sets evaluated against
    # people (they have judgments or matrices), "model" otherwise (pools).
    preprocessing: Literal["auto", "model", "whole"] = "auto"

    def validate(self) -> None:
        _positive(self, "batch_size", "image_size")
        if self.preprocessing not in ("auto", "model", "whole"):
            raise ValueError(
                f"ExtractConfig.preprocessing must be auto, model or whole, got "
                f"{self.preprocessing!r}"
            )
        # spec syntax only: no files are read
        resolve_spec(self.model, weights=self.weights, layer=self.layer, pooling=self.pooling)
        if self.num_workers < 0:
            raise ValueError(f"ExtractConfig.num_workers must be >= 0, got {self.num_workers}")

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
    size (``preset="auto"``) or take gLocal's values (``preset="glocal"``).

    ``search`` (optional) is a grid over AffineTransform parameters, e.g.
    ``{"lam": [0.01, 0.1, 1.0], "lr": [1e-3, 1e-2]}``, chosen by object-disjoint
    ``n_splits``-fold cross-validation; the whole grid is stored in the run.
    """

    image_set: str
    judgments: tuple[str, ...] = ()
    model: str = "efficientnet_lite2"
    objective: Literal["hard", "soft"] = "soft"
    # None = automatic (AffineTransform.resolved_settings; λ by cross-validation when the
    # problem is small enough, see stages/transform.py); preset "glocal" = gLocal's values
    lam: float | None = None
    alpha: float = 0.0
    tau: float = 0.1
    lr: float | None = None
    max_epochs: int = 100
    batch_size: int | None = None
    patience: int | None = None
    preset: Literal["auto", "glocal"] = "auto"
    # torch CPU threads of the fit; None = all the process allows (app preference / --threads)
    threads: int | None = None
    val_fraction: float = 0.1
    standardize: Literal["scalar", "perdim", "none"] = "scalar"
    similarity: Literal["dot", "cosine"] = "dot"
    targets: str = "judgments"
    n_model_triplets: int = 50_000
    vice_max_epochs: int = 1000
    search: dict[str, list[Any]] | None = None
    n_splits: int = 3
    # Image set whose features (same model) feed gLocal's local-structure term (alpha > 0).
    pool: str | None = None
    random_state: int = 0
    name: str = "teacher"

    def __post_init__(self) -> None:
        object.__setattr__(self, "judgments", tuple(self.judgments))
        super().__post_init__()

    def validate(self) -> None:
        if self.objective not in ("hard", "soft"):
            raise ValueError(
                f"TransformConfig.objective must be hard or soft, not {self.objective}"
            )
        if not self.judgments and not self.targets.startswith("embedding:"):
            raise ValueError("TransformConfig.judgments: name at least one set of judgments")
        if self.targets not in ("judgments", "vice") and not (
            self.targets.startswith("embedding:") and len(self.targets) > len("embedding:")
        ):
            raise ValueError(
                f"TransformConfig.targets {self.targets!r}: use judgments, vice or "
                "embedding:<features label>"
            )
        _positive(self, "n_model_triplets", "vice_max_epochs", "n_splits")
        if self.alpha > 0 and self.pool is None:
            raise ValueError("TransformConfig: alpha > 0 needs a pool image set for the local term")
        if self.search is not None and not self.search:
            raise ValueError("TransformConfig.search: give at least one parameter to search")
        _positive(self, "lr", "max_epochs", "batch_size", "patience", "threads", "tau")
        if self.preset not in ("auto", "glocal"):
            raise ValueError(f"TransformConfig.preset must be auto or glocal, not {self.preset}")
        if (self.lam is not None and self.lam < 0) or not 0 <= self.alpha < 1:
            raise ValueError("TransformConfig: lam must be >= 0 and alpha in [0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("TransformConfig.val_fraction must be in [0, 1)")


@dataclass(frozen=True)
class ClusterConfig(StageConfig):
    """k-means on the (aligned) teacher representations of the pool.

    ``diagnose_ks`` (optional) also records inertia and silhouette for each of these k, for
    choosing k; ``n_nearest`` items nearest each centroid are stored as cluster summaries.
    """

    image_set: str
    model: str = "efficientnet_lite2"
    transform: str | None = "teacher"  # None: cluster the raw features
    k: int = 12
    diagnose_ks: tuple[int, ...] = ()
    n_nearest: int = 8
    device: str = "auto"
    random_state: int = 0
    # Working memory of the chunked paths (transform, mini-batch k-means), MiB: a pool larger
    # than this is read in chunks and transformed into a temporary memory map.
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB

    def __post_init__(self) -> None:
        object.__setattr__(self, "diagnose_ks", tuple(self.diagnose_ks))
        super().__post_init__()

    def validate(self) -> None:
        if self.k < 2 or any(k < 2 for k in self.diagnose_ks):
            raise ValueError(
                f"ClusterConfig: every k must be >= 2, got {self.k}, {self.diagnose_ks}"
            )
        _positive(self, "n_nearest", "memory_budget_mb")


@dataclass(frozen=True)
class SampleConfig(StageConfig):
    """Sample pool triplets and label them with the teacher's odd-one-out and similarities."""

    n_triplets: int = 20_000
    n_val: int = 500
    strategy: str = "cluster_boundary"
    # Divides the teacher's logits: > 1 makes its choice distributions softer.
    teacher_temperature: float = 1.0
    random_state: int = 0
    # Working memory for the teacher representation, MiB (see ClusterConfig).
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB

    def validate(self) -> None:
        _positive(self, "n_triplets", "teacher_temperature", "memory_budget_mb")
        if self.n_val < 0:
            raise ValueError("SampleConfig.n_val must be >= 0")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"SampleConfig.strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}"
            )


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """Score features (optionally through a fitted transform) against judgments or a matrix."""

    image_set: str
    model: str
    judgments: str | None = None
    matrix: str | None = None
    transform: str | None = None
    # None: dot product through a transform (what it was fitted for), cosine otherwise;
    # "pearson" applies to matrices only (RSA on correlation-based similarity).
    metric: Literal["cosine", "dot", "euclidean", "pearson"] | None = None
    n_boot: int = 1000
    random_state: int = 0
    # Paired comparison: a second representation (features label, optionally through a
    # transform) scored on the same items; the result gets A − B with a paired bootstrap CI.
    compare: str | None = None
    compare_transform: str | None = None
    # What accuracy CIs resample: triplets (responses to one triplet are not independent),
    # items (when the question is about the stimuli), or responses. RSA always uses items.
    ci_unit: Literal["triplets", "items", "responses"] = "triplets"

    def validate(self) -> None:
        if (self.judgments is None) == (self.matrix is None):
            raise ValueError("EvaluateConfig: give exactly one of judgments or matrix")
        if self.ci_unit not in ("triplets", "items", "responses"):
            raise ValueError("EvaluateConfig.ci_unit must be triplets, items or responses")
        if self.compare_transform is not None and self.compare is None:
            raise ValueError("EvaluateConfig.compare_transform needs compare (a features label)")
        _positive(self, "n_boot")
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

    matrix: str
    name: str = "matrix-fit"
    n_triplets: int = 10_000
    split: Literal["fit", "test", "all"] = "fit"
    test_fraction: float = 0.5
    random_state: int = 0

    def validate(self) -> None:
        _positive(self, "n_triplets")
        if self.split not in ("fit", "test", "all"):
            raise ValueError(
                f"MatrixTripletsConfig.split must be fit, test or all, not {self.split!r}"
            )
        if not 0 < self.test_fraction < 1:
            raise ValueError(
                f"MatrixTripletsConfig.test_fraction must be in (0, 1), got {self.test_fraction}"
            )
        if not self.name.strip():
            raise ValueError("MatrixTripletsConfig.name must not be empty")
