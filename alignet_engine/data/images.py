"""Importers of stimulus image sets: a folder of images, or a CSV manifest.

Item ids of everything else (judgments, features, matrices) are row indices into the
returned :class:`~alignet_engine.base.types.ImageSet`, so its order must be deterministic
and documented.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from alignet_engine.base.types import ImageSet, encode_paths
from alignet_engine.data._csv import read_csv_table
from alignet_engine.data._io_common import LIST_LIMIT, PathLike, summarize
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MANIFEST_SCHEMA = "path[,category]"
#: Missing files listed in one manifest error message.
MISSING_LIST_LIMIT = 20


def _norm_exts(extensions: Iterable[str]) -> frozenset[str]:
    exts = frozenset(("." + e.lstrip(".")).lower() for e in extensions)
    if not exts:
        raise ValueError("extensions must not be empty")
    return exts


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            # Hidden entries (.DS_Store, ._x.jpg AppleDouble files, .thumbnails) are never stimuli.
            return [e for e in it if not e.name.startswith(".")]
    except PermissionError:
        raise InputError("cannot be read: permission denied", source=folder) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", source=folder) from None


def _is_image(entry: os.DirEntry[str], exts: frozenset[str]) -> bool:
    # rpartition, not splitext: called once per file of a million-image folder
    stem, dot, ext = entry.name.rpartition(".")
    return bool(dot and stem) and "." + ext.lower() in exts and entry.is_file()


def _dangling(entries: list[os.DirEntry[str]], exts: frozenset[str], folder: str) -> list[str]:
    """Image-named symlinks in ``entries`` whose target does not exist (relative paths)."""
    return [
        os.path.join(folder, e.name)
        for e in entries
        if os.path.splitext(e.name)[1].lower() in exts and e.is_symlink() and not e.is_file()
    ]


def _refuse_aliases(root: Path, rel: list[str]) -> None:
    """InputError when two listed images are one file (a symlink alias): it would be two
    items of the set. Resolves every path, so only called when the folder has links."""
    seen: dict[str, str] = {}
    for r in rel:
        real = os.path.realpath(os.path.join(root, r))
        if real in seen:
            raise InputError(
                f"lists the same image twice: {r} is a link to {seen[real]} (or both link to "
                f"{real}); remove the link",
                source=root,
                field=r,
            )
        seen[real] = r


def _first_image(folder: Path, exts: frozenset[str]) -> str | None:
    """The first image found in ``folder`` or below it, else None."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts:
                return os.path.join(root, f)
    return None


