"""CUB-200-2011 (Wah et al., Caltech CNS-TR-2011-001) with the metric-learning class split."""

from __future__ import annotations

import os

from .base import DatasetCorruptError, PMLImageDataset, read_index_file, truncation_hint

NUM_IMAGES_OFFICIAL = 11788
NUM_CLASSES_TOTAL = 200


class CUB(PMLImageDataset):
    """CUB-200-2011 birds: classes 1-100 train (5,864 images), 101-200 test (5,924 images).

    Read through ``pytorch_metric_learning.datasets.CUB``, i.e. from the official layout
    ``root/CUB_200_2011/{images.txt, image_class_labels.txt, images/...}``. Labels are remapped to
    0..99 within each split (0..199 for ``"train+test"``); images are PIL RGB.

    Args:
        root: folder holding ``CUB_200_2011`` (e.g. ``$NOISY_PML_DATA/cub``).
        split: ``"train"``, ``"test"`` or ``"train+test"``.
        transform: applied to the PIL image.
        noise: a [`NoiseRecipe`][noisy_pml.noise.NoiseRecipe] or its string, train split only.
        noise_seed: seed of the noise injection.
        return_index: also return the sample index (for memory banks and per-sample weights).
        download: let PML download and extract the official archive into an empty ``root``.
        noise_features: optional (N, D) features for small-cluster noise's k-means clusters.
        verify: decode every image once on load and name the unreadable files (`verify()`).

    Raises:
        DatasetNotFoundError: ``root`` lacks the layout, or listed images are missing.
        DatasetCorruptError: ``images.txt`` / ``image_class_labels.txt`` malformed: a line
            that does not parse, different row counts or image ids, an image id listed twice, a
            class id outside 1..200, or a class id that contradicts the image's class folder
            (``NNN.Name/``), as a truncated last line does.
    """

    _pml_name = "CUB"
    _first_class = {"train": 1, "test": 101, "train+test": 1}
    _num_classes = {"train": 100, "test": 100, "train+test": 200}
    _required = (
        "CUB_200_2011",
        os.path.join("CUB_200_2011", "images.txt"),
        os.path.join("CUB_200_2011", "image_class_labels.txt"),
        os.path.join("CUB_200_2011", "images"),
    )
    _layout_hint = (
        "expected the official CUB_200_2011 layout (CUB_200_2011/images.txt, "
        "image_class_labels.txt, images/<class>/<file>); set root to the folder containing "
        "CUB_200_2011"
    )

    def _validate_label_files(self) -> None:
        base = os.path.join(self.root, "CUB_200_2011")
        images_txt = os.path.join(base, "images.txt")
        labels_txt = os.path.join(base, "image_class_labels.txt")
        images = read_index_file(images_txt, 2, int_fields=(0,))
        labels = read_index_file(labels_txt, 2, int_fields=(0, 1))
        if len(images) != len(labels):
            raise DatasetCorruptError(
                f"{labels_txt} has {len(labels)} rows but {images_txt} has {len(images)}: every "
                f"image must be labelled exactly once{truncation_hint(labels_txt)}"
            )
        seen: set[int] = set()
        for (line, (img_id, rel)), (_, (lab_id, cls)) in zip(images, labels, strict=True):
            if img_id in seen:
                raise DatasetCorruptError(f"{images_txt}, line {line}: image id {img_id} repeated")
            seen.add(img_id)
            if lab_id != img_id:  # PML pairs the files line by line and drops mismatches
                raise DatasetCorruptError(
                    f"{labels_txt}, line {line}: image id {lab_id}, but line {line} of "
                    f"{images_txt} is image {img_id}; both files must list the images in the "
                    "same order, each once"
                )
            if not 1 <= cls <= NUM_CLASSES_TOTAL:
                raise DatasetCorruptError(
                    f"{labels_txt}, line {line}: class id {cls} outside 1..{NUM_CLASSES_TOTAL} "
                    f"(the image would silently belong to no split){truncation_hint(labels_txt)}"
                )
            folder = rel.split("/", 1)[0]
            prefix = folder.split(".", 1)[0]
            if "." in folder and prefix.isdigit() and int(prefix) != cls:
                raise DatasetCorruptError(
                    f"{labels_txt}, line {line}: image {img_id} ({rel}) is labelled class {cls} "
                    f"but lies in the folder of class {int(prefix)}"
                    f"{truncation_hint(labels_txt) if line == labels[-1][0] else ''}"
                )
