"""noisy-pml's benchmark: the library's own losses, miners and trainers on noisy-label retrieval.

Layers (each imports only the ones before it): data (``features``, ``backbones``, the
datasets) -> training (``training``: one loop; ``methods``: what a method builds from its
registry entry) -> protocols (``run``: frozen features, ``finetune``: end to end; chosen by
name) -> grid (``run.run_grid``: resumable JSONL) -> ``report`` -> ``cli`` / ``api``.
``registry`` describes the methods as data and imports no method code.
"""

from .api import load_results, run_benchmark

__all__ = ["load_results", "run_benchmark"]
