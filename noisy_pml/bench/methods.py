"""Benchmark methods: an embedding head + a loss (+ miner) trained on cached backbone features.

Every method is described by a `MethodSpec` (its library
components, whose signature defaults are its hyperparameters); the classes here build those
components from a resolved configuration with ``spec.component(role).kwargs(cfg)``, so no
hyperparameter value is written in this file. A method object exposes

- ``param_groups()``: optimiser parameter groups (head; loss parameters such as proxies);
- ``prepare(train)``: optional first phase (Smooth Proxy-Anchor's confidence module);
- ``compute_loss(x, labels, idx)``: ``x`` is (B, D) for one-view methods or (2B, D) rows
  ``[view_1; view_2]`` with labels doubled for two-view methods, ``idx`` the B sample indices
  (the training loop has already handed them to ``receivers()`` through
  `noisy_pml.trainers.batch_getter`);
- ``embed(x)``: the embedding used for retrieval, and ``eval_distance`` (``None`` = cosine);
- ``sample_scores()``: per-training-sample clean scores (higher = more likely clean) for the
  noise-detection curves, or ``None``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity
from torch import nn

from ..models.embedding_head import EmbeddingHead, principal_directions

__all__ = ["TrainSet", "EmbeddingHead", "BenchMethod", "FeatureDataset"]


@dataclass
class TrainSet:
    """Cached features of the training images and their (noisy) labels.

    ``views`` is (N, V, D): view 0 is the clean centre crop, views 1.. augmented crops.
    """

    views: torch.Tensor
    labels: torch.Tensor
    clean_labels: torch.Tensor
    noise_mask: torch.Tensor
    num_classes: int

    @property
    def num_samples(self) -> int:
        return int(self.views.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.views.shape[2])


_PCA_CACHE: dict[tuple, torch.Tensor] = {}


def _principal_directions(feats: torch.Tensor) -> torch.Tensor:
    """`principal_directions`, cached per tensor: every
    run on the same training features shares one eigendecomposition of the covariance."""
    key = (
        feats.data_ptr(),
        tuple(feats.shape),
        feats.dtype,
        float(feats.sum()),
        float(feats[-1].sum()),
    )
    if key not in _PCA_CACHE:
        if len(_PCA_CACHE) >= 4:
            _PCA_CACHE.pop(next(iter(_PCA_CACHE)))
        _PCA_CACHE[key] = principal_directions(feats)
    return _PCA_CACHE[key]


@contextlib.contextmanager
def _quiet_pml_trainers() -> Iterator[None]:
    """PML's trainers log at INFO and draw a progress bar per epoch: silence both while the
    benchmark runs one inside a run (its own progress bar covers the grid)."""
    from pytorch_metric_learning.trainers import base_trainer
    from pytorch_metric_learning.utils import common_functions as c_f

    level, real = c_f.LOGGER.level, base_trainer.tqdm
    c_f.LOGGER.setLevel(logging.ERROR)
    base_trainer.tqdm = types.SimpleNamespace(tqdm=functools.partial(real.tqdm, disable=True))
    try:
        with warnings.catch_warnings():  # its progress bar formats a tensor that needs grad
            warnings.filterwarnings("ignore", "Converting a tensor with requires_grad")
            yield
    finally:
        c_f.LOGGER.setLevel(level)
        base_trainer.tqdm = real


# Smooth PA phase-1 tables of this process, most recent last. A grid runs every (noise, seed)
# of the main method before its variants, so the budget must hold a whole grid's tables (an
# LRU smaller than that evicts each table just before its variant needs it).
_PHASE1_TABLES: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_PHASE1_TABLES_BYTES = 512 * 2**20


def _digest(t: torch.Tensor) -> str:
    """Content hash of a tensor (dtype, shape and bytes)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


