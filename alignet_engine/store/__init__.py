"""The project store: a small HDF5 index with copy-on-write transactions, immutable side
files for large arrays, journal, lock, migrations, gc and pack."""

from alignet_engine.store.checks import DiskFullError
from alignet_engine.store.maintenance import GcReport
from alignet_engine.store.project import (
    SCHEMA_VERSION,
    ArrayReader,
    Project,
    Run,
    new_run_id,
)
from alignet_engine.store.sidefiles import SideArray, SideArrayWriter

__all__ = [
    "SCHEMA_VERSION",
    "ArrayReader",
    "DiskFullError",
    "GcReport",
    "Project",
    "Run",
    "SideArray",
    "SideArrayWriter",
    "new_run_id",
]
