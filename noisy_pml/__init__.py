"""noisy-pml: deep metric learning robust to noisy labels, as pytorch-metric-learning components."""

__version__ = "0.1.0.dev0"