class FeatureDataset(torch.utils.data.Dataset):
    """Cached features as a dataset of ``(feature, label, index)`` items, with ``targets``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.targets = features, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.features[i], int(self.targets[i]), i


class BenchMethod(nn.Module):
    """Head + PML loss (+ miner). Subclasses only build their loss / miner."""

    two_view = False
    eval_distance = None

    def __init__(self, train: TrainSet, cfg: dict[str, Any], spec: Any) -> None:
        super().__init__()
        self.cfg, self.spec = cfg, spec
        feats = train.views[:, 0]
        self.head = EmbeddingHead.from_features(
            feats,
            cfg["embedding_size"],
            cfg["head"],
            cfg["head_hidden"],
            cfg["head_init"],
            directions=_principal_directions(feats) if cfg["head_init"] == "pca" else None,
        )
        self.loss_fn: nn.Module = self.build_loss(train, cfg)
        self.miner: nn.Module | None = self.build_miner(train, cfg)

    def kwargs(self, role: str) -> dict[str, Any]:
        """Keyword arguments of the library component playing ``role``, from ``self.cfg``."""
        return self.spec.component(role).kwargs(self.cfg)

    def build_loss(self, train: TrainSet, cfg: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def build_miner(self, train: TrainSet, cfg: dict[str, Any]) -> nn.Module | None:
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": list(self.head.parameters()), "lr": self.cfg["lr"]}]
        loss_params = list(self.loss_fn.parameters())
        if loss_params:
            mult = self.cfg.get("loss_lr_mult", 1.0)
            groups.append({"params": loss_params, "lr": self.cfg["lr"] * mult, "weight_decay": 0.0})
        return groups

    def prepare(self, train: TrainSet, seed: int) -> None:
        """Optional first phase before the embedding is trained."""

    def receivers(self) -> list[nn.Module]:
        """Components that take per-sample information through ``set_batch_info``."""
        return []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def compute_loss(
        self, x: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        emb = self.embed(x)
        tuples = self.mine(emb, labels, idx)
        return self.loss_fn(emb, labels, tuples)

    def mine(self, emb: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor):
        return None if self.miner is None else self.miner(emb, labels)

    def sample_scores(self, train: TrainSet) -> torch.Tensor | None:
        return None


# ---------------------------------------------------------------------------------------------
# PML baselines


class ProxyAnchorMethod(BenchMethod):
    """PML's ProxyAnchorLoss on the head's embeddings."""

    def build_loss(self, train, cfg):
        return pml_losses.ProxyAnchorLoss(
            train.num_classes, self.head.out_features, **self.kwargs("loss")
        )


class MultiSimilarityMethod(BenchMethod):
    """PML's MultiSimilarityLoss with its MultiSimilarityMiner."""

    def build_loss(self, train, cfg):
        return pml_losses.MultiSimilarityLoss(**self.kwargs("loss"))

    def build_miner(self, train, cfg):
        return pml_miners.MultiSimilarityMiner(**self.kwargs("inner_miner"))


class ContrastiveMethod(BenchMethod):
    """PML's ContrastiveLoss on cosine similarity."""

    def build_loss(self, train, cfg):
        return pml_losses.ContrastiveLoss(**self.kwargs("loss"), distance=CosineSimilarity())


def _prism_miner(method: BenchMethod, train: TrainSet, inner_miner=None):
    """PRISMMiner over the training set with the method's PRISM hyperparameters."""
    from ..miners import PRISMMiner

    return PRISMMiner(
        train.num_samples, train.num_classes, inner_miner=inner_miner, **method.kwargs("miner")
    )


class PRISMMethod(ContrastiveMethod):
    """Contrastive loss with noisy_pml's PRISMMiner filtering the batch's pairs."""

    def build_miner(self, train, cfg):
        return _prism_miner(self, train)

    def mine(self, emb, labels, idx):
        return self.miner(emb, labels, indices=idx)

    def sample_scores(self, train):
        s = self.miner.scores.clone()
        return torch.where(torch.isnan(s), torch.ones_like(s), s)


class PRISMMSMethod(MultiSimilarityMethod):
    """PRISM's filter around PML's MultiSimilarityMiner, Multi-Similarity loss."""

    def build_miner(self, train, cfg):
        inner = pml_miners.MultiSimilarityMiner(**self.kwargs("inner_miner"))
        return _prism_miner(self, train, inner)

    mine = PRISMMethod.mine
    sample_scores = PRISMMethod.sample_scores


class FrozenFeatures(BenchMethod):
    """No training: the backbone features themselves (cosine kNN), the floor."""

    def __init__(self, train: TrainSet, cfg: dict[str, Any], spec: Any) -> None:
        nn.Module.__init__(self)
        self.cfg, self.spec = cfg, spec

    def param_groups(self) -> list[dict[str, Any]]:
        return []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ---------------------------------------------------------------------------------------------
# Smooth Proxy-Anchor (Roig et al. 2020): phase 1 confidence module, phase 2 weighted PA


