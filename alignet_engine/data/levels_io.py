"""The Levels odd-one-out data set (Muttenthaler et al. 2025), as the authors publish it.

``processed_data/pruned_dataset.pkl`` (GIN, ``fborn/Dataset_Levels``) is a pickled dict:
participant id → list of trial dicts with the keys

* ``image1Path``, ``image2Path``, ``image3Path`` — ImageNet-2012 *train* file names such as
  ``n07714990_3290.JPEG`` (the WordNet id of the class is the part before ``_``);
* ``selected_image`` — the file name the participant chose as the odd one out (empty / None
  when the participant did not respond);
* ``exp_trial_type`` — ``exp_trial`` or ``catch_trial``;
* ``triplet_type`` — the authors' name of the level (not needed: the level follows from the
  WordNet ids, see :func:`triplet_level`);
* ``rt`` — response time in milliseconds.

The pickle is read with :func:`safe_unpickle`, which builds only builtin containers and
scalars: a pickle can run arbitrary code when loaded, and this file comes from the internet.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.data._io_common import PathLike, summarize
from alignet_engine.errors import InputError

#: Level of a triplet from the number of distinct WordNet ids among its three images.
LEVEL_BY_CLASSES: dict[int, str] = {3: "global", 1: "local", 2: "class_boundary"}
LEVELS: tuple[str, ...] = ("global", "local", "class_boundary")
#: The authors' participant filter (Muttenthaler et al. 2025): at least this share of catch
#: trials answered correctly, at most this many trials without a response.
MIN_CATCH_ACCURACY = 0.9
MAX_NONRESPONSES = 10

# Globals a pickle may name that build nothing but builtin containers/scalars. Protocol 2+
# pickles of these types need no global at all; older protocols name a few builtins.
_ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("_codecs", "encode"),  # how protocol 2 writes bytes objects
    }
)


class _Refused(pickle.UnpicklingError):
    """The pickle names a global (a type or function) outside the builtins allowed."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def safe_unpickle(path: PathLike, *, field: str | None = None) -> Any:
    """Load a pickle that holds only builtin containers and scalars.

    Dicts, lists, tuples, sets, str, bytes, int, float, bool and None are built; any other
    object (a class instance, a numpy array, a function) is refused *before* it is built,
    so a malicious file cannot run code.

    Raises
    ------
    InputError
        The file is missing, not a pickle, truncated, or names a type outside the builtins
        (the message names it and says how to convert the file).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found; check the path", source=p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", source=p) from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise InputError(
            f"the pickle holds a Python object of type {exc}, which is not loaded for safety "
            "(only dicts, lists, tuples, sets, strings and numbers are); convert it to plain "
            "Python types first (e.g. numpy numbers to float/int)",
            source=p,
            field=field,
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
    ) as exc:
        raise InputError(
            f"not a readable pickle file ({type(exc).__name__}: {exc})", source=p, field=field
        ) from None


def wordnet_id(file_name: str) -> str:
    """The WordNet id of an ImageNet train file name: ``n07714990_3290.JPEG`` → ``n07714990``."""
    return Path(file_name).name.split("_", 1)[0]


def triplet_level(names: tuple[str, str, str]) -> str:
    """``global`` (3 classes), ``class_boundary`` (2) or ``local`` (1 class) of a triplet."""
    return LEVEL_BY_CLASSES[len({wordnet_id(n) for n in names})]


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _rt(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return f if math.isfinite(f) else float("nan")


def _catch_answer(names: tuple[str, str, str]) -> str | None:
    """The correct odd one of a catch trial: the image unlike the other two.

    Two identical file names → the third; otherwise two images of one WordNet class → the
    image of the other class. None when neither singles out one image (then the trial does
    not count towards the participant's catch accuracy).
    """
    for key in (lambda n: n, wordnet_id):
        keys = [key(n) for n in names]
        odd = [n for n, k in zip(names, keys, strict=True) if keys.count(k) == 1]
        if len(odd) == 1 and len(set(keys)) == 2:
            return odd[0]
    return None


@dataclass(frozen=True)
class LevelsData:
    """What :func:`read_levels_pkl` returns.

    judgments : experimental trials of the participants who pass the filter and match the
        image set: odd-one-out rows ``(i, j, odd)``; ``types`` = level per row,
        ``response_ms`` = ``rt``; ``participant`` = index into ``participants``.
    participants : (p,) the file's participant ids (as str) in sorted order.
    report : counts for the user (trials, catch trials, excluded participants and why,
        missing images), JSON-able.
    """

    judgments: Judgments
    participants: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)


#: the trial keys naming the three images
_IMAGE_KEYS = ("image1Path", "image2Path", "image3Path")
#: the file's own ``triplet_type`` → our WordNet level (counted where they disagree)
_AUTHORS_LEVEL = {
    "between_class": "global",
    "within_class": "local",
    "class_border": "class_boundary",
}


@dataclass
class _TrialCounts:
    """Trial counts over the whole file: the numbers of the import report."""

    experimental: int = 0
    catch: int = 0
    nonresponses_experimental: int = 0
    invalid_selections: int = 0
    level_mismatch: int = 0


@dataclass
class _ParticipantTrials:
    """One participant's answered experimental trials and what the filter needs."""

    kept: list[tuple[tuple[str, str, str], str, float]] = field(default_factory=list)
    catch_correct: int = 0
    catch_scorable: int = 0
    nonresponses: int = 0

    def excluded_because(self, min_catch_accuracy: float, max_nonresponses: int) -> str | None:
        """Why the filter drops this participant, or None to keep them."""
        n = self.catch_scorable
        if n and self.catch_correct / n < min_catch_accuracy:
            return f"catch accuracy {self.catch_correct}/{n} < {min_catch_accuracy:g}"
        if self.nonresponses > max_nonresponses:
            return f"{self.nonresponses} non-responses > {max_nonresponses}"
        return None


def _check_trial(pid: str, t: int, trial: Any, src: Path) -> None:
    """Raise an InputError naming participant ``pid``, 1-based trial ``t`` and the key when
    ``trial`` is not a dict with the three image paths and ``exp_trial_type``."""
    if not isinstance(trial, Mapping):
        raise InputError(
            f"participant {pid!r}: trial is {type(trial).__name__}, expected a dict",
            source=src,
            row=t,
        )
    for k in (*_IMAGE_KEYS, "exp_trial_type"):
        if k not in trial:
            raise InputError(
                f"participant {pid!r}: key missing from the trial (it has "
                f"{', '.join(sorted(map(str, trial)))})",
                source=src,
                row=t,
                field=k,
            )


def _scan_participant(pid: str, trials: Any, src: Path, counts: _TrialCounts) -> _ParticipantTrials:
    """Sort one participant's trials: catch trials are scored, trials without a (valid)
    response counted, answered experimental trials kept as (file names, chosen name, rt)."""
    if not isinstance(trials, list | tuple):
        raise InputError(
            f"participant {pid!r} maps to {type(trials).__name__}, expected a list of trial dicts",
            source=src,
        )
    out = _ParticipantTrials()
    for t, trial in enumerate(trials, start=1):
        _check_trial(pid, t, trial, src)
        names = tuple(Path(str(trial[k])).name for k in _IMAGE_KEYS)
        kind = trial["exp_trial_type"]
        choice = trial.get("selected_image")
        if _is_missing(choice):
            out.nonresponses += 1
            if kind == "exp_trial":
                counts.nonresponses_experimental += 1
                counts.experimental += 1
            else:
                counts.catch += 1
            continue
        choice = Path(str(choice)).name
        if kind == "catch_trial":
            counts.catch += 1
            answer = _catch_answer(names)  # type: ignore[arg-type]
            if answer is not None:
                out.catch_scorable += 1
                out.catch_correct += choice == answer
            continue
        if kind != "exp_trial":
            raise InputError(
                f"participant {pid!r}: unknown trial type {kind!r} (expected exp_trial or "
                "catch_trial)",
                source=src,
                row=t,
                field="exp_trial_type",
            )
        counts.experimental += 1
        if choice not in names:
            counts.invalid_selections += 1  # none of the three images: no response
            out.nonresponses += 1
            continue
        level = triplet_level(names)  # type: ignore[arg-type]
        tt = trial.get("triplet_type")
        if isinstance(tt, str) and _AUTHORS_LEVEL.get(tt, level) != level:
            counts.level_mismatch += 1
        out.kept.append((names, choice, _rt(trial.get("rt"))))  # type: ignore[arg-type]
    return out


@dataclass
class _MatchedRows:
    """The judgment rows being built: kept trials matched to image ids by file name, and
    the trials dropped because an image is not in the set."""

    by_name: dict[str, int]
    rows: list[tuple[int, int, int]] = field(default_factory=list)
    rts: list[float] = field(default_factory=list)
    who: list[int] = field(default_factory=list)
    missing: dict[str, None] = field(default_factory=dict)  # an ordered set of file names
    n_missing_trials: int = 0

    def add(self, names: tuple[str, str, str], choice: str, rt: float, participant: int) -> None:
        """One answered trial as the row ``(i, j, odd)``, or counted when an image is missing."""
        ids = [self.by_name.get(n) for n in names]
        if any(i is None for i in ids):
            self.missing.update((n, None) for n, i in zip(names, ids, strict=True) if i is None)
            self.n_missing_trials += 1
            return
        odd = names.index(choice)
        a, b = (x for x in range(3) if x != odd)
        self.rows.append((ids[a], ids[b], ids[odd]))  # type: ignore[arg-type]
        self.rts.append(rt)
        self.who.append(participant)


def _first_index_by_name(images: ImageSet) -> dict[str, int]:
    """File name → the first image of the set with that name (ImageNet's ``nXXXXXXXX/``
    folders and a flat folder match alike)."""
    by_name: dict[str, int] = {}
    for i, p in enumerate(images.paths):
        if p:
            by_name.setdefault(Path(p).name, i)
    return by_name


def _read_participants(src: Path) -> Mapping[Any, Any]:
    """The pickle's participant id → trials mapping (safely unpickled, non-empty)."""
    data = safe_unpickle(src)
    if not isinstance(data, Mapping) or not data:
        raise InputError(
            f"expected a non-empty dict of participant id → list of trials, got "
            f"{type(data).__name__}",
            source=src,
        )
    return data


def _nothing_left(matched: _MatchedRows, excluded: int, participants: int, src: Path) -> InputError:
    """Why no trial survived: the images are another set's, or the filter took them all."""
    if matched.missing and not any(n in matched.by_name for n in matched.missing):
        return InputError(
            f"none of the file's images are in the image set ({len(matched.missing)} missing, "
            f"e.g. {summarize(list(matched.missing), limit=3)}); import the ImageNet-2012 train "
            "images that Levels uses first, as a folder of nXXXXXXXX/ class folders or a flat "
            "folder (alignet-cli import-images <folder> --set NAME), then import the "
            "judgments onto that set",
            source=src,
        )
    return InputError(
        f"no experimental trial left: {excluded} of {participants} participants "
        f"excluded by the filter, {matched.n_missing_trials} trials name missing images",
        source=src,
    )


def _import_report(
    participants: int,
    excluded: dict[str, str],
    filter_: dict[str, float],
    counts: _TrialCounts,
    matched: _MatchedRows,
    row_levels: list[str],
) -> dict[str, Any]:
    """The JSON-able counts shown to the user (see :class:`LevelsData`)."""
    return {
        "participants": participants,
        "participants_kept": participants - len(excluded),
        "participants_excluded": excluded,
        "filter": filter_,
        "experimental_trials": counts.experimental,
        "catch_trials": counts.catch,
        "nonresponses_experimental": counts.nonresponses_experimental,
        "invalid_selections": counts.invalid_selections,
        "trials_missing_images": matched.n_missing_trials,
        "n_missing_images": len(matched.missing),
        "missing_images": list(matched.missing)[:50],
        "triplet_type_disagrees_with_wordnet_level": counts.level_mismatch,
        "trials_kept": len(matched.rows),
        "by_level": {lv: row_levels.count(lv) for lv in LEVELS},
    }


def read_levels_pkl(
    path: PathLike,
    images: ImageSet,
    *,
    min_catch_accuracy: float = MIN_CATCH_ACCURACY,
    max_nonresponses: int = MAX_NONRESPONSES,
) -> LevelsData:
    """Read Levels' ``pruned_dataset.pkl`` onto ``images`` (matched by file name).

    Parameters
    ----------
    path : the pickle (see the module docstring for its structure).
    images : the imported ImageNet images; matched by file name, so ImageNet's
        ``nXXXXXXXX/`` folder layout and a flat folder both work.
    min_catch_accuracy : keep a participant whose share of correctly answered catch trials
        (see :func:`_catch_answer`) is at least this; participants without a scorable catch
        trial are kept.
    max_nonresponses : keep a participant with at most this many trials (experimental and
        catch) without a response.

    Catch trials are used only for the filter and never enter the judgments. Experimental
    trials without a response are dropped (counted); so are trials naming an image the set
    does not hold (counted, and the first names listed in ``report["missing_images"]``).

    Raises
    ------
    InputError
        unsafe / unreadable pickle, wrong structure (names the participant, the 1-based trial
        and the key), no image of the file in ``images``, or no trial left after filtering.
    """
    if not 0.0 <= min_catch_accuracy <= 1.0:
        raise InputError(f"min_catch_accuracy must lie in [0, 1], got {min_catch_accuracy}")
    if max_nonresponses < 0:
        raise InputError(f"max_nonresponses must be >= 0, got {max_nonresponses}")
    src = Path(path)
    data = _read_participants(src)
    participants = tuple(sorted(str(k) for k in data))
    pindex = {p: i for i, p in enumerate(participants)}
    matched = _MatchedRows(_first_index_by_name(images))
    excluded: dict[str, str] = {}
    counts = _TrialCounts()
    for pid_raw, trials in data.items():
        pid = str(pid_raw)
        scanned = _scan_participant(pid, trials, src, counts)
        why = scanned.excluded_because(min_catch_accuracy, max_nonresponses)
        if why is not None:
            excluded[pid] = why
            continue
        for names, choice, rt in scanned.kept:
            matched.add(names, choice, rt, pindex[pid])
    if not matched.rows:
        raise _nothing_left(matched, len(excluded), len(participants), src)
    names_of = [Path(p).name for p in images.paths]
    row_levels = [
        triplet_level((names_of[i], names_of[j], names_of[k])) for i, j, k in matched.rows
    ]
    filter_ = {"min_catch_accuracy": min_catch_accuracy, "max_nonresponses": max_nonresponses}
    report = _import_report(len(participants), excluded, filter_, counts, matched, row_levels)
    j = Judgments(
        "oddone",
        np.asarray(matched.rows, dtype=np.int64).reshape(-1, 3),
        np.asarray(matched.who, dtype=np.int64),
        meta={
            "format": "levels-pkl",
            "protocol": "levels",
            "source": str(src),
            "import_report": json.dumps(report),
        },
        types=np.asarray(row_levels, dtype=str),
        response_ms=np.asarray(matched.rts, dtype=np.float64),
    )
    return LevelsData(j, participants, report)
