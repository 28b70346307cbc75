"""AligNet Studio desktop GUI (PySide6). Holds no numerics: every computation is an engine job."""
