"""What the pages show: Qt-free view-models over the project, computed here so the GUI only
indexes and formats (as napari's ``components`` are to its ``_qt`` views).

Submodules
----------
status      where each stage stands and what to do next (navigator, Overview, ``info``)
summaries   small read-only summaries of stored runs (error bars, rates and ETAs, curves)
evaluation  the evaluation table: judgment sets / matrices × the four representations
report      the study report (HTML + JSON + plots) and the Export page's export job
browse      lazy triplet views, triplet filters and the pool map (Triplets, Clusters pages)
inspector   the triplet inspector's display order, sorting and per-type breakdowns
preview     import previews and the Data page's summary of imported data
curves      min/max decimation and EMA smoothing of long curves for the live plots

They read the project and the stages' results; nothing below this layer imports them.
"""
