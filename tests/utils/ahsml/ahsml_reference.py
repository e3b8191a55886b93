"""Shared reference pieces of the AHSML statistics and threshold tests: a batch of points in the
Poincare ball and the class statistics computed by brute-force loops over pairs."""

import itertools

import torch

from noisy_pml.utils import hyperbolic as hyp


def ball_batch(n_images=8, views=2, d=5, seed=0):
    """``n_images`` x ``views`` points on one sphere of the ball (c = 1), float64, 4 classes."""
    g = torch.Generator().manual_seed(seed)
    x = hyp.exp0(torch.nn.functional.normalize(torch.randn(n_images * views, d, generator=g,
                                                            dtype=torch.float64), dim=1), 1.0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3][:n_images]).repeat(views)
    return x, labels


def brute_stats(sim, labels, inst):
    """Mean similarity within each class (pairs of different images) and between classes."""
    classes = labels.unique().tolist()
    intra, inter = {}, {}
    for a in classes:
        vals = [sim[i, j] for i, j in itertools.permutations(range(len(labels)), 2)
                if labels[i] == a and labels[j] == a and inst[i] != inst[j]]
        intra[a] = torch.stack(vals).mean() if vals else None
        for b in classes:
            if a != b:
                inter[a, b] = torch.stack([sim[i, j] for i in range(len(labels))
                                           for j in range(len(labels))
                                           if labels[i] == a and labels[j] == b]).mean()
    return intra, inter
