"""The bottom layer: what every other layer uses and nothing of the engine's own.

Submodules
----------
types    :class:`ImageSet` and :class:`Judgments`, the data the pipeline passes around
devices  the torch device and CPU thread count (torch is imported only when they are called)
similarity  the pair similarities ``[s01, s02, s12]`` of triplets, one formula per backend
            (shared by ``align`` and ``distill``, which may not import each other)

``alignet_engine.errors``, ``alignet_engine.jobs`` and ``alignet_engine.files`` belong to the
same layer (see the import-linter contract in ``pyproject.toml``).
"""
