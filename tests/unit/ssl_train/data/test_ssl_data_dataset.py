"""ManifestDataset: shapes and ranges, per-volume windows, the decoded-slice cache, determinism, workers,
and a smoke test on the real knee radiographs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from support.corpus import Corpus
from torch.utils.data import DataLoader

import ssl_train.data.dataset as dataset_module
from ssl_train.augment import MultiCropAugment
from ssl_train.data.dataset import ManifestDataset, SampleDecodeError
from ssl_train.data.scan import ManifestRow, ScanConfig, scan_corpus, write_manifest

KNEE_TRAIN = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "knee_kl224" / "train"


def _rows(corpus: Corpus, **config: Any) -> list[ManifestRow]:
    return scan_corpus(corpus.root, ScanConfig(**config)).rows


def _index_of(ds: ManifestDataset, name: str, frame: int = 0) -> int:
    for i in range(len(ds)):
        if ds.path(i).name == name and int(ds._frames[i]) == frame:
            return i
    raise KeyError(name)


def _refuse(*args: object, **kwargs: object) -> list[np.ndarray]:
    raise AssertionError("decoder called although the slice is cached")


def test_items_are_single_channel_unit_range(ssl_corpus: Corpus, tmp_path: Path) -> None:
    manifest = write_manifest(_rows(ssl_corpus), tmp_path / "manifest.csv")
    ds = ManifestDataset(manifest, split=None)
    assert len(ds) == 14
    for i in range(len(ds)):
        item = ds[i]
        image = item["image"]
        assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 1
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert item["index"] == i and item["family"] in ("radiograph", "mri")
    png = ds[_index_of(ds, "9001695L.png")]
    assert png["laterality"] == "L" and tuple(png["image"].shape) == (1, 20, 24)
    expected = np.asarray(Image.open(ssl_corpus.pngs[0]), dtype=np.float32) / 255.0
    np.testing.assert_allclose(png["image"][0].numpy(), expected, atol=1 / 65535)


def test_split_filter(ssl_corpus: Corpus) -> None:
    rows = _rows(ssl_corpus, val_fraction=0.5, split_salt="b")
    train, val = ManifestDataset(rows, split="train"), ManifestDataset(rows, split="val")
    assert len(train) + len(val) == len(rows)


def test_mr_slices_share_the_volume_window(ssl_corpus: Corpus) -> None:
    ds = ManifestDataset(_rows(ssl_corpus), split=None)
    mr = [i for i in range(len(ds)) if "series1" in str(ds.path(i))]
    means = sorted(float(ds.load_image(i).mean()) for i in mr)
    # slices get brighter along the series; a per-slice normalisation would make them all alike
    assert means[-1] - means[0] > 0.5
    assert max(float(ds.load_image(i).max()) for i in mr) == 1.0


def test_cache_hit_returns_the_identical_tensor_without_decoding(
    ssl_corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    ds = ManifestDataset(_rows(ssl_corpus), split=None, cache_dir=cache)
    index = _index_of(ds, "cr_knee.dcm")
    first = ds.load_image(index)
    assert len(list(cache.rglob("*.npy"))) == 1
    monkeypatch.setattr(dataset_module, "decode_frames", _refuse)
    second = ds.load_image(index)
    assert torch.equal(first, second)
    # a second dataset over the same cache (another epoch, another worker) also hits
    again = ManifestDataset(_rows(ssl_corpus), split=None, cache_dir=cache)
    assert torch.equal(again.load_image(_index_of(again, "cr_knee.dcm")), first)
    # PNGs are not cached by default, so the patched decoder is reached
    with pytest.raises(AssertionError, match="decoder called"):
        ds.load_image(_index_of(ds, "9001695R.png"))


def test_volume_decode_caches_every_slice_of_the_file(
    ssl_corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = ManifestDataset(_rows(ssl_corpus), split=None, cache_dir=tmp_path / "cache")
    first = ds.load_image(_index_of(ds, "sub-07_T2w.nii.gz", 2))
    monkeypatch.setattr(dataset_module, "decode_frames", _refuse)
    slices = [ds.load_image(_index_of(ds, "sub-07_T2w.nii.gz", f)) for f in range(5)]
    assert torch.equal(slices[2], first)
    assert float(slices[0].mean()) < float(slices[4].mean())


def test_changed_file_is_decoded_again(
    ssl_corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = ManifestDataset(_rows(ssl_corpus), split=None, cache_dir=tmp_path / "cache")
    index = _index_of(ds, "cr_knee.dcm")
    ds.load_image(index)
    stat = ssl_corpus.cr.stat()
    os.utime(ssl_corpus.cr, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    monkeypatch.setattr(dataset_module, "decode_frames", _refuse)
    with pytest.raises(AssertionError, match="decoder called"):
        ds.load_image(index)


def test_cached_and_uncached_images_are_bit_identical(ssl_corpus: Corpus, tmp_path: Path) -> None:
    rows = _rows(ssl_corpus)
    plain = ManifestDataset(rows, split=None, max_side=16)
    cached = ManifestDataset(rows, split=None, max_side=16, cache_dir=tmp_path / "cache", cache_raster=True)
    for _ in range(2):
        for i in range(len(plain)):
            a, b = plain.load_image(i), cached.load_image(i)
            assert torch.equal(a, b)
            assert max(a.shape[1:]) <= 16


def test_corrupt_cache_entry_is_replaced(ssl_corpus: Corpus, tmp_path: Path) -> None:
    ds = ManifestDataset(_rows(ssl_corpus), split=None, cache_dir=tmp_path / "cache")
    index = _index_of(ds, "cr_knee.dcm")
    first = ds.load_image(index)
    (entry,) = list((tmp_path / "cache").rglob("*.npy"))
    entry.write_bytes(b"garbage")
    assert torch.equal(ds.load_image(index), first)


def test_transform_is_deterministic_per_seed_and_epoch(ssl_corpus: Corpus) -> None:
    rows = _rows(ssl_corpus)
    aug = MultiCropAugment(global_size=32, local_size=16, n_local=2)
    a = ManifestDataset(rows, split=None, transform=aug, seed=3)
    b = ManifestDataset(rows, split=None, transform=aug, seed=3)
    index = _index_of(a, "cr_knee.dcm")
    crops_a, crops_b = a[index]["image"], b[index]["image"]
    assert all(torch.equal(x, y) for x, y in zip(crops_a["global"], crops_b["global"], strict=True))
    b.set_epoch(1)
    assert not torch.equal(crops_a["global"][0], b[index]["image"]["global"][0])


def test_dataloader_workers_give_the_same_batches(ssl_corpus: Corpus) -> None:
    rows = _rows(ssl_corpus)
    aug = MultiCropAugment(global_size=16, local_size=8, n_local=2)
    ds = ManifestDataset(rows, split=None, transform=aug, seed=1)

    def batches(workers: int) -> list[dict[str, Any]]:
        loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 4
    for s, p in zip(serial, parallel, strict=True):
        assert s["image"]["global"][0].shape == (len(s["index"]), 1, 16, 16)
        assert torch.equal(s["image"]["global"][0], p["image"]["global"][0])
        assert torch.equal(s["image"]["local"][1], p["image"]["local"][1])
        assert s["family"] == p["family"]


def test_decode_errors_raise_or_substitute(ssl_corpus: Corpus) -> None:
    rows = _rows(ssl_corpus)
    ssl_corpus.cr.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # broken after scanning
    strict = ManifestDataset(rows, split=None)
    index = _index_of(strict, "cr_knee.dcm")
    with pytest.raises(SampleDecodeError, match=r"cr_knee\.dcm"):
        strict[index]
    lenient = ManifestDataset(rows, split=None, on_decode_error="substitute")
    assert lenient[index]["index"] == (index + 1) % len(lenient)


@pytest.mark.parametrize(
    "kwargs", [{"max_side": 0}, {"seed": -1}, {"on_decode_error": "ignore"}, {"max_substitutions": 0}]
)
def test_bad_dataset_config_raises_value_error(ssl_corpus: Corpus, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ManifestDataset(_rows(ssl_corpus), **kwargs)


def test_real_knee_radiographs_smoke(tmp_path: Path) -> None:
    if not KNEE_TRAIN.is_dir():
        pytest.skip(f"shared knee data not found at {KNEE_TRAIN}")
    result = scan_corpus(KNEE_TRAIN, ScanConfig(max_files=4))
    assert len(result.rows) == 4 and result.truncated and not result.skipped
    assert {(r.format, r.anatomy, r.rows, r.cols) for r in result.rows} == {("png", "knee", 224, 224)}
    assert all(r.laterality in ("L", "R") for r in result.rows)
    ds = ManifestDataset(result.rows, split=None, transform=MultiCropAugment(), cache_dir=tmp_path / "c")
    for i in range(len(ds)):
        image = ds.load_image(i)
        expected = np.asarray(Image.open(ds.path(i)).convert("L"), dtype=np.float32) / 255.0
        np.testing.assert_allclose(image[0].numpy(), expected, atol=1 / 65535)
        crops = ds[i]["image"]
        assert [tuple(c.shape) for c in crops["global"]] == [(1, 224, 224)] * 2
        assert [tuple(c.shape) for c in crops["local"]] == [(1, 96, 96)] * 8
