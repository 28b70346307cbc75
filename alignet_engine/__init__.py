"""AligNet Studio engine: all numerics and storage, headless (never imports Qt)."""

__version__ = "0.1.0"