def read_image_folder(
    folder: PathLike, *, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> ImageSet:
    """List the images of a folder as an image set.

    Layouts:

    * **flat** — images directly in ``folder``; every category is ``""``; item ``i`` is the
      ``i``-th file name in Python ``sorted()`` order (code-point order, the order the
      material-similarity data uses: ``chrome-steel.jpg`` < ``chrome.jpg``).
    * **one level of categories** — each sub-folder is a category holding its images;
      order is sorted by (category, file name), the order of torchvision ``ImageFolder``.
      (This differs from sorting the joined path string only when a category name is a
      prefix of another followed by a character below ``/``, e.g. ``a`` vs ``a-b``.)

    Extensions match case-insensitively; hidden files/folders (leading ``.``) and other files
    are ignored; sub-folders without images are ignored (logged).

    Parameters
    ----------
    folder : the image folder.
    extensions : accepted file extensions.

    Returns
    -------
    ImageSet with absolute paths (not symlink-resolved) and categories.

    Raises
    ------
    InputError
        Missing/unreadable folder, a file instead of a folder, no images, images both at
        the top level and in sub-folders, images nested deeper than one sub-folder level,
        zero-byte image files (listed).
    """
    exts = _norm_exts(extensions)
    root = Path(os.path.abspath(os.fspath(folder)))
    if not root.exists():
        raise InputError("folder not found; check the path", source=root)
    if not root.is_dir():
        raise InputError(
            "is a file, not a folder; choose the folder that holds the images", source=root
        )
    entries = _scan(root)
    top = sorted(e.name for e in entries if _is_image(e, exts))
    subdirs = sorted(e.name for e in entries if e.is_dir())
    # Symlinks (DirEntry.is_symlink: free, from d_type) are checked further below.
    links = [e.name for e in entries if e.is_symlink()]
    dangling = _dangling(entries, exts, "")
    per_cat: dict[str, list[str]] = {}
    for cat in subdirs:
        # One listing per category (an ImageNet train folder: 1000 listings, no stat per
        # file: DirEntry.is_file/is_dir use the directory's d_type).
        inner = _scan(root / cat)
        links += [os.path.join(cat, e.name) for e in inner if e.is_symlink()]
        dangling += _dangling(inner, exts, cat)
        names = sorted(e.name for e in inner if _is_image(e, exts))
        for sub in sorted(e.name for e in inner if e.is_dir()):
            deeper = _first_image(root / cat / sub, exts)
            if deeper is not None:
                raise InputError(
                    f"has images more than one folder level deep (e.g. {deeper}); use a flat "
                    "folder or one sub-folder per category",
                    source=root,
                    field=cat,
                )
        if names:
            per_cat[cat] = names
        else:
            logger.info("%s: sub-folder %r holds no images, ignored", root, cat)
    if top and per_cat:
        raise InputError(
            f"has images both at its top level (e.g. {top[0]}) and in sub-folders (e.g. "
            f"{next(iter(per_cat))}/); put every image in a category sub-folder, or all at the "
            "top level",
            source=root,
        )
    if top:
        rel, cats, names_per_cat = top, [""], [top]
    else:
        cats = sorted(per_cat)
        names_per_cat = [per_cat[c] for c in cats]
        rel = [c + os.sep + name for c in cats for name in per_cat[c]]  # = os.path.join
    if not rel:
        raise InputError(
            f"holds no images with extensions {', '.join(sorted(exts))} (at the top level or "
            "in one level of sub-folders)",
            source=root,
        )
    base = os.path.join(root, "")  # with its trailing separator
    # The one stat per file of the import: a zero-byte file is a failed copy or download.
    empty = [r for r in rel if os.path.getsize(base + r) == 0]
    if empty:
        raise InputError(
            f"{len(empty)} image file(s) are empty (0 bytes): {summarize(empty)}; replace or "
            "remove them",
            source=root,
        )
    if dangling:
        # skipping them would shift the id of every later image
        raise InputError(
            f"{len(dangling)} image link(s) point to missing files: {summarize(dangling)}; "
            "restore or remove them",
            source=root,
        )
    if links:
        _refuse_aliases(root, rel)
    logger.info("image folder %s: %d images, %d categories", root, len(rel), len(per_cat))
    blob, offsets = encode_paths(rel)
    codes = np.repeat(np.arange(len(cats), dtype=np.int32), [len(names) for names in names_per_cat])
    # category_names must be sorted: they are (sorted sub-folder names, or the single "")
    return ImageSet.from_arrays(base, blob, offsets, codes, cats)


_POSIX = os.sep == "/"


def _absolute(base_sep: str, value: str) -> str:
    """``os.path.abspath(os.path.join(base, os.path.expanduser(value)))``, with a fast path.

    ``base_sep`` is the manifest's absolute folder with a trailing separator. On POSIX a
    relative path without ``~``, ``.`` segments or doubled separators is already normal, so
    string concatenation gives the same result as abspath (whose normpath was most of the
    import's time at 1.28 M paths).
    """
    plain = value[0] not in "/~." and "/." not in value and "//" not in value
    if _POSIX and plain and not value.endswith("/"):
        return base_sep + value
    return os.path.abspath(os.path.join(base_sep, os.path.expanduser(value)))


def _missing_files(paths: list[str]) -> list[int]:
    """Indices of ``paths`` that are not existing files, with one listing per folder.

    A name found in its folder's listing as a file (``DirEntry.is_file``: the directory's
    d_type, a stat only for symlinks) exists; anything else is checked with
    :func:`os.path.isfile`, so the answer equals ``os.path.isfile`` for every path (also on a
    case-insensitive file system) while 1.28 M ImageNet paths cost 1000 listings instead of
    1.28 M stat calls.
    """
    by_dir: dict[str, list[int]] = {}
    names: list[str] = []
    for i, q in enumerate(paths):
        # rpartition, not dirname/basename: a third of the import's time at 1.28 M paths
        folder, _, name = q.rpartition(os.sep)
        by_dir.setdefault(folder, []).append(i)
        names.append(name)
    missing: list[int] = []
    for folder, idx in by_dir.items():
        try:
            with os.scandir(folder) as it:
                files = {e.name for e in it if e.is_file()}
        except OSError:
            files = set()
        missing.extend(i for i in idx if names[i] not in files and not os.path.isfile(paths[i]))
    return sorted(missing)


def read_image_manifest(csv_path: PathLike) -> ImageSet:
    """Read an image set from a CSV manifest.

    Schema: a header row, then one image per row, in item-id order::

        path[,category]

    ``path`` is relative to the CSV's folder, or absolute (``~`` is expanded); ``category``
    is optional (empty = ``""``). Extra columns are ignored with a warning; the delimiter
    may be ``,``, tab or ``;``.

    Parameters
    ----------
    csv_path : the manifest file.

    Returns
    -------
    ImageSet with absolute paths, in the manifest's row order.

    Raises
    ------
    InputError
        Unreadable/empty file, no ``path`` column, a row with the wrong column count, an
        empty path, files that do not exist or are folders (all listed, up to
        MISSING_LIST_LIMIT, with their lines; row = the first), the same image twice. Rows
        are line numbers (the header is line 1).
    """
    t = read_csv_table(csv_path, required=("path",), optional=("category",), schema=MANIFEST_SCHEMA)
    base = Path(os.path.abspath(t.path)).parent
    base_sep = os.path.join(base, "")
    paths: list[str] = []
    for r, raw in enumerate(t.columns["path"]):
        value = raw.strip()
        if not value:
            raise InputError(
                "is empty; every row needs an image path",
                source=t.path,
                row=int(t.lines[r]),
                field="path",
            )
        paths.append(_absolute(base_sep, value))
    missing = [(int(t.lines[r]), paths[r]) for r in _missing_files(paths)]
    if missing:
        listed = "; ".join(
            f"line {line}: {t.columns['path'][int(np.searchsorted(t.lines, line))].strip()}"
            + (" (a folder)" if os.path.isdir(q) else "")
            for line, q in missing[:MISSING_LIST_LIMIT]
        )
        more = f"; … ({len(missing)} in all)" if len(missing) > MISSING_LIST_LIMIT else ""
        raise InputError(
            f"{len(missing)} listed image file(s) do not exist: {listed}{more}. Paths are "
            f"relative to the manifest's folder ({base}) unless absolute.",
            source=t.path,
            row=missing[0][0],
            field="path",
        )
    first_line: dict[str, int] = {}
    dups: list[tuple[int, int]] = []  # (line, line it repeats)
    for r, q in enumerate(paths):
        key = q if _POSIX else os.path.normcase(q)
        if key in first_line:
            dups.append((int(t.lines[r]), first_line[key]))
        else:
            first_line[key] = int(t.lines[r])
    if dups:
        listed = summarize([f"line {a} repeats line {b}" for a, b in dups], limit=LIST_LIMIT)
        raise InputError(
            f"lists the same image more than once ({listed}); each image must appear once, "
            "since its row is its item id",
            source=t.path,
            row=dups[0][0],
            field="path",
        )
    cats = t.columns.get("category")
    categories = tuple(c.strip() for c in cats) if cats is not None else ("",) * len(paths)
    logger.info("image manifest %s: %d images", t.path, len(paths))
    return ImageSet(paths, categories)


def path_parts(path: str) -> tuple[str, ...]:
    """The components of ``path`` (``/`` or ``\\`` separated; empty and ``.`` dropped)."""
    return tuple(x for x in path.replace("\\", "/").split("/") if x not in ("", "."))


class PathSuffixIndex:
    """Find paths of a list by the longest path suffix they share with a query.

    ``airplanes/image_0001.jpg`` finds ``/data/airplanes/image_0001.jpg`` and not
    ``/data/chair/image_0001.jpg``; a bare ``image_0001.jpg`` finds both (ambiguous). Each
    suffix length's dictionary is built on first use, so a lookup of bare ImageNet file names
    in 1.28 M paths builds one dictionary.

    Parameters
    ----------
    paths : the paths searched; results are positions in this sequence.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._parts = [path_parts(p) for p in paths]
        self._by_len: dict[int, dict[tuple[str, ...], list[int]]] = {}

    def candidates(self, query: str) -> list[int]:
        """Positions of the paths sharing the longest suffix with ``query`` (every path that
        shares ``k`` trailing components, for the largest ``k`` with any); [] if none."""
        parts = path_parts(query)
        for k in range(len(parts), 0, -1):
            index = self._by_len.get(k)
            if index is None:
                index = {}
                for i, q in enumerate(self._parts):
                    if len(q) >= k:
                        index.setdefault(q[-k:], []).append(i)
                self._by_len[k] = index
            found = index.get(parts[-k:])
            if found:
                return found
        return []
