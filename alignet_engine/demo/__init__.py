"""The embedded demo: a procedural image world plus simulated observers (no third-party data).

Typical use::

    world = generate_world(folder, seed=0)          # ~360 PNGs, a few seconds
    judgments = make_demo_judgments(world)          # {"fit": ..., "test": ...}
    images = world.image_set()                      # item ids of the judgments index this
"""

from alignet_engine.demo.observers import (
    DEFAULT_TEMPERATURE,
    ground_truth_similarity,
    luce_probabilities,
    make_demo_judgments,
    simulate_oddone,
)
from alignet_engine.demo.world import DemoWorld, generate_world, generate_world_job, load_world

__all__ = [
    "DEFAULT_TEMPERATURE",
    "DemoWorld",
    "generate_world",
    "generate_world_job",
    "ground_truth_similarity",
    "load_world",
    "luce_probabilities",
    "make_demo_judgments",
    "simulate_oddone",
]
