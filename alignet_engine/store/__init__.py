"""The HDF5 project store: schema, copy-on-write transactions, journal, lock, migrations."""

from alignet_engine.store.project import SCHEMA_VERSION, Project, Run, new_run_id

__all__ = ["SCHEMA_VERSION", "Project", "Run", "new_run_id"]
