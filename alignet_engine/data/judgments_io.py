"""Importers of human triplet judgments (odd-one-out and two-alternative forced choice).

Every reader validates the whole file before it returns and raises
:class:`~alignet_engine.errors.InputError` naming the file, the row and the field. Row
numbers follow :mod:`alignet_engine.data._io_common`: the editor line for text files (the
header is line 1), the 1-based array row for ``.npy``, the 1-based entry number for JSON.

Output conventions (see :class:`~alignet_engine.base.types.Judgments`): item ids are
0-based; odd-one-out rows are ``(i, j, odd)`` with the odd one LAST and the other two in
their presented order; two-alternative rows are ``(anchor, chosen, other)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from alignet_engine.base.types import Judgments
from alignet_engine.data._csv import IntCsv, read_int_csv
from alignet_engine.data._io_common import (
    PathLike,
    array_row,
    check_file,
    check_id_base,
    check_item_ids,
    check_n_items,
    check_participant,
    check_votes,
    read_int_table,
    read_text,
    refuse_cells,
    summarize,
)
from alignet_engine.data.arrays_io import load_npy
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

#: Column order that moves the odd one (position 0, 1 or 2) last and keeps the other two
#: in their presented order.
_ODD_LAST = np.array([[1, 2, 0], [0, 2, 1], [0, 1, 2]], dtype=np.int64)

#: The columns of the VICE/SPoSE triplet files (npy and text): the pair, then the odd one.
_IJ_ODD = ("column 1 (i)", "column 2 (j)", "column 3 (odd one)")


THINGS_COLUMNS = ("obj_1", "obj_2", "obj_3", "choice", "participant")
ODDONE_CSV_SCHEMA = "item_1,item_2,item_3,odd_position[,participant][,type]"
TWOAFC_CSV_SCHEMA = "anchor,chosen,other[,votes_chosen,votes_other][,participant]"

MaterialsSubset = Literal["all", "strict_majority", "ties"]
_MATERIALS_KEYS: dict[str, tuple[str, str]] = {
    "all": ("answers", "agreement"),
    "strict_majority": ("answers_diff", "agreement_diff"),
    "ties": ("answers_equal", "agreement_equal"),
}


def _odd_last(ids: np.ndarray, odd_pos: np.ndarray) -> np.ndarray:
    """Reorder (t, 3) ids so the odd one (0-based position ``odd_pos`` (t,)) is last."""
    return np.ascontiguousarray(np.take_along_axis(ids, _ODD_LAST[odd_pos], axis=1))


def _check_position(
    pos: np.ndarray, *, source: Path, rows: np.ndarray, field: str, what: str
) -> None:

    def says(r: int, _c: int) -> str:
        return (
            f"{what} is {int(pos[r])}; it must be 1, 2 or 3 (the position of the odd one "
            "among the three items)."
        )

    bad = (pos < 1) | (pos > 3)
    refuse_cells(bad, says, source=source, rows=rows, fields=(field,), list_rows=True)


def read_things_tsv(path: PathLike, n_items: int) -> Judgments:
    """Read THINGS odd-one-out triplets in the noise-ceiling / OSF text format.

    Format: no header; one response per line; whitespace (normally tab) separated integers
    ``obj_1 obj_2 obj_3 choice participant``. ``obj_*`` are **1-based** item ids
    (rows of ``things_concepts.tsv``); ``choice`` ∈ {1, 2, 3} is the position of the object
    picked as the odd one out. A 4-column variant without ``participant`` is accepted
    (participant = -1). Blank lines are skipped (row numbers stay the editor's line
    numbers). Three-column files are refused: their orientation (which column is
    the odd one) is not recorded in the file; use :func:`read_oddone_csv` or
    :func:`read_oddone_npy`.

    Parameters
    ----------
    path : the ``.tsv`` / ``.txt`` / ``.csv`` file.
    n_items : size of the image set (1,854 for THINGS).

    Returns
    -------
    Judgments, kind ``"oddone"``: triplets (t, 3) int64 0-based with the odd one last and
    the other two in their presented order; participant (t,) int64.

    Raises
    ------
    InputError
        Unreadable/empty file, a header line, a column count other than 4 or 5 (or one that
        changes between rows), a non-integer, ``choice`` outside 1..3, an id outside
        1..n_items, an item repeated within a triplet, a participant id below -1. The row
        is the line number.
    """
    n = check_n_items(n_items)
    assert n is not None
    p, table, lines = read_int_table(
        path,
        allowed_ncols=(4, 5),
        fields=THINGS_COLUMNS,
        layout="obj_1 obj_2 obj_3 choice [participant], tab-separated, 1-based ids",
    )
    choice = table[:, 3]
    _check_position(choice, source=p, rows=lines, field="choice", what="choice")
    ids = check_item_ids(
        table[:, :3],
        n_items=n,
        source=p,
        rows=lines,
        fields=THINGS_COLUMNS[:3],
        id_base=1,
        hint=" THINGS ids are 1-based rows of things_concepts.tsv.",
    )
    if table.shape[1] == 5:
        participant = np.ascontiguousarray(table[:, 4])
        check_participant(participant, source=p, rows=lines, field="participant")
    else:
        participant = np.full(len(table), -1, dtype=np.int64)
    logger.info("read %d THINGS odd-one-out triplets from %s", len(table), p)
    return Judgments(
        kind="oddone",
        triplets=_odd_last(ids, choice - 1),
        participant=participant,
        meta={"format": "things_tsv", "source": str(p)},
    )


def read_oddone_npy(path: PathLike, n_items: int) -> Judgments:
    """Read odd-one-out triplets from an (N, 3) integer ``.npy`` (VICE/SPoSE ``train_90.npy``).

    Convention: ids are 0-based; columns 1 and 2 are the pair judged most similar and
    column 3 is the odd one out — the order :class:`Judgments` uses, so rows are kept as is.

    ``n_items`` is the size of the image set. Returns :class:`Judgments`, kind
    ``"oddone"``, participant all -1.

    Raises
    ------
    InputError
        Not a ``.npy`` / pickled objects / unreadable, not 2-D with 3 columns, no rows, a
        non-integer dtype, an id outside 0..n_items-1, an item repeated within a row. The
        row is the 1-based array row.
    """
    n = check_n_items(n_items)
    assert n is not None
    p = check_file(path)
    arr = load_npy(p)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(
            f"has shape {arr.shape}; expected (N, 3): one triplet per row, odd one last",
            source=p,
        )
    if arr.shape[0] == 0:
        raise InputError("holds no triplets (shape (0, 3))", source=p)
    if arr.dtype.kind not in "iu":
        raise InputError(
            f"has dtype {arr.dtype}; item ids must be integers (save with arr.astype(numpy.int64))",
            source=p,
        )
    rows = np.arange(1, arr.shape[0] + 1, dtype=np.int64)
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        r = int(np.flatnonzero((arr > np.iinfo(np.int64).max).any(axis=1))[0])
        raise InputError(
            f"{array_row(r)} holds an id too large for the image set of {n} images",
            source=p,
            row=r + 1,
        )
    ids = check_item_ids(arr.astype(np.int64), n_items=n, source=p, rows=rows, fields=_IJ_ODD)
    return _odd_last_rows(ids, p, "oddone_npy")


def _odd_last_rows(ids: np.ndarray, p: Path, fmt: str) -> Judgments:
    """Checked (t, 3) rows ``(i, j, odd)`` of a file without participants, as Judgments."""
    logger.info("read %d odd-one-out triplets from %s", len(ids), p)
    return Judgments(
        kind="oddone",
        triplets=ids,
        participant=np.full(len(ids), -1, dtype=np.int64),
        meta={"format": fmt, "source": str(p)},
    )


def read_oddone_txt(path: PathLike, n_items: int) -> Judgments:
    """Read VICE/SPoSE's text triplets (``train_90.txt`` / ``test_10.txt``).

    One triplet per line, three whitespace-separated 0-based item ids, no header; columns 1
    and 2 are the pair judged most similar and column 3 the odd one out (method.md §1.1: the
    processed THINGS files; the raw OSF ``data1854_batch5_test10.txt`` puts the odd one FIRST
    and is not this format).

    Returns :class:`Judgments` as :func:`read_oddone_npy` does.

    Raises
    ------
    InputError
        Naming the file, the 1-based line and the column: not exactly 3 integer columns, a
        header or text, an id outside 0..n_items-1, an item repeated within a row.
    """
    n = check_n_items(n_items)
    assert n is not None
    p, table, lines = read_int_table(
        path, allowed_ncols=(3,), fields=_IJ_ODD, layout="i j odd, 0-based ids (VICE train_90.txt)"
    )
    ids = check_item_ids(table, n_items=n, source=p, rows=lines, fields=_IJ_ODD)
    return _odd_last_rows(ids, p, "oddone_txt")


def read_oddone_csv(path: PathLike, n_items: int, *, id_base: int = 0) -> Judgments:
    """Read odd-one-out responses from a CSV with a header row.

    Schema (header names case-insensitive, any column order, extra columns ignored with a
    warning)::

        item_1,item_2,item_3,odd_position[,participant]

    ``item_*`` are item ids (0-based unless ``id_base=1``) in presented order;
    ``odd_position`` ∈ {1, 2, 3} is the position of the item chosen as the odd one out;
    ``participant`` is an integer id >= 0, or empty / -1 for unknown. The delimiter may be
    ``,``, tab or ``;`` (taken from the header line).

    Parameters
    ----------
    path : the CSV file.
    n_items : size of the image set.
    id_base : 0 or 1, the id of the first image in the file.

    Returns
    -------
    Judgments, kind ``"oddone"``, odd one last, the other two in presented order.

    Raises
    ------
    InputError
        Missing header/columns, a misspelt column, a row whose column count differs from the
        header's, an empty or non-integer cell, ``odd_position`` outside 1..3, an id out of
        range, a repeated item, a participant id below -1. The row is the line number (the
        header is line 1).
    """
    n = check_n_items(n_items)
    assert n is not None
    base = check_id_base(id_base)
    fields = ("item_1", "item_2", "item_3")
    t = read_int_csv(
        path,
        required=(*fields, "odd_position"),
        optional=("participant",),
        schema=ODDONE_CSV_SCHEMA,
        blank={"participant": -1},
        what={"odd_position": "the odd one's position (1, 2 or 3)"}
        | dict.fromkeys(fields, "an item id"),
        read_later=("type",),
    )
    raw = np.stack([t.ints[f] for f in fields], axis=1)
    pos = t.ints["odd_position"]
    _check_position(pos, source=t.path, rows=t.lines, field="odd_position", what="odd_position")
    ids = check_item_ids(raw, n_items=n, source=t.path, rows=t.lines, fields=fields, id_base=base)
    participant = _participant_column(t)
    types = None
    if "type" in t.ignored:
        types = _text_column(t.path, "type", len(t))
        t.ignored.remove("type")
    logger.info("read %d odd-one-out triplets from %s", len(t), t.path)
    return Judgments(
        kind="oddone",
        triplets=_odd_last(ids, pos - 1),
        participant=participant,
        meta=_csv_meta("oddone_csv", t.path, t.ignored),
        types=types,
    )


def _text_column(path: Path, name: str, n_rows: int) -> np.ndarray:
    """Column ``name`` of a header-row CSV as (n_rows,) str (the triplet-type labels)."""
    import csv

    text = path.read_text(encoding="utf-8-sig")  # an Excel BOM before the first column name
    first = next(line for line in text.splitlines() if line.strip())
    delim = "," if "," in first else "\t" if "\t" in first else ";" if ";" in first else ","
    reader = csv.reader((line for line in text.splitlines() if line.strip()), delimiter=delim)
    header = [h.strip().lower() for h in next(reader)]
    col = header.index(name)
    values = [row[col].strip() if col < len(row) else "" for row in reader]
    if len(values) != n_rows:
        raise InputError(f"found {len(values)} values for {n_rows} rows", source=path, field=name)
    return np.asarray(values, dtype=str)


def read_twoafc_csv(path: PathLike, n_items: int, *, id_base: int = 0) -> Judgments:
    """Read two-alternative (anchor, chosen, other) judgments from a CSV with a header row.

    Schema (header names case-insensitive, any column order, extra columns ignored with a
    warning)::

        anchor,chosen,other[,votes_chosen,votes_other][,participant]

    ``chosen`` was judged more similar to ``anchor`` than ``other``. Ids are 0-based unless
    ``id_base=1``. The two vote columns come together or not at all: a row may aggregate
    several responses (``votes_chosen`` for ``chosen``, ``votes_other`` for ``other``,
    both >= 0, not both 0); without them each row is one response. ``participant`` is an
    integer id >= 0, or empty / -1 for unknown. Delimiter ``,``, tab or ``;``.

    ``path``, ``n_items`` and ``id_base`` are :func:`read_oddone_csv`'s.

    Returns
    -------
    Judgments, kind ``"twoafc"``; votes (t, 2) int64 when the vote columns are present.

    Raises
    ------
    InputError
        As :func:`read_oddone_csv`, plus: only one of the vote columns, a negative vote,
        a row with no votes. The row is the line number (the header is line 1).
    """
    n = check_n_items(n_items)
    assert n is not None
    base = check_id_base(id_base)
    fields = ("anchor", "chosen", "other")
    vote_fields = ("votes_chosen", "votes_other")
    t = read_int_csv(
        path,
        required=fields,
        optional=(*vote_fields, "participant"),
        schema=TWOAFC_CSV_SCHEMA,
        blank={"participant": -1},
        what=dict.fromkeys(fields, "an item id") | dict.fromkeys(vote_fields, "a vote count"),
    )
    present = [f for f in vote_fields if f in t.ints]
    if len(present) == 1:
        missing = next(f for f in vote_fields if f not in t.ints)
        raise InputError(
            f"the header has '{present[0]}' but no '{missing}'; give both vote columns or neither",
            source=t.path,
            row=t.header_line,
            field=missing,
        )
    raw = np.stack([t.ints[f] for f in fields], axis=1)
    ids = check_item_ids(raw, n_items=n, source=t.path, rows=t.lines, fields=fields, id_base=base)
    votes = None
    if present:
        votes = np.stack([t.ints[f] for f in vote_fields], axis=1)
        check_votes(votes, source=t.path, rows=t.lines, fields=vote_fields)
    participant = _participant_column(t)
    logger.info("read %d two-alternative judgments from %s", len(t), t.path)
    return Judgments(
        kind="twoafc",
        triplets=ids,
        participant=participant,
        votes=votes,
        meta=_csv_meta("twoafc_csv", t.path, t.ignored),
    )


def _participant_column(t: IntCsv) -> np.ndarray:
    if "participant" not in t.ints:
        return np.full(len(t), -1, dtype=np.int64)
    participant = t.ints["participant"]
    check_participant(participant, source=t.path, rows=t.lines, field="participant")
    return np.ascontiguousarray(participant)


def _csv_meta(fmt: str, path: Path, ignored: list[str]) -> dict[str, str]:
    meta = {"format": fmt, "source": str(path)}
    if ignored:
        meta["ignored_columns"] = ",".join(ignored)
    return meta


def read_materials_json(
    path: PathLike, n_items: int = 100, *, subset: MaterialsSubset = "all"
) -> Judgments:
    """Read the material-appearance similarity JSON (Lagunas et al. 2019) as 2AFC judgments.

    The file is a dict of aligned lists: ``answers`` = ``[[r, a, n], ...]`` (0-based ids;
    ``a`` was chosen by the majority as more similar to the reference ``r`` than ``n``) and
    ``agreement`` = ``[[votes_a, votes_n], ...]``; ``answers_diff``/``agreement_diff`` hold
    the strict-majority subset and ``answers_equal``/``agreement_equal`` the ties.

    Parameters
    ----------
    path : ``answers_processed_{train,test}.json``.
    n_items : size of the image set (the 100 materials).
    subset : ``"all"`` (``answers``/``agreement``, ties included; the default),
        ``"strict_majority"`` (``*_diff``) or ``"ties"`` (``*_equal``).

    Returns
    -------
    Judgments, kind ``"twoafc"``: triplets (anchor, chosen, other) = (r, a, n);
    votes (t, 2) int64 = agreement; participant all -1 (the file has no worker ids).

    Raises
    ------
    InputError
        Invalid JSON (row = JSON line), not a dict, a missing key, an entry that is not a
        list of 3 (answers) or 2 (agreement) integers, lists of different lengths, an empty
        list, ids out of range, a repeated item, negative or all-zero votes, votes that
        contradict the subset (``a`` must have at least as many votes as ``n``; more for
        ``strict_majority``, equal for ``ties``). The row is the 1-based entry number.
    """
    n = check_n_items(n_items)
    assert n is not None
    if subset not in _MATERIALS_KEYS:
        raise ValueError(f"subset must be one of {sorted(_MATERIALS_KEYS)}, got {subset!r}")
    akey, gkey = _MATERIALS_KEYS[subset]
    p, text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"is not valid JSON: {exc.msg} (column {exc.colno})", source=p, row=exc.lineno
        ) from None
    except RecursionError:
        raise InputError(
            "nests lists or objects too deeply to be judgments data", source=p
        ) from None
    except ValueError as exc:  # Python refuses integers of more than 4300 digits
        raise InputError(f"is not usable JSON ({exc})", source=p) from None
    if not isinstance(data, dict):
        raise InputError(
            f"the top level is a JSON {type(data).__name__}; expected an object with keys "
            f"'{akey}' and '{gkey}'",
            source=p,
        )
    answers = _json_int_rows(data, akey, 3, p)
    agreement = _json_int_rows(data, gkey, 2, p)
    if len(answers) != len(agreement):
        raise InputError(
            f"'{akey}' has {len(answers)} entries but '{gkey}' has {len(agreement)}; the two "
            "lists must be aligned row by row",
            source=p,
            field=gkey,
        )
    rows = np.arange(1, len(answers) + 1, dtype=np.int64)
    fields = (f"{akey}[*][0] (reference)", f"{akey}[*][1] (chosen)", f"{akey}[*][2] (other)")
    ids = check_item_ids(answers, n_items=n, source=p, rows=rows, fields=fields)
    vote_fields = (f"{gkey}[*][0]", f"{gkey}[*][1]")
    check_votes(agreement, source=p, rows=rows, fields=vote_fields)
    va, vn = agreement[:, 0], agreement[:, 1]
    bad, rule = {
        "all": (va < vn, "at least as many votes as"),
        "strict_majority": (va <= vn, "more votes than"),
        "ties": (va != vn, "as many votes as"),
    }[subset]
    if bad.any():
        bad_rows = np.flatnonzero(bad)
        r = int(bad_rows[0])
        raise InputError(
            f"votes {agreement[r].tolist()} break the format: the chosen candidate must have "
            f"{rule} the other in '{gkey}' (the vote columns may be swapped). Rows affected: "
            f"{summarize([int(x) + 1 for x in bad_rows])}.",
            source=p,
            row=r + 1,
            field=gkey,
        )
    logger.info(
        "read %d material-similarity triplets (%d responses, subset %s) from %s",
        len(ids),
        int(agreement.sum()),
        subset,
        p,
    )
    return Judgments(
        kind="twoafc",
        triplets=ids,
        participant=np.full(len(ids), -1, dtype=np.int64),
        votes=np.ascontiguousarray(agreement),
        meta={"format": "material_similarity_json", "source": str(p), "subset": subset},
    )


def _json_int_rows(data: dict[str, object], key: str, width: int, p: Path) -> np.ndarray:
    """``data[key]`` as a (t, width) int64 array; every entry is checked to be a list of ints."""
    if key not in data:
        raise InputError(
            f"has no key '{key}' (keys present: {', '.join(map(str, data)) or 'none'})",
            source=p,
            field=key,
        )
    entries = data[key]
    if not isinstance(entries, list):
        raise InputError(
            f"'{key}' must be a list of lists, got a JSON {type(entries).__name__}",
            source=p,
            field=key,
        )
    if not entries:
        raise InputError(
            f"'{key}' is an empty list; the file holds no triplets", source=p, field=key
        )
    for k, e in enumerate(entries):
        # type() is int, not isinstance: JSON true/false are bool, a subclass of int.
        if not (
            isinstance(e, list)
            and len(e) == width
            and all(type(x) is int and -(2**63) <= x < 2**63 for x in e)
        ):
            raise InputError(
                f"entry {json.dumps(e)[:80]} must be a list of {width} integers",
                source=p,
                row=k + 1,
                field=key,
            )
    return np.asarray(entries, dtype=np.int64).reshape(-1, width)
