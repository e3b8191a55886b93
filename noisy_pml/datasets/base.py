"""Shared logic of noisy-pml's datasets: 0-based labels, noise on the train split, index returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..noise import NoiseRecipe, NoiseResult, apply_noise

SPLITS = ("train", "test", "train+test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


class DatasetCorruptError(ValueError):
    """A dataset's files are present but malformed: a label file, or images that do not decode.

    Raised when a dataset is opened (label files are validated on load) and by
    [`NoisyLabelDataset.verify`][]; the message names the file (and line) at fault.
    """


class CorruptImageError(OSError):
    """One image could not be read or decoded; the message names its file."""


def read_index_file(
    path: str, num_fields: int, int_fields: tuple[int, ...] = (), sep: str | None = None
) -> list[tuple[int, list]]:
    """Rows ``(line_number, fields)`` of an index/label file, each row checked.

    Every non-empty line must split (on ``sep``, or whitespace) into ``num_fields`` fields,
    those in ``int_fields`` being integers (converted). A file whose last line has no newline
    is named as possibly truncated in the error.

    Raises:
        DatasetCorruptError: naming the file, the line number and the line.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    truncated = bool(text) and not text.endswith("\n")
    rows = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [x.strip() for x in line.split(sep)] if sep else line.split()
        bad = len(fields) != num_fields
        if not bad:
            try:
                for i in int_fields:
                    fields[i] = int(fields[i])
            except ValueError:
                bad = True
        if bad:
            hint = (
                " (the file's last line has no newline: the file looks truncated)"
                if truncated and number == len(lines)
                else ""
            )
            ints = f" (integers in fields {[i + 1 for i in int_fields]})" if int_fields else ""
            raise DatasetCorruptError(
                f"{path}, line {number}: expected {num_fields} fields{ints}, got {line!r}{hint}"
            )
        rows.append((number, fields))
    return rows


