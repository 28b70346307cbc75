"""The main window's pages, in navigator order (the pipeline's order)."""

from alignet_app.pages.alignment import AlignmentPage
from alignet_app.pages.base import Page
from alignet_app.pages.clusters import ClustersPage
from alignet_app.pages.data import DataPage
from alignet_app.pages.distill import DistillPage
from alignet_app.pages.evaluate import EvaluatePage
from alignet_app.pages.experiment import ExperimentPage
from alignet_app.pages.export import ExportPage
from alignet_app.pages.features import FeaturesPage
from alignet_app.pages.overview import OverviewPage
from alignet_app.pages.triplets import TripletsPage

PAGES: tuple[type[Page], ...] = (
    OverviewPage,
    DataPage,
    FeaturesPage,
    AlignmentPage,
    ClustersPage,
    TripletsPage,
    DistillPage,
    EvaluatePage,
    ExportPage,
    ExperimentPage,
)

__all__ = ["PAGES", "Page"]