class SmoothProxyAnchorMethod(BenchMethod):
    """Phase 1: per-sample class confidences; phase 2: SmoothProxyAnchorLoss weighted by them."""

    def build_loss(self, train, cfg):
        from ..losses import SmoothProxyAnchorLoss

        return SmoothProxyAnchorLoss(
            train.num_classes, self.head.out_features, **self.kwargs("loss")
        )

    def prepare(self, train: TrainSet, seed: int) -> None:
        """Phase 1 through the library: `noisy_pml.trainers.estimate_confidences` on the
        training images' centre-crop features (the trunk is the identity on cached features)
        with the noisy labels, every argument at the library's default unless overridden in
        the configuration (``conf_*`` keys, see ``noisy-pml bench --list``).

        Phase 1 does not depend on the loss's knobs, so a grid's Smooth PA variants that differ
        only there share one table per (features, noisy labels, seed, phase-1 arguments) within
        a process; ``phase1_info`` says whether this run reused one, for its record."""
        from ..trainers import estimate_confidences

        phase1_kwargs = self.kwargs("phase1")
        features = train.views[:, 0]
        key = (
            _digest(features),
            _digest(train.labels),
            train.num_classes,
            seed,
            tuple(sorted(phase1_kwargs.items())),
        )
        start = time.perf_counter()
        table = _PHASE1_TABLES.get(key)
        reused = table is not None
        if reused:
            _PHASE1_TABLES.move_to_end(key)
        else:
            with _quiet_pml_trainers():
                table = estimate_confidences(
                    nn.Identity(),
                    FeatureDataset(features, train.labels),
                    train.num_classes,
                    seed=seed,
                    **phase1_kwargs,
                )
            _PHASE1_TABLES[key] = table
            while (
                len(_PHASE1_TABLES) > 1
                and sum(t.numel() * t.element_size() for t in _PHASE1_TABLES.values())
                > _PHASE1_TABLES_BYTES
            ):
                _PHASE1_TABLES.popitem(last=False)
        self.phase1_info = {
            "phase1_reused": reused,
            "phase1_seconds": round(time.perf_counter() - start, 3),
        }
        self.register_buffer("confidence_table", table.clone())

    def compute_loss(self, x, labels, idx):
        emb = self.embed(x)
        if getattr(self.loss_fn, "confidence_table", None) is not None:
            # under torch.distributed (noisy_pml.bench.distributed): the loss wrapper holds the
            # broadcast table and looks up the gathered global batch's rows by dataset index
            self.loss_fn.set_batch_info(indices=idx)
            return self.loss_fn(emb, labels)
        return self.loss_fn(emb, labels, confidences=self.confidence_table[idx])

    def sample_scores(self, train):
        return self.confidence_table.gather(1, train.labels[:, None]).squeeze(1)


# ---------------------------------------------------------------------------------------------
# AHSML (Yan et al., TIP 2023): hyperbolic head, adaptive per-pair thresholds, two views


class _AHSMLBase(BenchMethod):
    """Embedding head -> Poincare map (noisy_pml.models.PoincareHead, curvature from the
    library default); the loss gets ``[view_1; view_2]`` of the batch's images and their
    dataset indices."""

    def __init__(self, train: TrainSet, cfg: dict[str, Any], spec: Any) -> None:
        self.two_view = bool(cfg["consistency"])
        super().__init__(train, cfg, spec)
        self.poincare = None
        if cfg["hyperbolic"]:
            from ..models import PoincareHead

            self.poincare = PoincareHead(self.head.out_features, None, **self.kwargs("poincare"))

    def similarity(self):
        if self.cfg["hyperbolic"]:
            from ..distances import PoincareSimilarity

            return PoincareSimilarity(c=self.cfg["curvature"])
        return CosineSimilarity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(x)
        return self.poincare(z) if self.poincare is not None else z

    def receivers(self) -> list[nn.Module]:
        return [self.loss_fn]  # gets the batch's indices through set_batch_info

    def compute_loss(self, x, labels, idx):
        return self.loss_fn(self.embed(x), labels)

    def _threshold_data(self, train: TrainSet) -> dict[str, Any]:
        return {"num_samples": train.num_samples, "views": 2 if self.cfg["consistency"] else 1}


class AHSMLMSMethod(_AHSMLBase):
    """AHSML's MS* loss (noisy_pml.losses.MultiSimilarityStarLoss)."""

    def build_loss(self, train, cfg):
        from ..losses import MultiSimilarityStarLoss

        return MultiSimilarityStarLoss(
            **self.kwargs("loss"), distance=self.similarity(), **self._threshold_data(train)
        )


class AHSMLContrastiveMethod(_AHSMLBase):
    """AHSML's adaptive thresholds on PML's ContrastiveLoss (AdaptiveThresholdLoss)."""

    def build_loss(self, train, cfg):
        from ..losses import AdaptiveThresholdLoss

        inner = pml_losses.ContrastiveLoss(**self.kwargs("inner_loss"), distance=self.similarity())
        return AdaptiveThresholdLoss(inner, **self.kwargs("loss"), **self._threshold_data(train))