def truncation_hint(path: str) -> str:
    """`` (... looks truncated)`` when the file's last line has no newline, else ``""``."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return ""
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
    return "" if last == b"\n" else " (its last line has no newline: the file looks truncated)"


class NoisyLabelDataset(Dataset):
    """Base class: clean and (optionally) noisy labels; items ``(sample, label[, index])``.

    Subclasses load their samples and clean 0-based labels, then call `_set_labels`;
    they implement [`load_sample`][] (the untransformed sample ``idx``).

    Attributes:
        targets: LongTensor (N,), the labels training sees (noisy when ``noise`` is set).
        clean_targets: LongTensor (N,), the true labels.
        noise_mask: BoolTensor (N,), True where ``targets != clean_targets``.
        num_classes: number of classes of the split (labels lie in ``0..num_classes-1``).
        noise_result: the [`NoiseResult`][noisy_pml.noise.NoiseResult], or None when clean.
    """

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.transform = transform
        self.noise = NoiseRecipe.parse(noise)
        if not self.noise.is_clean and split != "train":
            raise ValueError(
                f"noise={str(self.noise)!r} was given for split={split!r}: label noise is "
                "injected into the train split only (the test split must stay clean)"
            )
        self.noise_seed = noise_seed
        self.return_index = return_index
        self.noise_result: NoiseResult | None = None

    def _set_labels(
        self, clean: torch.Tensor, num_classes: int, noise_features: Any = None
    ) -> None:
        self.clean_targets = clean.long()
        self.num_classes = int(num_classes)
        if self.noise.is_clean:
            self.targets = self.clean_targets.clone()
            self.noise_mask = torch.zeros(len(clean), dtype=torch.bool)
            return
        self.noise_result = apply_noise(
            self.clean_targets,
            self.noise,
            seed=self.noise_seed,
            features=noise_features,
            num_classes=self.num_classes,
        )
        self.targets = self.noise_result.noisy_labels
        self.noise_mask = self.noise_result.noise_mask

    @property
    def labels(self) -> np.ndarray:
        """The training labels as a numpy array (what PML's samplers read)."""
        return self.targets.numpy()

    def load_sample(self, idx: int) -> Any:
        """Untransformed sample ``idx`` (PIL image, or tensor for Digits)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, idx: int) -> tuple:
        sample = self.load_sample(idx)
        if self.transform is not None:
            sample = self.transform(sample)
        label = int(self.targets[idx])
        if self.return_index:
            return sample, label, idx
        return sample, label

    def sample_name(self, idx: int) -> str:
        """What error messages call sample ``idx`` (its file path for image datasets)."""
        paths = getattr(self, "img_paths", None)
        return os.fspath(paths[idx]) if paths is not None else f"sample {idx}"

    def verify(self, raise_on_error: bool = True, max_listed: int = 20) -> list[tuple[str, str]]:
        """Read every sample once (full decode, no transform) and report the ones that fail.

        A truncated or corrupt image otherwise surfaces only when a training epoch reaches it.
        Cost: one decode per sample (about a minute for CUB's 11,788 images on one core).

        Args:
            raise_on_error: raise [`DatasetCorruptError`][] when some sample fails.
            max_listed: how many bad files the error message lists (all are returned).

        Returns:
            ``[(file, reason), ...]`` for every sample that failed (empty when all are fine).

        Raises:
            DatasetCorruptError: some sample failed and ``raise_on_error``; names the files.
        """
        bad = []
        for idx in range(len(self)):
            try:
                self.load_sample(idx)
            except Exception as e:  # noqa: BLE001 - any failure to read a sample is reported
                cause = e.__cause__ if isinstance(e, CorruptImageError) and e.__cause__ else e
                bad.append((self.sample_name(idx), f"{type(cause).__name__}: {cause}"))
        if bad and raise_on_error:
            listed = "\n".join(f"  {name}: {reason}" for name, reason in bad[:max_listed])
            more = f"\n  ... and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
            raise DatasetCorruptError(
                f"{type(self).__name__}: {len(bad)} of {len(self)} samples could not be read:\n"
                f"{listed}{more}"
            )
        return bad

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        noise = str(self.noise)
        if self.noise_result is not None:
            noise += f" (achieved {self.noise_result.rate:.3f})"
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
            f"num_classes={self.num_classes}, noise={noise}{self.extra_repr()})"
        )


class PMLImageDataset(NoisyLabelDataset):
    """An image dataset read through one of ``pytorch_metric_learning.datasets``' classes.

    PML reads the official layout and applies its class split with 1-based labels; this class
    checks the layout first (so a wrong ``root`` gives a [`DatasetNotFoundError`][] saying what
    was expected where), remaps labels to ``0..num_classes-1`` within the split, converts images
    to RGB, and injects noise into the train split. Subclasses set:

    - ``_pml_name``: the PML class name (``"CUB"``, ``"Cars196"``);
    - ``_first_class``: 1-based id of the first class of each split (the label offset);
    - ``_num_classes``: number of classes of each split;
    - ``_required``: files under ``root`` that must exist, and ``_layout_hint``;
    - ``_validate_label_files``: checks the index/label files before PML reads them (raising
      [`DatasetCorruptError`][] naming the file and line).

    Every listed image must exist on disk (checked on load: a stat per image). ``verify=True``
    also decodes every image once on load (`verify()`).
    """

    _pml_name: str = ""
    _first_class: dict[str, int] = {}
    _num_classes: dict[str, int] = {}
    _required: tuple[str, ...] = ()
    _layout_hint: str = ""

    def __init__(
        self,
        root: str,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
        download: bool = False,
        noise_features: Any = None,
        verify: bool = False,
    ) -> None:
        super().__init__(split, transform, noise, noise_seed, return_index)
        self.root = os.fspath(root)
        if not download:
            self._check_layout()
            self._validate_label_files()
        import pytorch_metric_learning.datasets as pml_datasets  # imports PIL: keep it lazy

        try:
            pml = getattr(pml_datasets, self._pml_name)(
                root=self.root, split=split, transform=None, download=download
            )
        except (OSError, ValueError, IndexError) as e:
            raise DatasetNotFoundError(
                f"could not read {type(self).__name__} from {self.root}: {e}. {self._layout_hint}"
            ) from e
        if len(pml.labels) == 0:
            raise DatasetNotFoundError(
                f"{type(self).__name__} found no image of split {split!r} in {self.root}. "
                f"{self._layout_hint}"
            )
        self.img_paths = [os.fspath(p) for p in pml.paths]
        self._check_images_exist()
        clean = torch.as_tensor(pml.labels, dtype=torch.long) - self._first_class[split]
        num_classes = self._num_classes[split]
        lo, hi = int(clean.min()), int(clean.max())
        if lo < 0 or hi >= num_classes:
            raise DatasetNotFoundError(
                f"{type(self).__name__} {split} labels span {lo + self._first_class[split]}.."
                f"{hi + self._first_class[split]} (1-based), outside the class split; "
                f"{self._layout_hint}"
            )
        self._set_labels(clean, num_classes, noise_features=noise_features)
        if verify:
            self.verify()

    def _validate_label_files(self) -> None:
        """Check the index/label files (subclasses); raise [`DatasetCorruptError`][]."""

    def _check_images_exist(self) -> None:
        """Every listed image is on disk (a stat each; a wrong label puts a path in the wrong
        class folder, so this also catches many silently relabelled lines)."""
        missing = [p for p in self.img_paths if not os.path.isfile(p)]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            listed = ", ".join(missing[:5]) + more
            raise DatasetNotFoundError(
                f"{len(missing)} image(s) listed by the index files are not on disk: {listed}. "
                f"{self._layout_hint}"
            )

    def _check_layout(self) -> None:
        if not os.path.isdir(self.root):
            raise DatasetNotFoundError(
                f"{self.root} is not a folder. {self._layout_hint} "
                "(or pass download=True to fetch the official archive)"
            )
        for rel in self._required:
            path = os.path.join(self.root, rel)
            if not os.path.exists(path):
                raise DatasetNotFoundError(f"{path} not found: {self._layout_hint}")

    def load_sample(self, idx: int) -> Any:
        """The RGB PIL image ``idx``; [`CorruptImageError`][] names the file if it fails."""
        from PIL import Image  # pillow ships with the `bench` extra (torchvision needs it)

        path = self.img_paths[idx]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:  # PIL raises all three on bad files
            raise CorruptImageError(
                f"{path}: cannot read image {idx} of {type(self).__name__} ({e}); run "
                "dataset.verify() to list every unreadable file"
            ) from e

    def extra_repr(self) -> str:
        return f", root={self.root!r}"
