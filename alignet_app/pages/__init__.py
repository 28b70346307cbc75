"""The main window's pages, in navigator order (the pipeline's order).

:data:`PAGES` names each page without importing it: a page's module pulls in pyqtgraph and
engine stages that import torch (seconds together), so the window shows its navigator and
welcome screen at once and builds a page the first time it is shown (issue 13: the empty
window under 3 s). ``spec.load()`` imports the page's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alignet_app.pages.base import Page


@dataclass(frozen=True)
class PageSpec:
    """One page: its navigator key and title, the pipeline stage it shows (or None), and
    where its class lives (``alignet_app.pages.<module>.<class_name>``)."""

    key: str
    title: str
    stage: str | None
    module: str
    class_name: str

    def load(self) -> type[Page]:
        """Import the page's module and return its class."""
        module = import_module(f"alignet_app.pages.{self.module}")
        cls: type[Page] = getattr(module, self.class_name)
        return cls


PAGES: tuple[PageSpec, ...] = (
    PageSpec("project", "Project", None, "overview", "OverviewPage"),
    PageSpec("data", "Data", None, "data", "DataPage"),
    PageSpec("features", "Models & features", "features", "features", "FeaturesPage"),
    PageSpec("alignment", "Alignment", "transform", "alignment", "AlignmentPage"),
    PageSpec("clusters", "Clusters", "clusters", "clusters", "ClustersPage"),
    PageSpec("triplets", "Triplets", "triplets", "triplets", "TripletsPage"),
    PageSpec("distill", "Distillation", "distill", "distill", "DistillPage"),
    PageSpec("evaluate", "Evaluation", "evaluate", "evaluate", "EvaluatePage"),
    PageSpec("export", "Export", "export", "export", "ExportPage"),
    PageSpec("experiment", "Experiment", None, "experiment", "ExperimentPage"),
)
SPECS: dict[str, PageSpec] = {spec.key: spec for spec in PAGES}


def __getattr__(name: str) -> Any:
    if name == "Page":  # ``from alignet_app.pages import Page`` without importing it eagerly
        from alignet_app.pages.base import Page

        return Page
    raise AttributeError(name)


__all__ = ["PAGES", "SPECS", "Page", "PageSpec"]
