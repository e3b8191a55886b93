"""Feature cache: keyed by everything that changes the features, atomic, aligned by path."""

import pytest
import torch

from noisy_pml.utils.feature_cache import ViewSpec, cache_key, cache_path, extract_view, load_views

PATHS = ["/data/a/001.Albatross/x1.jpg", "/data/a/001.Albatross/x2.jpg", "/data/a/002.Auk/y.jpg"]


def _spec(**kw):
    base = dict(dataset="cub", split="train", backbone="efficientnet_lite0", image_size=224)
    return ViewSpec(**{**base, **kw})


@pytest.mark.parametrize(
    "change",
    [
        {"dataset": "cars196"},
        {"split": "test"},
        {"backbone": "resnet50"},
        {"image_size": 160},
        {"recipe": "aug"},
    ],
)
def test_key_changes_with_what_changes_the_features(change):
    assert cache_key(_spec(**change), PATHS) != cache_key(_spec(), PATHS)


def test_key_of_augmented_views_depends_on_view_index_and_seed():
    aug = _spec(recipe="aug")
    assert cache_key(aug, PATHS) != cache_key(_spec(recipe="aug", view=1), PATHS)
    assert cache_key(aug, PATHS) != cache_key(_spec(recipe="aug", seed=1), PATHS)
    # the centre crop is deterministic: view index and seed do not matter
    assert cache_key(_spec(), PATHS) == cache_key(_spec(view=3, seed=5), PATHS)


def test_key_depends_on_the_image_set_not_its_order_or_root():
    assert cache_key(_spec(), PATHS) == cache_key(_spec(), PATHS[::-1])
    moved = [p.replace("/data/a", "/elsewhere") for p in PATHS]
    assert cache_key(_spec(), moved) == cache_key(_spec(), PATHS)
    assert cache_key(_spec(), PATHS[:2]) != cache_key(_spec(), PATHS)


def test_unknown_recipe_or_backbone_is_rejected():
    with pytest.raises(ValueError, match="recipe"):
        _spec(recipe="blur")
    with pytest.raises(ValueError, match="backbone"):
        _spec(backbone="vgg")


class _MeanColour(torch.nn.Module):
    """Stands in for a backbone: the mean of each channel (3-d features)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _images(tmp_path):
    from PIL import Image

    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        d = tmp_path / f"{i:03d}.cls"
        d.mkdir()
        p = d / f"img{i}.png"
        Image.new("RGB", (40, 50), colour).save(p)
        paths.append(str(p))
    return paths


def test_extract_writes_atomically_and_load_aligns_rows_by_path(tmp_path):
    paths = _images(tmp_path)
    spec = _spec(image_size=32)
    out = extract_view(
        spec, paths, tmp_path / "c", model=_MeanColour(), progress=False, num_workers=0
    )
    assert out == cache_path(spec, paths, tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == [out.name]  # no temp file left
    feats, seconds = load_views([spec], paths[::-1], tmp_path / "c")
    assert feats.shape == (3, 1, 3) and seconds >= 0
    assert torch.argmax(feats[:, 0], dim=1).tolist() == [2, 1, 0]  # blue, green, red


def test_cached_view_is_not_recomputed(tmp_path):
    paths = _images(tmp_path)
    spec = _spec(image_size=32)
    first = extract_view(spec, paths, tmp_path, model=_MeanColour(), progress=False, num_workers=0)
    stamp = first.stat().st_mtime_ns

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("recomputed a cached view")

    assert extract_view(spec, paths, tmp_path, model=Boom(), progress=False) == first
    assert first.stat().st_mtime_ns == stamp


def test_augmented_views_are_reproducible(tmp_path):
    paths = _images(tmp_path)
    spec = _spec(image_size=32, recipe="aug", view=1)
    a = extract_view(
        spec, paths, tmp_path / "a", model=_MeanColour(), progress=False, num_workers=0
    )
    b = extract_view(
        spec, paths, tmp_path / "b", model=_MeanColour(), progress=False, num_workers=0
    )
    assert torch.equal(torch.load(a)["features"], torch.load(b)["features"])


def _tiny_cache(tmp_path):
    paths = _images(tmp_path)
    spec = _spec(backbone="tiny_cnn", image_size=32)
    cache = tmp_path / "cache"
    first, _ = load_views([spec], paths, cache, progress=False, num_workers=0)
    return paths, spec, cache, first


def test_truncated_cache_file_is_moved_aside_and_rebuilt_with_a_warning(tmp_path):
    paths, spec, cache, first = _tiny_cache(tmp_path)
    path = cache_path(spec, paths, cache)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again, _ = load_views([spec], paths, cache, progress=False, num_workers=0)
    assert torch.equal(again, first)
    assert torch.load(path, weights_only=False)["features"].shape == (3, 16)  # rebuilt
    assert len(list(cache.glob("*.corrupt-*"))) == 1  # the bad file kept for inspection


def test_cache_file_with_altered_features_fails_its_checksum_and_is_rebuilt(tmp_path):
    paths, spec, cache, first = _tiny_cache(tmp_path)
    path = cache_path(spec, paths, cache)
    blob = torch.load(path, weights_only=False)
    blob["features"][0, 0] += 1
    torch.save(blob, path)
    with pytest.warns(RuntimeWarning, match="checksum"):
        again, _ = load_views([spec], paths, cache, progress=False, num_workers=0)
    assert torch.equal(again, first)


def test_cache_file_written_without_checksum_is_still_used(tmp_path):
    """Files written before checksums were stored stay valid (no re-extraction)."""
    paths, spec, cache, first = _tiny_cache(tmp_path)
    path = cache_path(spec, paths, cache)
    blob = torch.load(path, weights_only=False)
    del blob["sha1"]
    blob["features"][0, 0] += 1  # a change only a checksum could reveal
    torch.save(blob, path)
    again, _ = load_views([spec], paths, cache, progress=False, num_workers=0)
    assert not torch.equal(again, first)  # read as it is, not re-extracted
