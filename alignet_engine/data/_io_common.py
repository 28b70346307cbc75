"""Helpers shared by the importers: file access, header-less text tables, id validation.

Row-number conventions (the ``row`` of every :class:`~alignet_engine.errors.InputError`):

* text files (TSV, CSV, matrix CSV, manifests): the 1-based **line number** as an editor
  shows it. In a file with a header row the header is line 1 and the first data row is
  line 2.
* arrays (``.npy``, ``.npz``, ``.h5``, ``.pt``): the 1-based array row, i.e. 0-based index
  + 1; messages also give the 0-based index in brackets, e.g. ``row 5 ([4])``.
* JSON lists: the 1-based entry number in the list named by ``field``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: How many offending rows/files a message lists before it says "... (N in all)".
LIST_LIMIT = 10


def summarize(items: Sequence[object], *, limit: int = LIST_LIMIT, total: int | None = None) -> str:
    """Join the first ``limit`` items with commas and say how many there are in all
    (``total`` when ``items`` holds only the first few of them)."""
    count = len(items) if total is None else total
    shown = ", ".join(str(x) for x in items[:limit])
    if count > limit:
        shown += f", … ({count} in all)"
    return shown


def check_n_items(n_items: int | None, *, required: bool = True) -> int | None:
    """Reject a bad ``n_items`` argument (a programming error, hence not an InputError)."""
    if n_items is None:
        if required:
            raise TypeError("n_items is required (the size of the image set)")
        return None
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer):
        raise TypeError(f"n_items must be an int, got {type(n_items).__name__}")
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return int(n_items)


def check_id_base(id_base: int) -> int:
    """``id_base`` is 0 or 1 (a programming error otherwise)."""
    if id_base not in (0, 1):
        raise ValueError(f"id_base must be 0 or 1, got {id_base!r}")
    return int(id_base)


def check_file(path: PathLike) -> Path:
    """Return ``path`` as a Path after checking it is an existing, readable, non-empty file.

    Raises
    ------
    InputError
        Missing file, a folder instead of a file, no permission, or a zero-byte file.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(
            "file not found; check the path and that the file was not moved", source=p
        ) from None
    except OSError as exc:
        raise InputError(f"cannot be accessed ({exc.strerror or exc})", source=p) from None
    if p.is_dir():
        raise InputError("is a folder, not a file; choose the file inside it", source=p)
    if not os.access(p, os.R_OK):
        raise InputError(
            "cannot be read: permission denied; check the file's permissions", source=p
        )
    if st.st_size == 0:
        raise InputError("file is empty (0 bytes); export the data again", source=p)
    return p


