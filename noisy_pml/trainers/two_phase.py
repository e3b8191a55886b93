"""Smooth Proxy-Anchor's two phases through PML's trainers as shipped, with the trunk frozen.

Phase 1 (`confidence_trainer`): ``TrainWithClassifier`` trains a `ConfidenceModule` on the
frozen trunk's features with BCE against the noisy labels; `estimate_confidences` runs it end to
end, one module scoring every sample (the default, best for training the loss) or with K-fold
cross-fitting so that every sample is scored by a module that never trained on it (best for
finding mislabelled samples).
Between phases, `compute_confidences` fills a `ConfidenceTable`. Phase 2 (`embedding_trainer`):
``MetricLossOnly`` trains the embedder with `SmoothProxyAnchorLoss`, which reads the batch's
confidences from the table.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from pytorch_metric_learning.trainers import MetricLossOnly, TrainWithClassifier

from ..models.confidence_module import ConfidenceBCELoss, ConfidenceModule
from ..utils.checks import check_labels, check_positive, check_rate
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


# K of the cross-fitting when the confidences rank samples as possibly mislabelled
# (`noisy_pml.diagnose`): out-of-fold scores detect better (benchmarks/results/noise_detection/)
DETECTION_FOLDS = 5
# early-stopping patience of phase 1 when it ranks samples for detection: the setting the
# detection AUROCs of benchmarks/results/noise_detection/ were measured with; a longer phase 1
# (the training default, 10) memorises more noise and ranks it worse (Cars196, 96 px, single
# module: AUROC 83 -> 73 at symmetric 30 %, benchmarks/results/phase1_selection/probe.md)
DETECTION_PATIENCE = 5


def estimate_confidences(
    trunk: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    *,
    folds: int | torch.Tensor = 1,
    held_out_fraction: float = 0.1,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    patience: int = 10,
    stop_on: str = "accuracy",
    hidden_size: int | None = 512,
    dropout: float = 0.5,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    eval_dataset: torch.utils.data.Dataset | None = None,
    fold_log: list[dict] | None = None,
    **trainer_kwargs,
) -> torch.Tensor:
    r"""Phase 1 end to end: the (N, C) confidences $c(x, p)$ of every sample, in dataset order.

    Each confidence module is a fresh `ConfidenceModule` trained by `confidence_trainer` (PML's
    ``TrainWithClassifier``, trunk frozen, BCE against the noisy labels, early stopping on a
    held-out slice, best weights restored).

    With ``folds`` $= K \ge 2$ (cross-fitting) the samples are split into $K$ folds stratified
    by noisy label; for fold $k$ a module is trained on the other $K-1$ folds (less a
    ``held_out_fraction`` slice of them for early stopping) and scores only fold $k$. So no
    sample is scored by a module that fitted its (possibly wrong) label: a module this small
    fits clean structure before it memorises noise, but it does memorise some, and then
    $c(x, \tilde y_x)$ of its own training samples is too high. ``folds=1`` (the default) is
    the single-model path: one module trained on all but the held-out slice scores every
    sample. ``folds`` may also be an (N,) tensor of fold ids ``0..K-1`` (e.g. to keep
    near-duplicates in one fold).

    Which to use depends on what the confidences are for. To *find* mislabelled samples, the
    out-of-fold scores are better (`DETECTION_FOLDS` = 5, what `noisy_pml.diagnose` uses:
    noise-detection AUROC 86-93 % vs 72-86 % for the single model on Cars196). To *train*
    Smooth Proxy-Anchor, the single model was as good or better in R@1 on the validation
    classes of CUB and Cars196 (mean over clean / 50 % noise, 3 seeds: +0.19 vs +0.14 over
    Proxy-Anchor for K = 5; benchmarks/results/spa_v3_select/) and costs one module instead of
    five: a module that has seen a clean sample gives it a confidence above the loss's
    threshold more often, so fewer clean pairs are dropped.

    Args:
        trunk: frozen feature extractor (``torch.nn.Identity()`` on cached features); its
            output on a batch of ``dataset`` items must be 2-D.
        dataset: yields ``(x, noisy_label, ...)``; labels are read from ``dataset.targets``
            when present (else from the items).
        num_classes: C, the number of classes (labels lie in ``0..C-1``).
        folds: K (int >= 1) or an (N,) tensor of fold ids.
        held_out_fraction: share of each training part held out for early stopping (0: none,
            train ``epochs`` epochs).
        epochs: maximum number of epochs of each module.
        batch_size, lr, patience: phase-1 batch size, Adam learning rate, early-stopping
            patience (epochs without improvement of the held-out criterion).
        stop_on: the held-out criterion of early stopping (R), see `HeldOutEarlyStopping`:
            ``"accuracy"`` (the share of held-out samples whose most confident class is their
            noisy label) or ``"bce"`` (the held-out BCE against the noisy labels).

    The phase-1 defaults (batch 64, ``stop_on="accuracy"``) were measured on the
    validation classes of Cars196 (benchmarks/results/spa_v3_select/README.md): the earlier
    batch 256 / BCE / patience 2 stopped 4 of 5 out-of-fold modules at epoch 3 on a transient
    rise of the held-out BCE, leaving chance-level confidences (noise-detection AUROC 52-57 %
    at symmetric 20-50 %), and at batch 256 the modules were still improving at the 30-epoch
    cap. Patience 10 (was 5) was chosen for training Smooth Proxy-Anchor end to end (issue #16,
    benchmarks/results/phase1_selection/): the held-out noisy-label accuracy of a few hundred
    samples is a noisy criterion, and with patience 5 phase 1 stopped at epoch 11-14 on
    Cars196's 96 px features, where no class reached the loss's threshold for 78-95 % of the
    samples and fine-tuning on the rest collapsed; patience 10 had the best validation MAP@R of
    six candidates, averaged over CUB and Cars196 (equal to patience 5 on CUB, where both stop
    at the same epoch). Detection (`noisy_pml.diagnose`) keeps `DETECTION_PATIENCE` = 5: the
    longer phase 1 memorises more noise and ranks it worse.
        hidden_size, dropout: `ConfidenceModule` architecture (``hidden_size=None``: one Linear).
        seed: fold assignment, held-out slices, module initialisation and batch order; the
            global RNG state is left untouched. Fold $k$ runs under ``torch.manual_seed(1000 *
            seed + k)`` and holds out ``split_held_out(..., seed=1000 * seed + k)``.
        device: where modules train (default: CUDA when available, else CPU); the trunk is
            moved there too.
        progress: show a progress bar over the folds.
        eval_dataset: the dataset scored and used for early stopping, in the same order and
            with the same labels as ``dataset`` (e.g. centre crops while ``dataset`` yields
            augmented views); default ``dataset``.
        fold_log: if a list is given, one dict per fold is appended (``fold``, ``num_train``,
            ``num_held_out``, ``num_scored``, ``epochs``, ``best_held_out``: the held-out
            ``{"bce", "accuracy"}`` of the restored weights).
        **trainer_kwargs: passed to PML's trainer (``dataloader_num_workers`` defaults to 0).

    Returns:
        Float tensor (N, C) on the CPU, row i the confidences of sample i.

    Raises:
        ValueError: labels outside ``0..num_classes-1``; folds < 1 or more folds than samples;
            a class with fewer than K samples (K >= 2); a class present in only one fold; a
            module producing NaN or infinite confidences.
    """
    check_positive("num_classes", num_classes)
    check_positive("epochs", epochs)
    check_positive("batch_size", batch_size)
    check_rate("held_out_fraction", held_out_fraction)
    eval_dataset = dataset if eval_dataset is None else eval_dataset
    if len(eval_dataset) != len(dataset):
        raise ValueError(
            f"eval_dataset has {len(eval_dataset)} samples, dataset has {len(dataset)}; "
            "expected the same samples in the same order"
        )
    labels = dataset_labels(dataset)
    check_labels("dataset labels", labels, num_classes)
    fold_ids = assign_folds(labels, folds, seed) if not isinstance(folds, torch.Tensor) \
        else _check_fold_ids(folds, labels)
    num_folds = int(fold_ids.max()) + 1
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    trainer_kwargs.setdefault("dataloader_num_workers", 0)
    trainer_kwargs.setdefault("data_device", device)
    trunk.to(device)
    in_features = _feature_dim(trunk, eval_dataset, device)

    out = torch.empty(len(dataset), int(num_classes))
    all_idx = torch.arange(len(dataset))
    fold_range = range(num_folds)
    if progress:
        from tqdm.auto import tqdm

        fold_range = tqdm(fold_range, desc="confidence folds", unit="fold")
    with torch.random.fork_rng(devices=[]):
        for k in fold_range:
            fold_seed = 1000 * seed + k
            scored = all_idx[fold_ids == k] if num_folds > 1 else all_idx
            train_idx = all_idx[fold_ids != k] if num_folds > 1 else all_idx
            torch.manual_seed(fold_seed)
            module = ConfidenceModule(in_features, num_classes, hidden_size, dropout).to(device)
            fit, held = split_held_out(torch.utils.data.Subset(dataset, train_idx.tolist()),
                                       held_out_fraction, seed=fold_seed)
            held_eval = torch.utils.data.Subset(
                eval_dataset, [int(train_idx[i]) for i in held.indices])
            trainer = confidence_trainer(
                trunk, module, fit, batch_size, lr,
                held_out=held_eval if len(held_eval) else None, patience=patience,
                stop_on=stop_on, **trainer_kwargs,
            )
            trainer.train(num_epochs=epochs)
            hook = trainer.end_of_epoch_hook if len(held_eval) else None
            if isinstance(hook, HeldOutEarlyStopping):
                hook.restore_best()
            conf = compute_confidences(
                trunk, module, torch.utils.data.Subset(eval_dataset, scored.tolist()),
                batch_size, device,
            )
            if not torch.isfinite(conf).all():
                raise ValueError(
                    f"fold {k}: the confidence module produced "
                    f"{int((~torch.isfinite(conf)).sum())} NaN or infinite confidence(s); "
                    "expected finite values (check the trunk's features for NaN/inf)"
                )
            out[scored] = conf.float()
            if fold_log is not None:
                fold_log.append({
                    "fold": k, "num_train": len(fit), "num_held_out": len(held_eval),
                    "num_scored": len(scored), "epochs": trainer.epoch,
                    "best_held_out": hook.best_metrics
                    if isinstance(hook, HeldOutEarlyStopping) else None,
                })
    return out


def assign_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """Fold id (0..K-1) per sample, stratified by label: each class spread evenly over folds.

    Samples are shuffled within each class (seeded) and dealt round-robin over the folds,
    continuing from class to class so that fold sizes differ by at most one.

    Args:
        labels: (N,) integer class ids (the noisy labels).
        folds: K, the number of folds.
        seed: the shuffle within each class.

    Returns:
        LongTensor (N,) of fold ids in ``0..K-1``.

    Raises:
        ValueError: ``folds`` < 1 or > N, or (``folds`` >= 2) a class with 1..K-1 samples.
    """
    labels = torch.as_tensor(labels)
    check_labels("labels", labels)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be an int >= 1 or a tensor of fold ids, got {folds!r}")
    if folds > len(labels):
        raise ValueError(f"folds={folds} exceeds the number of samples ({len(labels)})")
    fold_ids = torch.zeros(len(labels), dtype=torch.long)
    if folds == 1:
        return fold_ids
    counts = torch.bincount(labels)
    small = torch.nonzero((counts > 0) & (counts < folds)).squeeze(1)
    if len(small):
        c = int(small[0])
        raise ValueError(
            f"class {c} has {int(counts[c])} sample(s), fewer than folds={folds} "
            f"({len(small)} class(es) are that small); expected >= {folds} samples per class "
            "for out-of-fold confidences: lower folds, or drop or merge those classes"
        )
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([
        idx[torch.randperm(len(idx), generator=g)]
        for idx in (torch.nonzero(labels == c).squeeze(1) for c in torch.unique(labels))
    ])
    fold_ids[order] = torch.arange(len(order)) % folds
    return fold_ids


def _check_fold_ids(fold_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    check_labels("folds", fold_ids, length=len(labels))
    num_folds = int(fold_ids.max()) + 1
    sizes = torch.bincount(fold_ids, minlength=num_folds)
    if (sizes == 0).any():
        raise ValueError(
            f"folds must number folds 0..K-1 without gaps, got empty fold(s) "
            f"{torch.nonzero(sizes == 0).squeeze(1).tolist()}"
        )
    if num_folds >= 2:
        # a class confined to one fold is absent from that fold's training part: its samples
        # would be scored by a module that never saw their class
        present = torch.zeros(int(labels.max()) + 1, num_folds, dtype=torch.bool)
        present[labels, fold_ids] = True
        lonely = torch.nonzero(present.sum(1) == 1).squeeze(1)
        if len(lonely):
            raise ValueError(
                f"class {int(lonely[0])} is present in only one fold ({len(lonely)} such "
                "class(es)); expected every class in at least two folds, so that the module "
                "scoring a fold has seen each of its classes"
            )
    return fold_ids.long()


def dataset_labels(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    """The (noisy) labels of a dataset as a LongTensor: ``targets`` if present, else read."""
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).long()
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return dataset.tensors[1].long()
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


@torch.no_grad()
def _feature_dim(trunk: torch.nn.Module, dataset: torch.utils.data.Dataset, device) -> int:
    was_training = trunk.training
    trunk.eval()
    try:
        x = torch.as_tensor(dataset[0][0])[None].to(device)
        f = trunk(x)
    finally:
        trunk.train(was_training)
    if f.dim() != 2:
        raise ValueError(
            f"trunk output must be 2-D (batch, features), got shape {tuple(f.shape)}"
        )
    return int(f.shape[1])


def fitting_batch_size(dataset: torch.utils.data.Dataset, batch_size: int, who: str) -> int:
    """``batch_size`` capped at ``len(dataset)``, with a warning when capped.

    PML's trainers drop the last incomplete batch, so a batch larger than the dataset would train
    nothing at all, silently.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{who}: the training dataset is empty")
    if batch_size > n:
        warnings.warn(
            f"{who}: batch_size={batch_size} is larger than the {n} training samples, and PML's "
            f"trainer drops incomplete batches (nothing would be trained); using batch_size={n}",
            stacklevel=3,
        )
        return n
    return batch_size


