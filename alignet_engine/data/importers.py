"""Public entry point of the importers: every reader validates its whole input first.

Each function raises :class:`~alignet_engine.errors.InputError` naming the file, the row and
the field, so the caller can write to the project only after a reader has returned.

Row numbers in messages (``InputError.row``):

* text files (TSV, CSV, matrix CSV, manifests): the 1-based line number as an editor shows
  it; in files with a header row the header is line 1 and the first data row is line 2;
* arrays (``.npy``, ``.npz``, ``.h5``, ``.pt``): the 1-based array row (index + 1);
* JSON lists: the 1-based entry number in the list named by ``InputError.field``.

The implementations live in :mod:`.images`, :mod:`.judgments_io`, :mod:`.arrays_io`,
:mod:`.alignet_npz`
and :mod:`.features_io`.
"""

from __future__ import annotations

from alignet_engine.data.alignet_npz import AlignetTriplets, read_alignet_npz
from alignet_engine.data.arrays_io import read_matrix
from alignet_engine.data.features_io import FEATURE_SUFFIXES, read_features
from alignet_engine.data.images import (
    IMAGE_EXTENSIONS,
    MANIFEST_SCHEMA,
    read_image_folder,
    read_image_manifest,
)
from alignet_engine.data.judgments_io import (
    ODDONE_CSV_SCHEMA,
    TWOAFC_CSV_SCHEMA,
    MaterialsSubset,
    read_materials_json,
    read_oddone_csv,
    read_oddone_npy,
    read_oddone_txt,
    read_things_tsv,
    read_twoafc_csv,
)

__all__ = [
    "FEATURE_SUFFIXES",
    "IMAGE_EXTENSIONS",
    "MANIFEST_SCHEMA",
    "ODDONE_CSV_SCHEMA",
    "TWOAFC_CSV_SCHEMA",
    "AlignetTriplets",
    "MaterialsSubset",
    "read_alignet_npz",
    "read_features",
    "read_image_folder",
    "read_image_manifest",
    "read_materials_json",
    "read_matrix",
    "read_oddone_csv",
    "read_oddone_npy",
    "read_oddone_txt",
    "read_things_tsv",
    "read_twoafc_csv",
]
