"""CSVDataset: path,label[,split] rows, class-disjoint unless the file says otherwise."""

import pytest

from noisy_pml.datasets import CSVDataset, DatasetNotFoundError, get_dataset


def _csv(folder, text):
    path = folder / "data.csv"
    path.write_text(text)
    return path


def _rows(image_folder, split=None):
    lines = ["path,label" + (",split" if split else "")]
    for p in sorted(image_folder.glob("*/*.png")):
        extra = f",{split(p.parent.name)}" if split else ""
        lines.append(f"{p.relative_to(image_folder)},{p.parent.name}{extra}")
    return "\n".join(lines) + "\n"


def test_relative_paths_and_class_disjoint_split(image_folder):
    path = _csv(image_folder, _rows(image_folder))
    train, test = CSVDataset(path), CSVDataset(path, split="test")
    assert train.class_names == ["apple", "banana"] and test.class_names == ["cherry", "date"]
    assert len(train) == 8 and train.load_sample(0).mode == "RGB"
    assert get_dataset(f"csv:{path}", split="test").class_names == ["cherry", "date"]


def test_split_column_decides_and_validation_counts_as_test(image_folder):
    rows = _rows(image_folder, lambda c: "validation" if c == "apple" else "train")
    path = _csv(image_folder, rows)
    assert CSVDataset(path, split="test").class_names == ["apple"]
    assert CSVDataset(path).class_names == ["banana", "cherry", "date"]


def test_noise_interface(image_folder):
    ds = CSVDataset(_csv(image_folder, _rows(image_folder)), noise="symmetric:0.5")
    assert int(ds.noise_mask.sum()) == 4 and ds.noise_result is not None


def test_missing_columns_are_named(image_folder):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]; found \['path', 'y'\]"):
        CSVDataset(_csv(image_folder, "path,y\napple/0.png,a\n"))


def test_missing_image_and_bad_split_name_the_line(image_folder):
    with pytest.raises(DatasetNotFoundError, match="line 2: image file .*nope.png"):
        CSVDataset(_csv(image_folder, "path,label\nnope.png,a\n"))
    with pytest.raises(ValueError, match="line 2: split 'dev'"):
        CSVDataset(_csv(image_folder, "path,label,split\napple/0.png,a,dev\n"))
