"""CSV files with a header row: column checks, and a fast path for integer tables.

Rows are reported by the 1-based line number an editor shows (the header is line 1).
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alignet_engine.data._io_common import (
    PathLike,
    content_lines,
    loadtxt_ints,
    looks_number,
    parse_int_tokens,
    read_text,
    text_lines,
)
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)


class CsvTable:
    """A CSV file with a header row, held column-wise as strings.

    Attributes
    ----------
    path : the file.
    columns : header name (stripped, lower-case) -> (t,) list of raw cell strings.
    lines : (t,) int64, the 1-based file line of each data row (the header is its own line).
    header_line : the header's line number.
    ignored : names of extra columns that were ignored.
    """

    def __init__(
        self,
        path: Path,
        columns: dict[str, list[str]],
        lines: np.ndarray,
        header_line: int,
        ignored: list[str],
    ) -> None:
        self.path = path
        self.columns = columns
        self.lines = lines
        self.header_line = header_line
        self.ignored = ignored

    def __len__(self) -> int:
        return int(self.lines.shape[0])


def read_csv_table(
    path: PathLike,
    *,
    required: Sequence[str],
    optional: Sequence[str],
    schema: str,
    read_later: Sequence[str] = (),
) -> CsvTable:
    """Read a CSV with a header row and check its columns.

    The delimiter is taken from the header line: ``,`` if it has one, else tab, else ``;``.
    Header names are compared stripped and case-insensitively. Extra columns are ignored
    with a warning, unless the name is a near-miss of a known column (then it is an error:
    a typo such as ``particpant`` must not silently drop the data). Blank lines are skipped.

    Parameters
    ----------
    required, optional : known column names (lower-case).
    read_later : extra columns the caller reads itself (e.g. a text ``type`` column); they
        stay in ``ignored`` but are not warned about.
    schema : the expected header in words, for messages (e.g. ``"path[,category]"``).

    Raises
    ------
    InputError
        Empty file, missing/duplicate/misspelt columns, a data row whose column count differs
        from the header's, no data rows.
    """
    p, text = read_text(path)
    first = next(ln for ln in text_lines(text) if ln.strip())
    delimiter = "," if "," in first else "\t" if "\t" in first else ";" if ";" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    header_line = 0
    cols: list[list[str]] = []
    line_nos = array("q")
    known = [*required, *optional]
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            # csv's line_num is the line the record ENDS on; a record spanning lines (a
            # quoted newline) is reported at its last line, which is where an editor is.
            line = reader.line_num
            if header is None:
                header = [f.strip().lower() for f in fields]
                header_line = line
                _check_header(p, header, header_line, required, known, schema)
                cols = [[] for _ in header]
                continue
            if len(fields) != len(header):
                raise InputError(
                    f"has {len(fields)} columns but the header (line {header_line}) has "
                    f"{len(header)}; every row needs one value per header column ({schema})",
                    source=p,
                    row=line,
                )
            for c, value in enumerate(fields):
                cols[c].append(value)
            line_nos.append(line)
    except csv.Error as exc:
        raise InputError(f"is not valid CSV ({exc})", source=p, row=reader.line_num) from None
    assert header is not None
    if not line_nos:
        raise InputError(
            f"has a header but no data rows; expected rows of {schema}",
            source=p,
            row=header_line,
        )
    ignored = [h for h in header if h not in known]
    if unread := [h for h in ignored if h not in read_later]:
        logger.warning("%s: ignoring extra column(s) %s", p, ", ".join(map(repr, unread)))
    columns = {h: cols[c] for c, h in enumerate(header) if h in known}
    lines = np.frombuffer(line_nos, dtype=np.int64).copy()
    return CsvTable(p, columns, lines, header_line, ignored)


def _check_header(
    p: Path,
    header: list[str],
    line: int,
    required: Sequence[str],
    known: Sequence[str],
    schema: str,
) -> None:
    if all(looks_number(h) for h in header if h):
        raise InputError(
            f"the first line must be a header row: {schema}; found numbers instead",
            source=p,
            row=line,
        )
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise InputError(
                "column appears twice in the header; rename or delete one",
                source=p,
                row=line,
                field=h,
            )
        seen.add(h)
    for h in header:
        if h not in known:
            close = difflib.get_close_matches(h, known, n=1, cutoff=0.75)
            if close and close[0] not in header:
                raise InputError(
                    f"unknown column; did you mean '{close[0]}'? The header must be: {schema}",
                    source=p,
                    row=line,
                    field=h,
                )
    for name in required:
        if name not in header:
            raise InputError(
                f"the header has no column '{name}'; the header must be: {schema} "
                f"(found: {', '.join(header)})",
                source=p,
                row=line,
                field=name,
            )


class IntCsv:
    """A header-row CSV whose known columns are all integers.

    Attributes
    ----------
    path : the file.
    ints : column name -> (t,) int64, for the known columns present in the header.
    lines : (t,) int64, 1-based file line of each data row.
    header_line : the header's line number.
    ignored : extra (ignored) column names.
    """

    def __init__(
        self,
        path: Path,
        ints: dict[str, np.ndarray],
        lines: np.ndarray,
        header_line: int,
        ignored: list[str],
    ) -> None:
        self.path = path
        self.ints = ints
        self.lines = lines
        self.header_line = header_line
        self.ignored = ignored

    def __len__(self) -> int:
        return int(self.lines.shape[0])


def read_int_csv(
    path: PathLike,
    *,
    required: Sequence[str],
    optional: Sequence[str],
    schema: str,
    blank: dict[str, int] | None = None,
    what: dict[str, str] | None = None,
    read_later: Sequence[str] = (),
) -> IntCsv:
    """Read a header-row CSV whose known columns hold integers.

    Same rules and errors as :func:`read_csv_table` followed by :func:`parse_int_column`
    on every known column; ``blank`` maps a column to the value of its empty cells (other
    columns may not be empty), ``what`` to its description in the empty-cell message.
    A C-speed path handles well-formed files (no quotes, no empty cells); anything else is
    re-read by the exact line-by-line path, which names the first problem.
    """
    blank = blank or {}
    what = what or {}
    known = [*required, *optional]
    p, text = read_text(path)
    lines = text_lines(text)
    h = next(k for k, ln in enumerate(lines) if ln.strip())
    first = lines[h]
    delim = "," if "," in first else "\t" if "\t" in first else ";" if ";" in first else ","
    if '"' not in text:
        header = [f.strip().lower() for f in first.split(delim)]
        _check_header(p, header, h + 1, required, known, schema)
        cols = [c for c, name in enumerate(header) if name in known]
        data_lines = content_lines(lines, h + 1)
        body = [lines[k - 1] for k in data_lines]
        ncommas = len(header) - 1
        if body and all(ln.count(delim) == ncommas for ln in body):
            fast = loadtxt_ints("\n".join(body), delim, cols)
            if fast is not None and fast.shape == (len(body), len(cols)):
                ignored = [name for name in header if name not in known]
                if unread := [name for name in ignored if name not in read_later]:
                    logger.warning("%s: ignoring extra column(s) %s", p, ", ".join(unread))
                ints = {header[c]: np.ascontiguousarray(fast[:, i]) for i, c in enumerate(cols)}
                return IntCsv(p, ints, data_lines, h + 1, ignored)
    t = read_csv_table(
        p, required=required, optional=optional, schema=schema, read_later=read_later
    )
    ints = {
        name: parse_int_column(t, name, blank=blank.get(name), what=what.get(name, "an integer"))
        for name in t.columns
    }
    return IntCsv(t.path, ints, t.lines, t.header_line, t.ignored)


def parse_int_column(
    table: CsvTable, name: str, *, blank: int | None = None, what: str = "an integer"
) -> np.ndarray:
    """Parse column ``name`` of ``table`` as int64, shape (t,).

    ``blank``: value for empty cells; ``None`` makes an empty cell an error.
    """
    values = table.columns[name]
    if blank is not None:
        values = [v if v.strip() else str(blank) for v in values]
    else:
        for r, v in enumerate(values):
            if not v.strip():
                raise InputError(
                    f"is empty; every row needs {what}",
                    source=table.path,
                    row=int(table.lines[r]),
                    field=name,
                )
    return parse_int_tokens(values, table.lines, 1, [name], table.path)[:, 0]
