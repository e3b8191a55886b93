"""Benchmark methods: an embedding head + a loss (+ miner) trained on cached backbone features.

Every method is registered by name with its default hyperparameters (see
[`noisy_pml.bench.registry`][]). A method object exposes

- ``param_groups()``: optimiser parameter groups (head; loss parameters such as proxies);
- ``prepare(train)``: optional first phase (Smooth Proxy-Anchor's confidence module);
- ``compute_loss(x, labels, idx)``: ``x`` is (B, D) for one-view methods or (B, 2, D) for
  two-view methods (two different cached views of each image), ``idx`` the sample indices;
- ``embed(x)``: the embedding used for retrieval, and ``eval_distance`` (``None`` = cosine);
- ``sample_scores()``: per-training-sample clean scores (higher = more likely clean) for the
  noise-detection curves, or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity
from torch import nn

from .registry import register_method

__all__ = ["TrainSet", "EmbeddingHead", "BenchMethod"]


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
    """Rows = principal directions of ``feats`` (descending variance), cached per tensor: every
    run on the same training features shares one eigendecomposition of the covariance."""
    key = (
        feats.data_ptr(),
        tuple(feats.shape),
        feats.dtype,
        float(feats.sum()),
        float(feats[-1].sum()),
    )
    if key not in _PCA_CACHE:
        z = (feats - feats.mean(0)).double()
        _, vecs = torch.linalg.eigh(z.T @ z)
        if len(_PCA_CACHE) >= 4:
            _PCA_CACHE.pop(next(iter(_PCA_CACHE)))
        _PCA_CACHE[key] = vecs.flip(1).T.float().contiguous()
    return _PCA_CACHE[key]


class EmbeddingHead(nn.Module):
    """Embedding head on frozen features: ``linear(x - mean) + branch(x - mean)``.

    - ``kind="linear"``: the linear map only; ``"residual"``: plus an MLP branch whose last layer
      starts at zero, so training starts at the linear map and learns a refinement; ``"mlp"``:
      the MLP alone (last layer randomly initialised).
    - ``init="pca"``: the linear map starts as the projection on the top principal directions of
      the training features (the head starts at the features' own geometry); ``"random"``.
    """

    def __init__(
        self,
        feats: torch.Tensor,
        out_dim: int,
        kind: str = "residual",
        hidden: int = 1024,
        init: str = "pca",
    ) -> None:
        super().__init__()
        kinds, inits = ("linear", "residual", "mlp"), ("pca", "random")
        if kind not in kinds:
            raise ValueError(f"head kind must be one of {kinds}, got {kind!r}")
        if init not in inits:
            raise ValueError(f"head init must be one of {inits}, got {init!r}")
        d = feats.shape[1]
        out_dim = min(int(out_dim), d) if init == "pca" else int(out_dim)
        self.kind = kind
        self.register_buffer("mean", feats.mean(0))
        self.linear = nn.Linear(d, out_dim, bias=False) if kind != "mlp" else None
        if self.linear is not None and init == "pca":
            self.linear.weight.data.copy_(_principal_directions(feats)[:out_dim])
        self.branch = None
        if kind in ("residual", "mlp"):
            self.branch = nn.Sequential(
                nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
            if kind == "residual":
                nn.init.zeros_(self.branch[2].weight)
                nn.init.zeros_(self.branch[2].bias)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x - self.mean
        out = self.linear(z) if self.linear is not None else 0
        if self.branch is not None:
            out = out + self.branch(z)
        return out


HEAD_DEFAULTS: dict[str, Any] = {
    "embedding_size": 512,
    "head": "residual",
    "head_hidden": 1024,
    "head_init": "pca",
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "epochs": 30,
    "batch_size": 120,
    "m_per_class": 4,
    "train_views": "all",
}


class BenchMethod(nn.Module):
    """Head + PML loss (+ miner). Subclasses only build their loss / miner."""

    two_view = False
    eval_distance = None

    def __init__(self, train: TrainSet, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = EmbeddingHead(
            train.views[:, 0],
            cfg["embedding_size"],
            cfg["head"],
            cfg["head_hidden"],
            cfg["head_init"],
        )
        self.loss_fn: nn.Module = self.build_loss(train, cfg)
        self.miner: nn.Module | None = self.build_miner(train, cfg)

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


@register_method(
    "proxy_anchor",
    defaults={**HEAD_DEFAULTS, "margin": 0.1, "alpha": 32.0, "loss_lr_mult": 100.0},
    description="Proxy-Anchor (Kim et al., CVPR 2020), PML's ProxyAnchorLoss",
)
class ProxyAnchorMethod(BenchMethod):
    def build_loss(self, train, cfg):
        return pml_losses.ProxyAnchorLoss(
            train.num_classes, self.head.out_dim, margin=cfg["margin"], alpha=cfg["alpha"]
        )


@register_method(
    "multi_similarity",
    defaults={**HEAD_DEFAULTS, "alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
    description="Multi-Similarity loss + MS miner (Wang et al., CVPR 2019)",
)
class MultiSimilarityMethod(BenchMethod):
    def build_loss(self, train, cfg):
        return pml_losses.MultiSimilarityLoss(cfg["alpha"], cfg["beta"], cfg["base"])

    def build_miner(self, train, cfg):
        return pml_miners.MultiSimilarityMiner(epsilon=cfg["epsilon"])


@register_method(
    "contrastive",
    defaults={**HEAD_DEFAULTS, "pos_margin": 1.0, "neg_margin": 0.5},
    description="Contrastive loss on cosine similarity (Hadsell et al. 2006; XBM's form)",
)
class ContrastiveMethod(BenchMethod):
    def build_loss(self, train, cfg):
        return pml_losses.ContrastiveLoss(
            pos_margin=cfg["pos_margin"], neg_margin=cfg["neg_margin"], distance=CosineSimilarity()
        )


def _prism_miner(train, cfg, inner_miner=None):
    """PRISMMiner over the training set with the method's PRISM hyperparameters."""
    from ..miners import PRISMMiner

    return PRISMMiner(
        train.num_samples,
        train.num_classes,
        top_k=cfg["top_k"],
        noise_rate=cfg["noise_rate"],
        temperature=cfg["temperature"],
        warmup=cfg["warmup"],
        inner_miner=inner_miner,
    )


@register_method(
    "prism",
    defaults={
        **HEAD_DEFAULTS,
        "pos_margin": 1.0,
        "neg_margin": 0.5,
        "top_k": 1,
        "noise_rate": None,
        "temperature": 1.0,
        "warmup": 0.5,
    },
    description="PRISM (Liu et al., CVPR 2021): contrastive loss + noisy_pml PRISMMiner",
)
class PRISMMethod(ContrastiveMethod):
    def build_miner(self, train, cfg):
        return _prism_miner(train, cfg)

    def mine(self, emb, labels, idx):
        return self.miner(emb, labels, indices=idx)

    def sample_scores(self, train):
        s = self.miner.scores.clone()
        return torch.where(torch.isnan(s), torch.ones_like(s), s)


@register_method(
    "prism_ms",
    defaults={
        **HEAD_DEFAULTS,
        "alpha": 2.0,
        "beta": 50.0,
        "base": 0.5,
        "epsilon": 0.1,
        "top_k": 1,
        "noise_rate": None,
        "temperature": 1.0,
        "warmup": 0.5,
    },
    description="PRISM filter + MS miner + Multi-Similarity loss",
)
class PRISMMSMethod(MultiSimilarityMethod):
    def build_miner(self, train, cfg):
        return _prism_miner(train, cfg, pml_miners.MultiSimilarityMiner(epsilon=cfg["epsilon"]))

    mine = PRISMMethod.mine
    sample_scores = PRISMMethod.sample_scores


@register_method(
    "frozen_features",
    defaults={"epochs": 0},
    description="No training: cosine kNN on the frozen backbone features (the floor)",
)
class FrozenFeatures(BenchMethod):
    def __init__(self, train: TrainSet, cfg: dict[str, Any]) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg

    def param_groups(self) -> list[dict[str, Any]]:
        return []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ---------------------------------------------------------------------------------------------
# Smooth Proxy-Anchor (Roig et al. 2020): phase 1 confidence module, phase 2 weighted PA

SPA_DEFAULTS: dict[str, Any] = {
    **HEAD_DEFAULTS,
    "margin": 0.1,
    "alpha": 32.0,
    "loss_lr_mult": 100.0,
    "smoothing_position": 0.5,
    "smoothing_sharpness": 10.0,
    "positive_threshold": None,
    "positive_set": "confidence",
    "weighted_negatives": True,
    "conf_hidden": 512,
    "conf_dropout": 0.5,
    "conf_lr": 1e-3,
    "conf_max_epochs": 30,
    "conf_patience": 2,
    "conf_held_out": 0.1,
}


@register_method(
    "smooth_proxy_anchor",
    defaults=SPA_DEFAULTS,
    description="Smooth Proxy-Anchor (Roig et al. 2020): BCE confidence module, then "
    "confidence-weighted Proxy-Anchor (noisy_pml.losses.SmoothProxyAnchorLoss)",
    requires=("noisy_pml.losses:SmoothProxyAnchorLoss", "noisy_pml.models:ConfidenceModule"),
)
class SmoothProxyAnchorMethod(BenchMethod):
    def build_loss(self, train, cfg):
        from ..losses import SmoothProxyAnchorLoss

        return SmoothProxyAnchorLoss(
            train.num_classes,
            self.head.out_dim,
            margin=cfg["margin"],
            alpha=cfg["alpha"],
            smoothing_position=cfg["smoothing_position"],
            smoothing_sharpness=float(cfg["smoothing_sharpness"]),
            positive_threshold=cfg["positive_threshold"],
            positive_set=cfg["positive_set"],
            weighted_negatives=cfg["weighted_negatives"],
        )

    def prepare(self, train: TrainSet, seed: int) -> None:
        """Phase 1: BCE confidence module on the frozen features, early-stopped on a held-out
        10% slice of the noisy training data; then the (N, C) confidence table (centre view)."""
        from ..models import ConfidenceBCELoss, ConfidenceModule

        cfg = self.cfg
        g = torch.Generator().manual_seed(seed + 1)
        n, views = train.num_samples, train.views
        perm = torch.randperm(n, generator=g)
        n_held = max(1, int(cfg["conf_held_out"] * n))
        held, fit = perm[:n_held], perm[n_held:]
        module = ConfidenceModule(
            train.feature_dim, train.num_classes, cfg["conf_hidden"], cfg["conf_dropout"]
        )
        mean = views[:, 0].mean(0)
        crit = ConfidenceBCELoss(train.num_classes)
        opt = torch.optim.Adam(module.parameters(), lr=cfg["conf_lr"])
        best, best_state, bad = float("inf"), None, 0
        self.conf_epochs = 0
        for _ in range(cfg["conf_max_epochs"]):
            module.train()
            order = fit[torch.randperm(len(fit), generator=g)]
            for i in range(0, len(order), 256):
                idx = order[i : i + 256]
                v = torch.randint(views.shape[1], (len(idx),), generator=g)
                loss = crit(module(views[idx, v] - mean), train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            module.eval()
            with torch.no_grad():
                val = float(crit(module(views[held, 0] - mean), train.labels[held]))
            self.conf_epochs += 1
            if val < best - 1e-5:
                best, bad = val, 0
                best_state = {k: t.clone() for k, t in module.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg["conf_patience"]:
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        with torch.no_grad():
            self.register_buffer("confidence_table", module.confidences(views[:, 0] - mean))

    def compute_loss(self, x, labels, idx):
        emb = self.embed(x)
        return self.loss_fn(emb, labels, confidences=self.confidence_table[idx])

    def sample_scores(self, train):
        return self.confidence_table.gather(1, train.labels[:, None]).squeeze(1)


# ---------------------------------------------------------------------------------------------
# AHSML (Yan et al., TIP 2023): hyperbolic head, adaptive per-pair thresholds, two views

AHSML_DEFAULTS: dict[str, Any] = {
    **HEAD_DEFAULTS,
    "hyperbolic": True,
    "curvature": 1.0,
    "consistency": True,
    "delta": 0.2,
    "gamma": 0.5,
    "negative": "literal",
    "augmentation": "min",
    "scope": "memory",
}


class _AHSMLBase(BenchMethod):
    """Embedding head -> Poincare map (exp0 of the L2-normalised output, c = 1); the loss gets
    ``[view_1; view_2]`` of the batch's images and their dataset indices."""

    def __init__(self, train: TrainSet, cfg: dict[str, Any]) -> None:
        self.two_view = bool(cfg["consistency"])
        super().__init__(train, cfg)
        self.poincare = None
        if cfg["hyperbolic"]:
            from ..models import PoincareHead

            self.poincare = PoincareHead(self.head.out_dim, None, c=cfg["curvature"])

    def similarity(self):
        from pytorch_metric_learning.distances import CosineSimilarity

        if self.cfg["hyperbolic"]:
            from ..distances import PoincareSimilarity

            return PoincareSimilarity(c=self.cfg["curvature"])
        return CosineSimilarity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(x)
        return self.poincare(z) if self.poincare is not None else z

    def compute_loss(self, x, labels, idx):
        if x.dim() == 3:  # (B, 2, D) -> rows [view_1 of B; view_2 of B]
            x = torch.cat([x[:, 0], x[:, 1]])
            labels = torch.cat([labels, labels])
        emb = self.embed(x)
        self.loss_fn.set_batch_info(sample_indices=idx)
        return self.loss_fn(emb, labels)

    def _threshold_kwargs(self, train, cfg):
        return dict(
            delta=cfg["delta"],
            negative=cfg["negative"],
            augmentation=cfg["augmentation"],
            scope=cfg["scope"],
            num_samples=train.num_samples,
            views=2 if cfg["consistency"] else 1,
        )


@register_method(
    "ahsml_ms",
    defaults={**AHSML_DEFAULTS, "alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
    description="AHSML with MS* (noisy_pml.losses.MultiSimilarityStarLoss), hyperbolic head, "
    "two views",
    two_view=True,
    requires=("noisy_pml.losses:MultiSimilarityStarLoss", "noisy_pml.models:PoincareHead"),
)
class AHSMLMSMethod(_AHSMLBase):
    def build_loss(self, train, cfg):
        from ..losses import MultiSimilarityStarLoss

        return MultiSimilarityStarLoss(
            alpha=cfg["alpha"],
            beta=cfg["beta"],
            base=cfg["base"],
            mining_epsilon=cfg["epsilon"],
            distance=self.similarity(),
            **self._threshold_kwargs(train, cfg),
        )


@register_method(
    "ahsml_contrastive",
    defaults={**AHSML_DEFAULTS, "pos_margin": 1.0, "neg_margin": 0.5},
    description="AHSML thresholds on PML's ContrastiveLoss (noisy_pml.losses."
    "AdaptiveThresholdLoss), hyperbolic head, two views",
    two_view=True,
    requires=("noisy_pml.losses:AdaptiveThresholdLoss", "noisy_pml.models:PoincareHead"),
)
class AHSMLContrastiveMethod(_AHSMLBase):
    def build_loss(self, train, cfg):
        from ..losses import AdaptiveThresholdLoss

        inner = pml_losses.ContrastiveLoss(
            pos_margin=cfg["pos_margin"], neg_margin=cfg["neg_margin"], distance=self.similarity()
        )
        kw = self._threshold_kwargs(train, cfg)
        return AdaptiveThresholdLoss(inner, gamma=cfg["gamma"], **kw)
