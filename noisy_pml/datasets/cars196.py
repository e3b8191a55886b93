"""Stanford Cars196 (Krause et al., 3dRR 2013) with the metric-learning class split."""

from __future__ import annotations

import os

from .base import (
    DatasetCorruptError,
    DatasetNotFoundError,
    PMLImageDataset,
    read_index_file,
    truncation_hint,
)


class Cars196(PMLImageDataset):
    """Stanford Cars: classes 1-98 train, 99-196 test.

    Read through ``pytorch_metric_learning.datasets.Cars196``, i.e. from the Kaggle "car_data"
    layout: ``root/names.csv``, ``root/anno_train.csv``, ``root/anno_test.csv`` and
    ``root/car_data/car_data/{train,test}/<class name>/<file>``. Labels are remapped to 0..97
    within each split (0..195 for ``"train+test"``); images are PIL RGB. PML pools the official
    train and test halves before applying the class split (with the full dataset: 8,054 train and
    8,131 test images; with only the official training half, 4,052 and 4,092).

    Args: as [`CUB`][noisy_pml.datasets.CUB], with ``root`` the folder holding ``names.csv``
    (e.g. ``$NOISY_PML_DATA/cars196``).

    Raises:
        DatasetNotFoundError: ``root`` lacks the layout, or listed images are missing (a
            corrupted class id puts an image in the wrong class folder, which is caught here).
        DatasetCorruptError: ``names.csv`` without 196 names, or an ``anno_*.csv`` line that
            does not parse (6 comma-separated fields, the last an integer class id), a class id
            outside 1..196, or a file listed twice.
    """

    _pml_name = "Cars196"
    _first_class = {"train": 1, "test": 99, "train+test": 1}
    _num_classes = {"train": 98, "test": 98, "train+test": 196}
    _required = (
        "names.csv",
        "anno_train.csv",
        "anno_test.csv",
        os.path.join("car_data", "car_data"),
    )
    _layout_hint = (
        "expected the Kaggle 'car_data' layout read by pytorch_metric_learning.datasets.Cars196 "
        "(names.csv, anno_train.csv, anno_test.csv, car_data/car_data/<split>/<class>/<file>); "
        "set root to the folder containing names.csv"
    )

    def _validate_label_files(self) -> None:
        names_csv = os.path.join(self.root, "names.csv")
        with open(names_csv, encoding="utf-8") as f:
            names = [x.strip() for x in f.read().splitlines()]
        while names and not names[-1]:
            names.pop()
        if len(names) != 196 or not all(names):
            raise DatasetCorruptError(
                f"{names_csv} must list 196 class names, one per line; found {len(names)} lines"
                f"{' (some empty)' if not all(names) else ''}{truncation_hint(names_csv)}"
            )
        for split in ("train", "test"):
            path = os.path.join(self.root, f"anno_{split}.csv")
            rows = read_index_file(path, 6, int_fields=(5,), sep=",")
            seen: dict[str, int] = {}
            missing = []
            for line, fields in rows:
                file, cls = fields[0], fields[5]
                if not 1 <= cls <= len(names):
                    raise DatasetCorruptError(
                        f"{path}, line {line}: class id {cls} outside 1..{len(names)}"
                        f"{truncation_hint(path)}"
                    )
                if file in seen:
                    raise DatasetCorruptError(
                        f"{path}, line {line}: {file} is already listed on line {seen[file]}; "
                        "every image must be labelled once"
                    )
                seen[file] = line
                # every split's images, not only the requested one: a corrupted class id moves an
                # image to another split, where it would silently be missing
                rel = os.path.join(split, names[cls - 1].replace("/", "-"), file)
                if not os.path.isfile(os.path.join(self.root, "car_data", "car_data", rel)):
                    missing.append(f"{rel} (line {line}, class {cls})")
            if missing:
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise DatasetNotFoundError(
                    f"{path}: {len(missing)} listed image(s) not on disk: "
                    f"{', '.join(missing[:5])}{more}. A wrong class id on a line points to the "
                    f"wrong class folder{truncation_hint(path)}. {self._layout_hint}"
                )