def confidence_trainer(
    trunk: torch.nn.Module,
    confidence_module: ConfidenceModule,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    lr: float = 1e-3,
    held_out: torch.utils.data.Dataset | None = None,
    patience: int = 10,
    stop_on: str = "accuracy",
    **trainer_kwargs,
) -> TrainWithClassifier:
    """Phase 1: PML's ``TrainWithClassifier`` with ``models = {trunk (frozen), classifier}``.

    The classifier is the confidence module, its loss [`ConfidenceBCELoss`][], its optimiser
    Adam(lr) (R). With ``held_out``, the end-of-epoch hook stops training once the held-out
    criterion ``stop_on`` (see `HeldOutEarlyStopping`) has not improved for ``patience`` epochs
    and restores the best weights (R). Extra keyword
    arguments go to the trainer (e.g. ``dataloader_num_workers``, ``data_device``).
    """
    if held_out is not None and "end_of_epoch_hook" in trainer_kwargs:
        raise ValueError("pass either held_out (early stopping) or end_of_epoch_hook, not both")
    if held_out is not None:
        trainer_kwargs["end_of_epoch_hook"] = HeldOutEarlyStopping(
            trunk, confidence_module, held_out, patience, batch_size, stop_on
        )
    trainer_kwargs.setdefault("data_and_label_getter", first_two)
    batch_size = fitting_batch_size(dataset, batch_size, "confidence_trainer")
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
    batch_size = fitting_batch_size(dataset, batch_size, "embedding_trainer")
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
    r"""End-of-epoch hook: stop when a held-out criterion stalls for ``patience`` epochs (R).

    Returns False to PML's trainer to stop; the best weights are restored at that point.

    ``stop_on`` picks the criterion, computed on the held-out slice against its *noisy* labels:
    - ``"bce"``: the one-vs-all BCE (lower is better). Under heavy noise it can rise while the
      module still improves: a module that becomes confident in a mislabelled sample's true
      class pays BCE on its noisy label.
    - ``"accuracy"``: the share of samples whose most confident class is their noisy label
      (higher is better; ties go to the lower BCE). Under symmetric noise at rate $\eta$ with
      $C$ classes, noisy accuracy $= (1-\eta)\,a + \eta\,(1-a)/(C-1)$ for clean accuracy $a$,
      increasing in $a$ whenever $\eta < 1 - 1/C$: it ranks epochs as clean accuracy would.
    """

    CRITERIA = ("bce", "accuracy")

    def __init__(self, trunk: torch.nn.Module, module: ConfidenceModule,
                 held_out: torch.utils.data.Dataset, patience: int = 10, batch_size: int = 256,
                 stop_on: str = "accuracy"):
        if stop_on not in self.CRITERIA:
            raise ValueError(f"stop_on must be one of {self.CRITERIA}, got {stop_on!r}")
        check_positive("patience", patience)
        self.trunk, self.module, self.held_out = trunk, module, held_out
        self.patience, self.batch_size, self.stop_on = patience, batch_size, stop_on
        self.loss_fn: Callable = ConfidenceBCELoss(module.num_classes)
        self.best_state, self.bad_epochs = None, 0
        self.best_metrics: dict[str, float] | None = None
        self.history: list[float] = []  # held-out BCE per epoch
        self.accuracy_history: list[float] = []  # held-out noisy-label accuracy per epoch
        self.stopped_early = False

    @torch.no_grad()
    def held_out_metrics(self) -> dict[str, float]:
        """``{"bce": ..., "accuracy": ...}`` of the module on the held-out slice."""
        device = _device_of(self.module)
        was_training = self.module.training
        self.module.eval()
        loader = torch.utils.data.DataLoader(self.held_out, batch_size=self.batch_size)
        bce, hits, n = 0.0, 0, 0
        for batch in loader:
            logits = self.module(self.trunk(batch[0].to(device)))
            labels = torch.as_tensor(batch[1]).to(device)
            bce += self.loss_fn(logits, labels).item() * len(logits)
            hits += int((logits.argmax(dim=1) == labels).sum())
            n += len(logits)
        self.module.train(was_training)
        return {"bce": bce / n, "accuracy": hits / n}

    def held_out_loss(self) -> float:
        """The held-out BCE."""
        return self.held_out_metrics()["bce"]

    @property
    def best(self) -> float:
        """The held-out BCE of the best epoch so far (inf before the first)."""
        return math.inf if self.best_metrics is None else self.best_metrics["bce"]

    def _score(self, metrics: dict[str, float]) -> tuple[float, ...]:
        # compared lexicographically, lower is better: accuracy first, BCE breaks ties
        if self.stop_on == "bce":
            return (metrics["bce"],)
        return (-metrics["accuracy"], metrics["bce"])

    def __call__(self, trainer) -> bool:
        metrics = self.held_out_metrics()
        self.history.append(metrics["bce"])
        self.accuracy_history.append(metrics["accuracy"])
        if self.best_metrics is None or self._score(metrics) < self._score(self.best_metrics):
            self.best_metrics, self.bad_epochs = metrics, 0
            self.best_state = copy.deepcopy(self.module.state_dict())
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.module.load_state_dict(self.best_state)
            self.stopped_early = True
            return False
        return True

    def restore_best(self) -> None:
        """Load the best weights seen so far (for runs that reached the epoch cap)."""
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)


def _device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
