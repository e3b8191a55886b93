"""Per-sample confidences reaching a loss inside PML trainers, through the sample indices."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..utils.checks import check_labels, check_ndim, check_probabilities


class IndexedDataset(torch.utils.data.Dataset):
    """Wraps a dataset so that items are ``(sample, label, index)`` (extra fields are dropped).

    Forwards ``targets``, ``clean_targets``, ``noise_mask`` and ``num_classes`` when present.
    """

    def __init__(self, base: torch.utils.data.Dataset):
        self.base = base
        for name in ("targets", "clean_targets", "noise_mask", "num_classes"):
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> tuple:
        item = self.base[idx]
        return item[0], item[1], idx


class ConfidenceTable:
    """A frozen (N, C) table of confidences c(x, p), looked up by the trainer's sample indices.

    PML trainers call ``loss(embeddings, labels, indices_tuple)`` only, so the batch's sample
    indices travel through a side channel: pass [`data_and_label_getter`][] to the trainer
    (the dataset must yield ``(sample, label, index)``, see [`IndexedDataset`][]) and the table
    itself as the loss's ``confidence_source``; calling the table returns the current batch's
    (B, C) confidences. Indices can also be handed over by `set_batch_info` (the project's
    convention; `SmoothProxyAnchorLoss.set_batch_info(indices=...)` forwards them here) or
    passed to the call itself, ``table(indices)``.

    Raises:
        ValueError: confidences not 2-D, or with NaN, infinite or out-of-[0, 1] values.
    """

    def __init__(self, confidences: torch.Tensor):
        if not isinstance(confidences, torch.Tensor):
            raise TypeError(f"confidences must be a torch.Tensor, got {type(confidences).__name__}")
        check_ndim("confidences", confidences, 2)
        check_probabilities("confidences", confidences, confidences.shape)
        self.confidences = confidences.detach()
        self._indices: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.confidences.shape[1]

    def __len__(self) -> int:
        return self.confidences.shape[0]

    def data_and_label_getter(self, batch: Sequence) -> tuple:
        """PML ``data_and_label_getter``: remember ``batch[2]`` (indices), return (data, labels)."""
        if len(batch) < 3:
            raise ValueError(
                f"ConfidenceTable.data_and_label_getter expects batches (data, labels, indices), "
                f"got {len(batch)} field(s); wrap the dataset in IndexedDataset"
            )
        self.set_batch_info(indices=batch[2])
        return batch[0], batch[1]

    def set_batch_info(self, indices=None, instance_ids=None, confidences=None, **kwargs) -> None:
        """Remember the batch's dataset ``indices`` (B,) for the next call; other fields unused."""
        if indices is None:
            raise ValueError("ConfidenceTable.set_batch_info needs indices=, got None")
        self._indices = self._checked(indices)

    def _checked(self, indices) -> torch.Tensor:
        indices = torch.as_tensor(indices)
        check_labels("batch indices", indices, len(self))
        return indices

    def __call__(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Confidences (B, C) of ``indices``, or of the batch last handed over by
        `data_and_label_getter` / `set_batch_info`."""
        if indices is not None:
            return self.confidences[self._checked(indices)]
        if self._indices is None:
            raise RuntimeError(
                "ConfidenceTable has seen no batch: pass table.data_and_label_getter to the "
                "trainer, or call table.set_batch_info(indices=...)"
            )
        return self.confidences[self._indices]

    def noise_scores(self, labels: torch.Tensor) -> torch.Tensor:
        """Label-noise score 1 - c(x, y) per sample (see noisy_pml.utils.noise_diagnostics)."""
        from ..utils.noise_diagnostics import label_noise_scores

        return label_noise_scores(self.confidences, labels)
