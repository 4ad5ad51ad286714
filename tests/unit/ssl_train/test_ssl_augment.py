"""MultiCropAugment: shapes, value ranges, seeding, laterality, modality-aware photometrics, validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ssl_train.augment import (
    MultiCropAugment,
    PhotometricConfig,
    crop_box,
    gaussian_blur,
    random_resized_crop,
)

QUIET = PhotometricConfig(jitter_prob=0.0, noise_prob=0.0)


def _image(height: int = 150, width: int = 130, seed: int = 0) -> torch.Tensor:
    return torch.rand((1, height, width), generator=torch.Generator().manual_seed(seed))


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quiet(**kwargs: Any) -> MultiCropAugment:
    """Geometry only: full-image crops, no jitter, blur or noise."""
    defaults: dict[str, Any] = {
        "global_size": 40,
        "local_size": 20,
        "n_local": 2,
        "global_scale": (1.0, 1.0),
        "local_scale": (1.0, 1.0),
        "ratio": (1.0, 1.0),
        "photometric": {"other": QUIET},
        "global_blur_probs": (0.0, 0.0),
        "local_blur_prob": 0.0,
    }
    defaults.update(kwargs)
    return MultiCropAugment(**defaults)


def test_default_shapes_and_value_range() -> None:
    aug = MultiCropAugment()
    assert (aug.global_size, aug.local_size, aug.n_local, aug.hflip_prob) == (224, 96, 8, 0.0)
    out = aug(_image(), generator=_seeded(0))
    assert set(out) == {"global", "local"}
    assert [tuple(t.shape) for t in out["global"]] == [(1, 224, 224)] * 2
    assert [tuple(t.shape) for t in out["local"]] == [(1, 96, 96)] * 8
    low, high = aug.value_range
    assert (low, high) == (-2.0, 2.0)
    for crop in out["global"] + out["local"]:
        assert crop.dtype == torch.float32
        assert low <= float(crop.min()) and float(crop.max()) <= high


@pytest.mark.parametrize("family", ["radiograph", "mri", "ct", "other", "unheard-of"])
def test_same_seed_same_crops_different_seed_different_crops(family: str) -> None:
    aug = MultiCropAugment(global_size=64, local_size=32, n_local=3)
    image = _image()
    a = aug(image, generator=_seeded(7), family=family)
    b = aug(image, generator=_seeded(7), family=family)
    c = aug(image, generator=_seeded(8), family=family)
    for key in ("global", "local"):
        assert all(torch.equal(x, y) for x, y in zip(a[key], b[key], strict=True))
        assert all(not torch.equal(x, z) for x, z in zip(a[key], c[key], strict=True))


def test_no_flip_when_respecting_laterality() -> None:
    ramp = torch.linspace(0.0, 1.0, 60).repeat(50, 1)[None]  # dark left, bright right
    aug = _quiet()  # respect_laterality=True by default
    for seed in range(20):
        out = aug(ramp, generator=_seeded(seed))
        for crop in out["global"] + out["local"]:
            assert float(crop[0, :, -1].mean()) > float(crop[0, :, 0].mean())
    flipping = _quiet(respect_laterality=False, hflip_prob=1.0)
    crop = flipping(ramp, generator=_seeded(0))["global"][0]
    assert float(crop[0, :, -1].mean()) < float(crop[0, :, 0].mean())
    assert MultiCropAugment(respect_laterality=False).hflip_prob == 0.5


def test_normalisation_is_applied_last() -> None:
    image = _image(40, 40)
    aug = _quiet(mean=0.3, std=0.5)
    crop = aug(image, generator=_seeded(0))["global"][0]
    torch.testing.assert_close(crop * 0.5 + 0.3, image, atol=1e-5, rtol=0)


def test_photometric_settings_follow_the_family() -> None:
    noisy = PhotometricConfig(jitter_prob=0.0, noise_prob=1.0, noise_std=(0.1, 0.1), noise="rician")
    aug = _quiet(photometric={"other": QUIET, "mri": noisy})
    image = torch.full((1, 40, 40), 0.5)
    radiograph = aug(image, generator=_seeded(0), family="radiograph")["global"][0]
    mri = aug(image, generator=_seeded(0), family="mri")["global"][0]
    assert float(radiograph.std()) < 1e-5
    assert float(mri.std()) > 0.1  # noise of std 0.1 -> 0.4 after dividing by std 0.25
    # Rician noise is biased upwards on a dark background
    dark = aug(torch.zeros((1, 40, 40)), generator=_seeded(0), family="mri")["global"][0] * 0.25 + 0.5
    assert float(dark.mean()) > 0.05


def test_jitter_changes_intensity_and_stays_in_range() -> None:
    strong = PhotometricConfig(
        jitter_prob=1.0, brightness=0.5, contrast=0.5, gamma=(0.5, 2.0), noise_prob=0.0
    )
    aug = _quiet(photometric={"other": strong})
    image = _image(40, 40)
    crops = [aug(image, generator=_seeded(s))["global"][0] * 0.25 + 0.5 for s in range(5)]
    assert len({round(float(c.mean()), 4) for c in crops}) == 5
    assert all(float(c.min()) >= 0.0 and float(c.max()) <= 1.0 + 1e-6 for c in crops)


def test_crop_box_respects_scale_and_bounds() -> None:
    generator = _seeded(0)
    for _ in range(200):
        top, left, h, w = crop_box(100, 80, (0.05, 0.32), (3 / 4, 4 / 3), generator)
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 80
        assert 0.03 <= h * w / 8000 <= 0.36
    # impossible ratio falls back to a central crop
    assert crop_box(10, 100, (1.0, 1.0), (1.0, 1.0), generator) == (0, 45, 10, 10)


def test_random_resized_crop_and_blur_primitives() -> None:
    image = _image(30, 30)
    same = random_resized_crop(image, 30, (1.0, 1.0), (1.0, 1.0), _seeded(0))
    torch.testing.assert_close(same, image, atol=1e-5, rtol=0)
    small = random_resized_crop(image, 7, (0.5, 0.5), generator=_seeded(0))
    assert tuple(small.shape) == (1, 7, 7) and float(small.min()) >= 0.0 and float(small.max()) <= 1.0
    flat = torch.full((1, 12, 9), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)
    blurred = gaussian_blur(image, 2.0)
    assert float(blurred.std()) < float(image.std())
    assert abs(float(blurred.mean()) - float(image.mean())) < 0.02


def test_input_shapes() -> None:
    aug = _quiet()
    assert tuple(aug(_image()[0], generator=_seeded(0))["global"][0].shape) == (1, 40, 40)
    for bad in (torch.rand(3, 20, 20), torch.rand(1, 1, 20, 20), torch.rand(1, 0, 5)):
        with pytest.raises(ValueError):
            aug(bad, generator=_seeded(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"respect_laterality": True, "hflip_prob": 0.5},
        {"global_scale": (0.5, 0.2)},
        {"local_scale": (0.0, 0.3)},
        {"global_size": 0},
        {"n_local": -1},
        {"n_global": 3},
        {"std": 0.0},
        {"local_blur_prob": 1.5},
        {"photometric": {"radiograph": PhotometricConfig()}},
    ],
)
def test_bad_configuration_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MultiCropAugment(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"jitter_prob": 2.0}, {"brightness": 1.0}, {"gamma": (2.0, 1.0)}, {"noise": "poisson"}]
)
def test_bad_photometric_config_raises_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PhotometricConfig(**kwargs)
