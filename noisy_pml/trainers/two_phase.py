"""Smooth Proxy-Anchor's two phases through PML's trainers as shipped, with the trunk frozen.

Phase 1 ([`confidence_trainer`][]): ``TrainWithClassifier`` trains a
[`ConfidenceModule`][noisy_pml.models.ConfidenceModule] on the frozen trunk's features with BCE
against the
noisy labels. Between phases, [`compute_confidences`][] fills a
[`ConfidenceTable`][noisy_pml.trainers.ConfidenceTable]. Phase 2 ([`embedding_trainer`][]):
``MetricLossOnly`` trains the embedder with
[`SmoothProxyAnchorLoss`][noisy_pml.losses.SmoothProxyAnchorLoss],
which reads the batch's confidences from the table.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from pytorch_metric_learning.trainers import MetricLossOnly, TrainWithClassifier

from ..models.confidence_module import ConfidenceBCELoss, ConfidenceModule
from ..utils.checks import check_rate
from .confidence_table import ConfidenceTable, IndexedDataset


def first_two(batch: Sequence) -> tuple:
    """``data_and_label_getter`` for datasets yielding (data, labels, ...): keep the first two."""
    return batch[0], batch[1]


def split_held_out(
    dataset: torch.utils.data.Dataset, fraction: float = 0.1, seed: int = 0
) -> tuple[torch.utils.data.Subset, torch.utils.data.Subset]:
    """(train, held-out) random split of the noisy training data, for phase-1 early stopping."""
    check_rate("fraction", fraction)
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = max(1, round(fraction * n)) if fraction > 0 else 0
    return (torch.utils.data.Subset(dataset, perm[n_held:]),
            torch.utils.data.Subset(dataset, perm[:n_held]))


@torch.no_grad()
def compute_confidences(
    trunk: torch.nn.Module,
    confidence_module: ConfidenceModule,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Confidences sigmoid(module(trunk(x))) for every sample, in dataset order: (N, C) on CPU."""
    device = torch.device(device) if device is not None else _device_of(confidence_module)
    modes = [m.training for m in (trunk, confidence_module)]
    trunk.eval(), confidence_module.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    try:
        out = [confidence_module.confidences(trunk(batch[0].to(device))).cpu() for batch in loader]
    finally:
        trunk.train(modes[0]), confidence_module.train(modes[1])
    return torch.cat(out)


def confidence_trainer(
    trunk: torch.nn.Module,
    confidence_module: ConfidenceModule,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    lr: float = 1e-3,
    held_out: torch.utils.data.Dataset | None = None,
    patience: int = 2,
    **trainer_kwargs,
) -> TrainWithClassifier:
    """Phase 1: PML's ``TrainWithClassifier`` with ``models = {trunk (frozen), classifier}``.

    The classifier is the confidence module, its loss [`ConfidenceBCELoss`][], its optimiser
    Adam(lr) (R). With ``held_out``, the end-of-epoch hook stops training once the held-out BCE
    has not improved for ``patience`` epochs and restores the best weights (R). Extra keyword
    arguments go to the trainer (e.g. ``dataloader_num_workers``, ``data_device``).
    """
    if held_out is not None and "end_of_epoch_hook" in trainer_kwargs:
        raise ValueError("pass either held_out (early stopping) or end_of_epoch_hook, not both")
    if held_out is not None:
        trainer_kwargs["end_of_epoch_hook"] = HeldOutEarlyStopping(
            trunk, confidence_module, held_out, patience, batch_size
        )
    trainer_kwargs.setdefault("data_and_label_getter", first_two)
    return TrainWithClassifier(
        models={"trunk": trunk, "classifier": confidence_module},
        optimizers={"classifier_optimizer": torch.optim.Adam(confidence_module.parameters(), lr)},
        batch_size=batch_size,
        loss_funcs={"classifier_loss": ConfidenceBCELoss(confidence_module.num_classes)},
        dataset=dataset,
        freeze_these=("trunk",),
        **trainer_kwargs,
    )


def embedding_trainer(
    trunk: torch.nn.Module,
    embedder: torch.nn.Module,
    loss: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    confidence_table: ConfidenceTable,
    batch_size: int,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    proxy_lr_multiplier: float = 100.0,
    **trainer_kwargs,
) -> MetricLossOnly:
    """Phase 2: PML's ``MetricLossOnly`` with the trunk frozen and confidences from the table.

    The dataset is wrapped in [`IndexedDataset`][] and the table's ``data_and_label_getter``
    hands each batch's indices to the table; ``loss.confidence_source`` is set to the table when
    unset. Optimisers follow Proxy-Anchor's recipe: AdamW(lr, weight_decay) for the embedder,
    ``proxy_lr_multiplier`` x lr for the loss's proxies.
    """
    if len(confidence_table) != len(dataset):
        raise ValueError(
            f"confidence_table has {len(confidence_table)} rows, dataset has {len(dataset)} samples"
        )
    source = getattr(loss, "confidence_source", None)
    if source is None:
        loss.confidence_source = confidence_table
    elif source is not confidence_table:
        raise ValueError("loss.confidence_source is set to another object than confidence_table")
    embedder_opt = torch.optim.AdamW(embedder.parameters(), lr, weight_decay=weight_decay)
    optimizers = {"embedder_optimizer": embedder_opt}
    if any(p.requires_grad for p in loss.parameters()):
        optimizers["metric_loss_optimizer"] = torch.optim.AdamW(
            loss.parameters(), lr * proxy_lr_multiplier, weight_decay=weight_decay
        )
    return MetricLossOnly(
        models={"trunk": trunk, "embedder": embedder},
        optimizers=optimizers,
        batch_size=batch_size,
        loss_funcs={"metric_loss": loss},
        dataset=IndexedDataset(dataset),
        data_and_label_getter=confidence_table.data_and_label_getter,
        freeze_these=("trunk",),
        **trainer_kwargs,
    )


class HeldOutEarlyStopping:
    """End-of-epoch hook: stop when the held-out BCE stalls for ``patience`` epochs (R).

    Returns False to PML's trainer to stop; the best weights are restored at that point.
    """

    def __init__(self, trunk: torch.nn.Module, module: ConfidenceModule,
                 held_out: torch.utils.data.Dataset, patience: int = 2, batch_size: int = 256):
        self.trunk, self.module, self.held_out = trunk, module, held_out
        self.patience, self.batch_size = patience, batch_size
        self.loss_fn: Callable = ConfidenceBCELoss(module.num_classes)
        self.best, self.best_state, self.bad_epochs = math.inf, None, 0
        self.history: list[float] = []

    @torch.no_grad()
    def held_out_loss(self) -> float:
        device = _device_of(self.module)
        was_training = self.module.training
        self.module.eval()
        loader = torch.utils.data.DataLoader(self.held_out, batch_size=self.batch_size)
        total, n = 0.0, 0
        for batch in loader:
            logits = self.module(self.trunk(batch[0].to(device)))
            total += self.loss_fn(logits, torch.as_tensor(batch[1]).to(device)).item() * len(logits)
            n += len(logits)
        self.module.train(was_training)
        return total / n

    def __call__(self, trainer) -> bool:
        loss = self.held_out_loss()
        self.history.append(loss)
        if loss < self.best:
            self.best, self.bad_epochs = loss, 0
            self.best_state = copy.deepcopy(self.module.state_dict())
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.module.load_state_dict(self.best_state)
            return False
        return True


def _device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