def read_text(path: PathLike) -> tuple[Path, str]:
    """Read a UTF-8 text file (an Excel BOM is accepted).

    Returns
    -------
    (path, text) : the checked Path and the decoded text.

    Raises
    ------
    InputError
        Anything :func:`check_file` rejects, a whitespace-only file, a binary file, or text
        that is not UTF-8 (the row names the line of the first bad byte).
    """
    p = check_file(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", source=p) from None
    if data.startswith(b"\x93NUMPY"):
        raise InputError("is a NumPy .npy file, not text; use the .npy importer", source=p)
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\x89HDF"):
        raise InputError(
            "is a binary (zip/HDF5) file, not text; use the matching importer", source=p
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8 text",
            source=p,
            row=line,
        ) from None
    if not text.strip():
        raise InputError("file is empty (only blank lines); export the data again", source=p)
    return p, text


def text_lines(text: str) -> list[str]:
    """Split on ``\\n`` only (so line numbers match an editor's), dropping a trailing ``\\r``."""
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_int_tokens(
    tokens: list[str], lines: np.ndarray, ncols: int, fields: Sequence[str], source: Path
) -> np.ndarray:
    """Parse a flat list of integer tokens into a ``(len(tokens) // ncols, ncols)`` int64 array.

    ``lines`` (t,) int64 gives the file line of each row, for the error message.
    """
    if plain_int_text("".join(tokens)):
        try:
            # Fast path: numpy applies int() semantics to every token in C.
            return np.array(tokens, dtype=str).astype(np.int64).reshape(-1, ncols)
        except (ValueError, OverflowError):
            pass
    for k, tok in enumerate(tokens):
        try:
            if not _PLAIN_INT.fullmatch(tok):
                raise ValueError(tok)
            value = int(tok)
            if not -(2**63) <= value < 2**63:
                raise OverflowError
        except (ValueError, OverflowError):
            r, c = divmod(k, ncols)
            raise InputError(
                f"{tok.strip()!r} is not an integer; this column must hold whole numbers "
                "(no decimals, units or text)",
                source=source,
                row=int(lines[r]),
                field=fields[c],
            ) from None
    # numpy and int() agree on every token seen so far; keep a readable error regardless.
    raise InputError("holds values that cannot be read as integers", source=source)


def read_int_table(
    path: PathLike, *, allowed_ncols: Sequence[int], fields: Sequence[str], layout: str
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Read a header-less, whitespace-separated table of integers.

    Parameters
    ----------
    allowed_ncols : accepted column counts; every row must have the same count.
    fields : names of the columns (for messages), at least ``max(allowed_ncols)`` long.
    layout : the expected layout in words, for messages.

    Returns
    -------
    (path, table, lines) : table (t, ncols) int64; lines (t,) int64, the 1-based file line
        of each row. Blank lines carry no data and are skipped (they still count for line
        numbers).
    """
    p, text = read_text(path)
    fast = loadtxt_ints(text, None, None)
    if fast is not None and fast.shape[1] in allowed_ncols:
        lines = content_lines(text_lines(text), 0)
        if lines.shape[0] == fast.shape[0]:
            return p, fast, lines

    # Slow path: line by line, so that the first problem is reported exactly.
    def check_first(cells: list[str], line: str, line_no: int) -> None:
        if any(sep in line for sep in ",;") and len(cells) not in allowed_ncols:
            raise InputError(
                f"the columns must be separated by tabs or spaces ({layout}); this line "
                "uses commas or semicolons",
                source=p,
                row=line_no,
            )
        if any(not looks_number(x) for x in cells):
            raise InputError(
                f"line {line_no} is not numeric; this format ({layout}) has no header row: "
                "delete any header or comment line",
                source=p,
                row=line_no,
            )
        if len(cells) not in allowed_ncols:
            raise InputError(
                f"expected {' or '.join(map(str, allowed_ncols))} whitespace-separated "
                f"columns ({layout}), found {len(cells)}",
                source=p,
                row=line_no,
            )

    tokens, lines, ncols = table_cells(
        text_lines(text),
        p,
        split=str.split,
        check_first=check_first,
        ragged=lambda n, ncols, _first: (
            f"has {n} columns but the rows above have {ncols} ({layout}); "
            "every row needs the same number of columns"
        ),
    )
    table = parse_int_tokens(tokens, lines, ncols, fields, p)
    return p, table, lines


def table_cells(
    lines: Sequence[str],
    source: Path,
    *,
    split: Callable[[str], list[str]],
    check_first: Callable[[list[str], str, int], None],
    ragged: Callable[[int, int, int], str],
) -> tuple[list[str], np.ndarray, int]:
    """The cells of a header-less text table (integer tables, numeric matrices), row by row.

    Blank lines carry no data and are skipped (they still count for line numbers). The
    first other line is ``check_first(cells, line, line_no)`` (it raises for a header or a
    wrong layout) and fixes the column count; a later row with another count is an
    InputError naming its line, with the message ``ragged(n_cells, ncols, first_line_no)``.

    Returns
    -------
    (tokens, lines, ncols) : the cells row-major; lines (t,) int64, the 1-based line of each
        row; the column count.
    """
    tokens: list[str] = []
    line_nos = array("q")
    ncols: int | None = None
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        cells = split(line)
        if ncols is None:
            check_first(cells, line, k + 1)
            ncols = len(cells)
        elif len(cells) != ncols:
            raise InputError(ragged(len(cells), ncols, line_nos[0]), source=source, row=k + 1)
        tokens.extend(cells)
        line_nos.append(k + 1)
    assert ncols is not None  # read_text rejected blank files
    return tokens, np.frombuffer(line_nos, dtype=np.int64).copy(), ncols


def looks_number(tok: str) -> bool:
    """Whether ``float(tok)`` reads ``tok`` (numbers, ``nan``, ``inf``, surrounding spaces)."""
    try:
        float(tok)
    except ValueError:
        return False
    return True


def loadtxt_ints(
    text: str, delimiter: str | None, usecols: Sequence[int] | None
) -> np.ndarray | None:
    """numpy's C parser as a fast path: a (t, k) int64 table, or None on any problem.

    It is as strict as :func:`int` (it rejects ``3.0``, ``nan``, ragged rows); on None the
    caller re-parses line by line to name the first bad line and field.
    """
    if not plain_int_text(text):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(
                io.StringIO(text),
                dtype=np.int64,
                delimiter=delimiter,
                usecols=usecols,
                comments=None,
                ndmin=2,
            )
    except (ValueError, IndexError):
        return None
    return arr if arr.size else None


def content_lines(lines: list[str], start: int) -> np.ndarray:
    """1-based numbers of the non-blank lines at or after index ``start``, (t,) int64."""
    return np.array([k + 1 for k in range(start, len(lines)) if lines[k].strip()], dtype=np.int64)


def check_item_ids(
    ids: np.ndarray,
    *,
    n_items: int,
    source: Path,
    rows: np.ndarray,
    fields: Sequence[str],
    id_base: int = 0,
    hint: str = "",
) -> np.ndarray:
    """Check raw item ids against the image-set size and convert them to 0-based.

    Parameters
    ----------
    ids : (t, 3) int64, ids as written in the file (``id_base``-based).
    rows : (t,) int64, the user-visible row number of each row (line or 1-based index).
    fields : the three column names.
    hint : extra fix-it text for the out-of-range message.

    Returns
    -------
    (t, 3) int64, 0-based ids.

    Raises
    ------
    InputError
        An id outside ``id_base .. n_items - 1 + id_base`` (names the first offending row and
        column, and lists the affected rows), or an item repeated inside one triplet.
    """
    lo, hi = id_base, n_items - 1 + id_base

    def out_of_range(r: int, c: int) -> str:
        if id_base == 0 and ids.min() >= 1 and ids.max() == n_items:
            extra = " The ids look 1-based: import them as 1-based (CLI: --id-base 1)."
        elif id_base == 1 and ids.min() == 0:
            extra = " The ids look 0-based: import them as 0-based (CLI: --id-base 0)."
        else:
            extra = " Check that these judgments belong to this image set."
        return (
            f"item id {int(ids[r, c])} is out of range: the image set has {n_items} images, "
            f"so ids must be {lo}..{hi} ({id_base}-based).{extra}{hint}"
        )

    refuse_cells(
        (ids < lo) | (ids > hi),
        out_of_range,
        source=source,
        rows=rows,
        fields=fields,
        list_rows=True,
    )
    out = ids - id_base if id_base else ids
    rep = (out[:, 0] == out[:, 1]) | (out[:, 0] == out[:, 2]) | (out[:, 1] == out[:, 2])
    if rep.any():
        rep_rows = np.flatnonzero(rep)
        r = int(rep_rows[0])
        a, b, c = (int(x) for x in ids[r])
        field = fields[1] if a == b else fields[2]
        raise InputError(
            f"the triplet ({a}, {b}, {c}) names the same item twice; a triplet needs three "
            f"different images. Rows affected: {summarize([int(x) for x in rows[rep_rows]])}.",
            source=source,
            row=int(rows[r]),
            field=field,
        )
    return np.ascontiguousarray(out, dtype=np.int64)


def check_participant(values: np.ndarray, *, source: Path, rows: np.ndarray, field: str) -> None:
    """Participant ids are >= 0, or -1 for unknown."""

    def says(r: int, _c: int) -> str:
        return (
            f"participant id {int(values[r])} is negative; use ids >= 0, or -1 (or an empty "
            "cell) for unknown"
        )

    refuse_cells(values < -1, says, source=source, rows=rows, fields=(field,))


def check_votes(
    votes: np.ndarray, *, source: Path, rows: np.ndarray, fields: Sequence[str]
) -> None:
    """Vote counts (t, 2) are 0 .. MAX_VOTES and every row has at least one vote."""
    refuse_cells(
        votes > MAX_VOTES,
        lambda r, c: (
            f"vote count {int(votes[r, c])} is more than {MAX_VOTES}; votes count responses "
            "(sums and products of larger counts overflow)"
        ),
        source=source,
        rows=rows,
        fields=fields,
    )
    refuse_cells(
        votes < 0,
        lambda r, c: (
            f"vote count {int(votes[r, c])} is negative; votes count responses and must be >= 0"
        ),
        source=source,
        rows=rows,
        fields=fields,
    )
    refuse_cells(
        votes.sum(axis=1) == 0,
        lambda r, c: (
            "both vote counts are 0, so the row holds no response; delete it or fix the counts."
        ),
        source=source,
        rows=rows,
        fields=fields,
        list_rows=True,
    )


def refuse_cells(
    bad: np.ndarray,
    says: Callable[[int, int], str],
    *,
    source: Path,
    rows: np.ndarray,
    fields: Sequence[str],
    list_rows: bool = False,
) -> None:
    """Raise an InputError at the first bad cell of a table, if any.

    Parameters
    ----------
    bad : (t, k) bool, True where a cell is wrong, or (t,) bool for whole rows (column 0).
    says : ``says(r, c)``, the message about cell ``[r, c]`` (0-based).
    rows : (t,) int64, the user-visible row number of each row (line or 1-based index).
    fields : the k column names; the error names ``fields[c]``.
    list_rows : append ``Rows affected: …`` (every row with a bad cell, up to a limit).
    """
    if not bad.any():
        return
    bad2 = bad if bad.ndim == 2 else bad[:, None]
    r, c = (int(x) for x in np.argwhere(bad2)[0])
    message = says(r, c)
    if list_rows:
        affected = rows[np.flatnonzero(bad2.any(axis=1))]
        message += f" Rows affected: {summarize([int(x) for x in affected])}."
    raise InputError(message, source=source, row=int(rows[r]), field=fields[c])


#: The largest vote count of one row: 2**31 - 1, so that sums over millions of rows and the
#: product of two counts (agreement statistics) stay far inside int64.
MAX_VOTES = 2**31 - 1

#: An integer cell as a person writes one: ASCII digits with an optional sign. ``int()`` also
#: takes ``1_0``, Arabic-Indic and full-width digits, which no data file means as ids.
_PLAIN_INT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def plain_int_text(text: str) -> bool:
    """Whether ``text`` can only hold plain integers in ``int()``'s reading: ASCII, and no
    ``_`` (cheap, in C; a False sends the caller to the token-by-token check)."""
    return text.isascii() and "_" not in text


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``, else free
    physical pages), or None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # pragma: no cover


def check_declared_size(
    shape: Sequence[int],
    dtype: np.dtype,
    *,
    stored: int | None,
    source: Path,
    field: str | None = None,
) -> None:
    """Refuse an array by the size its header declares, before anything is allocated.

    ``stored``: the bytes of array data the file really holds after the header (None when
    compressed or unknown, as in HDF5). A header that declares more than that (a truncated
    or crafted file: 8 bytes of header can declare terabytes) or more than the memory
    available is an InputError naming both sizes.
    """
    declared = int(np.prod([int(d) for d in shape], dtype=object)) * dtype.itemsize
    declares = f"declares a {'x'.join(map(str, shape))} {dtype} array ({_size(declared)})"
    if stored is not None and declared > stored:
        why = f" but holds only {_size(stored)} of data; the file is truncated or damaged"
        raise InputError(declares + why, source=source, field=field)
    free = available_memory()
    if free is not None and declared > free:
        why = f", more than the {_size(free)} of memory available"
        raise InputError(declares + why, source=source, field=field)


def read_npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at ``fh``'s position,
    which is left at the first data byte (nothing of the data is read: arrays can be
    gigabytes). Format 1.0 has a 2-byte header length, later ones a 4-byte one.

    Raises ValueError, OSError or EOFError for a damaged header (the caller names the file).
    """
    version = np.lib.format.read_magic(fh)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(fh)
    return tuple(int(x) for x in shape), bool(fortran), dtype


def check_npy_header(
    fh: IO[bytes], data_bytes: int | None, source: Path, field: str | None
) -> None:
    """Read the ``.npy`` header at ``fh``'s position and :func:`check_declared_size` it;
    ``data_bytes``: the bytes from the header's start to the end of the member or file."""
    start = fh.tell()
    try:
        shape, _, dtype = read_npy_header(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"has a damaged .npy header ({exc})", source=source, field=field) from None
    if dtype.hasobject:
        return  # refused as pickled data by the loader
    stored = None if data_bytes is None else data_bytes - (fh.tell() - start)
    check_declared_size(shape, dtype, stored=stored, source=source, field=field)


def array_row(i: int) -> str:
    """``"row 5 ([4])"``-style text for a 0-based array index."""
    return f"row {i + 1} ([{i}])"
