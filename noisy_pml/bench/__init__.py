"""The noisy-label retrieval benchmark behind ``noisy-pml bench`` (CUB, Cars196, digits).

Benchmark code: the library (``noisy_pml.losses``, ``miners``, ...) never imports it.
"""
