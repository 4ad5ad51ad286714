"""DINO / DINOv2 / DINOv3 multi-crop augmentation for single-channel medical images.

References
----------
* Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021,
  arXiv:2104.14294, Sec. 3.1 and Appendix D (multi-crop: two global views, several local views; the
  teacher sees only the global views).
* Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", arXiv:2304.07193.
* Siméoni et al., "DINOv3", arXiv:2508.10104.

Defaults and why
----------------
* Crops: 2 global crops of 224 px with area scale ``(0.32, 1.0)`` and 8 local crops of 96 px with scale
  ``(0.05, 0.32)``, aspect ratio log-uniform in ``(3/4, 4/3)`` -- the ``crops`` section of DINOv3's
  ``ssl_default_config.yaml`` (the same as DINOv2's). With patch 16 they give 14x14 and 6x6 token grids.
  DINOv3's ViT-7B pretraining config (``dinov3_vit7b16_pretrain.yaml``) keeps the scales and the 8 local
  crops but uses 256 / 112 px crops (16x16 and 7x7 tokens) and turns horizontal flips off; pass
  ``global_size=256, local_size=112`` to follow it.
* Resampling: integer crop box, then an antialiased bicubic resize (``torch.nn.functional.interpolate``
  with ``antialias=True``, as PIL's bicubic resize in the reference pipelines), clamped to ``[0, 1]``.
* Blur: Gaussian, sigma uniform in ``(0.1, 2.0)`` output pixels, with DINO's asymmetric probabilities:
  1.0 on the first global crop, 0.1 on the second, 0.5 on each local crop.
* Photometric jitter (probability 0.8, as DINO's colour jitter): gamma (log-uniform), contrast around the
  crop mean, brightness (multiplicative) -- the intensity changes that exposure, detector processing and MR
  coil / sequence settings really produce. Per modality family (see :data:`DEFAULT_PHOTOMETRIC`): MR gets
  wider jitter (its signal has no absolute unit) and Rician noise (magnitude MR noise); radiographs,
  CT and everything else get narrower jitter and additive Gaussian noise.
* No hue / saturation jitter, no random grayscale and no solarization by default. Those are natural-image
  augmentations for RGB photographs; OrthoFoundation's released trainer applies them (with ImageNet
  mean / std) to radiographs read as RGB (see REFERENCE.md, "OrthoFoundation ... Augmentation"). On a
  single-channel image hue and saturation do not exist, and solarization inverts the bright bone / dark
  soft-tissue relationship the encoder should learn. Solarization can be switched on
  (``solarize_prob``, applied to the second global crop as in DINO) for ablations.
* Horizontal flips: off when ``respect_laterality=True`` (the default) -- a flipped left knee looks like a
  right knee, so flips would teach the encoder to ignore laterality (DINOv3's ViT-7B recipe also trains
  without flips). With ``respect_laterality=False`` the flip probability defaults to DINO's 0.5.
* Normalisation at the very end: ``(x - mean) / std`` with ``mean=0.5, std=0.25`` -- a grayscale
  normalisation that maps ``[0, 1]`` onto ``[-2, 2]``; ImageNet's per-channel RGB statistics describe
  natural photographs, not radiographs. (When continuing from a natural-image checkpoint, 0.5 / 0.25 is
  close to the channel mean of ImageNet's values, 0.449 / 0.226.)

All randomness comes from the ``torch.Generator`` passed to :meth:`MultiCropAugment.__call__`, so one seed
gives the same crops on any machine and in any DataLoader worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional

__all__ = [
    "DEFAULT_PHOTOMETRIC",
    "MRI_PHOTOMETRIC",
    "RADIOGRAPH_PHOTOMETRIC",
    "MultiCropAugment",
    "PhotometricConfig",
    "crop_box",
    "gaussian_blur",
    "random_resized_crop",
]


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    if not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")


def _check_prob(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class PhotometricConfig:
    """Intensity augmentation of one modality family (applied independently to every crop).

    With probability ``jitter_prob``: gamma ``x**g``, ``g`` log-uniform in ``gamma``; contrast
    ``(x - mean) * c + mean``, ``c`` uniform in ``[1 - contrast, 1 + contrast]``; brightness ``x * b``, ``b``
    uniform in ``[1 - brightness, 1 + brightness]`` (each clamped to ``[0, 1]``). With probability
    ``noise_prob`` (after blur): noise of standard deviation uniform in ``noise_std``, additive Gaussian or
    Rician (``sqrt((x + n1)^2 + n2^2)``, the magnitude of complex Gaussian noise, as in magnitude MR).
    """

    jitter_prob: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_prob: float = 0.2
    noise_std: tuple[float, float] = (0.0, 0.03)
    noise: Literal["gaussian", "rician"] = "gaussian"

    def __post_init__(self) -> None:
        _check_prob("jitter_prob", self.jitter_prob)
        _check_prob("noise_prob", self.noise_prob)
        if not (0.0 <= self.brightness < 1.0):
            raise ValueError(f"brightness must be in [0, 1), got {self.brightness}")
        if not (0.0 <= self.contrast < 1.0):
            raise ValueError(f"contrast must be in [0, 1), got {self.contrast}")
        _check_range("gamma", self.gamma, 1e-3, 1e3)
        _check_range("noise_std", self.noise_std, 0.0, 1.0)
        if self.noise not in ("gaussian", "rician"):
            raise ValueError(f"noise must be 'gaussian' or 'rician', got {self.noise!r}")


#: Radiographs (and CT / other): moderate exposure-like jitter, additive Gaussian noise.
RADIOGRAPH_PHOTOMETRIC = PhotometricConfig()
#: MR: wider jitter (arbitrary signal units), Rician noise.
MRI_PHOTOMETRIC = PhotometricConfig(
    brightness=0.3, contrast=0.4, gamma=(0.6, 1.6), noise_prob=0.3, noise_std=(0.0, 0.04), noise="rician"
)
#: Family -> photometric settings; ``other`` is the fallback for families not listed.
DEFAULT_PHOTOMETRIC: Mapping[str, PhotometricConfig] = {
    "radiograph": RADIOGRAPH_PHOTOMETRIC,
    "mri": MRI_PHOTOMETRIC,
    "ct": RADIOGRAPH_PHOTOMETRIC,
    "other": RADIOGRAPH_PHOTOMETRIC,
}


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


def _chance(p: float, generator: torch.Generator | None) -> bool:
    """One Bernoulli(p) draw (always consumes one random number, so streams do not depend on p)."""
    return float(torch.rand((), generator=generator, dtype=torch.float64)) < p


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high)``."""
    return int(torch.randint(low, high, (), generator=generator))


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """A random crop ``(top, left, h, w)`` covering a fraction of the area uniform in ``scale``.

    The aspect ratio ``w / h`` is log-uniform in ``ratio``; up to 10 draws, then the central crop with the
    ratio clamped into ``ratio`` (the Inception-style random resized crop used by DINO).
    """
    area = float(height * width)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(0, height - h + 1, generator)
            left = _randint(0, width - w + 1, generator)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, max(1, min(height, round(width / ratio[0])))
    elif in_ratio > ratio[1]:
        h, w = height, max(1, min(width, round(height * ratio[1])))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    image: Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop ``image`` ``[1, H, W]`` with :func:`crop_box` and resize to ``[1, size, size]``.

    Bicubic, antialiased when shrinking (``interpolate(..., antialias=True)``), clamped to ``[0, 1]``.
    """
    _, height, width = image.shape
    top, left, h, w = crop_box(height, width, scale, ratio, generator)
    crop = image[:, top : top + h, left : left + w]
    out = functional.interpolate(
        crop[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return out[0].clamp_(0.0, 1.0)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[1, H, W]`` (kernel radius ``ceil(3 sigma)``, replicated borders)."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-(offsets**2) / (2.0 * sigma * sigma))
    kernel = kernel / kernel.sum()
    x = image[None]
    x = functional.conv2d(
        functional.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1)
    )
    x = functional.conv2d(
        functional.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1)
    )
    return x[0]


def _jitter(x: Tensor, cfg: PhotometricConfig, generator: torch.Generator | None) -> Tensor:
    gamma = math.exp(_uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1]), generator))
    contrast = _uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast, generator)
    brightness = _uniform(1.0 - cfg.brightness, 1.0 + cfg.brightness, generator)
    x = x.clamp(0.0, 1.0).pow(gamma)
    mean = x.mean()
    x = ((x - mean) * contrast + mean).clamp(0.0, 1.0)
    return (x * brightness).clamp(0.0, 1.0)


def _noise(x: Tensor, cfg: PhotometricConfig, generator: torch.Generator | None) -> Tensor:
    std = _uniform(cfg.noise_std[0], cfg.noise_std[1], generator)
    real = torch.randn(x.shape, generator=generator, dtype=x.dtype) * std
    if cfg.noise == "gaussian":
        return (x + real).clamp(0.0, 1.0)
    imaginary = torch.randn(x.shape, generator=generator, dtype=x.dtype) * std
    return torch.sqrt((x + real) ** 2 + imaginary**2).clamp(0.0, 1.0)


class MultiCropAugment:
    """Multi-crop views of one grayscale image ``[1, H, W]`` in ``[0, 1]`` (see the module docstring).

    Args:
        global_size: side of the global crops (teacher and student).
        local_size: side of the local crops (student only).
        n_local: number of local crops (0 allowed).
        global_scale: area fraction range of global crops.
        local_scale: area fraction range of local crops.
        n_global: number of global crops (DINO uses 2; ``len(global_blur_probs)`` must match).
        ratio: aspect ratio range (log-uniform) of all crops.
        respect_laterality: never flip (left stays left). Contradicts a positive ``hflip_prob``.
        hflip_prob: horizontal flip probability; ``None``: 0 with ``respect_laterality``, else 0.5.
        photometric: family -> :class:`PhotometricConfig`; must contain ``other`` (the fallback).
        global_blur_probs: Gaussian blur probability of each global crop.
        local_blur_prob: Gaussian blur probability of each local crop.
        blur_sigma: blur sigma range in output pixels.
        solarize_prob: solarization probability of the second global crop (0: off).
        mean: normalisation mean (grayscale).
        std: normalisation standard deviation (grayscale).

    Raises:
        ValueError: for any inconsistent or out-of-range setting.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        *,
        n_global: int = 2,
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        respect_laterality: bool = True,
        hflip_prob: float | None = None,
        photometric: Mapping[str, PhotometricConfig] | None = None,
        global_blur_probs: Sequence[float] = (1.0, 0.1),
        local_blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_prob: float = 0.0,
        mean: float = 0.5,
        std: float = 0.25,
    ) -> None:
        if global_size < 1 or local_size < 1:
            raise ValueError(f"crop sizes must be >= 1, got global {global_size}, local {local_size}")
        if n_global < 1:
            raise ValueError(f"n_global must be >= 1, got {n_global}")
        if n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}")
        _check_range("global_scale", global_scale, 1e-6, 1.0)
        _check_range("local_scale", local_scale, 1e-6, 1.0)
        if global_scale[0] <= 0 or local_scale[0] <= 0:
            raise ValueError("crop scales must be > 0")
        _check_range("ratio", ratio, 1e-3, 1e3)
        if hflip_prob is None:
            hflip_prob = 0.0 if respect_laterality else 0.5
        _check_prob("hflip_prob", hflip_prob)
        if respect_laterality and hflip_prob > 0:
            raise ValueError("respect_laterality=True forbids horizontal flips: set hflip_prob to 0 or None")
        if len(global_blur_probs) != n_global:
            raise ValueError(
                f"global_blur_probs has {len(global_blur_probs)} values for n_global={n_global} crops"
            )
        for p in global_blur_probs:
            _check_prob("global_blur_probs", p)
        _check_prob("local_blur_prob", local_blur_prob)
        _check_range("blur_sigma", blur_sigma, 0.0, 1e3)
        _check_prob("solarize_prob", solarize_prob)
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        if not (std > 0 and math.isfinite(std)):
            raise ValueError(f"std must be > 0, got {std}")
        photometric = dict(DEFAULT_PHOTOMETRIC if photometric is None else photometric)
        if "other" not in photometric:
            raise ValueError("photometric must contain an 'other' entry (the fallback family)")
        self.global_size = global_size
        self.local_size = local_size
        self.n_global = n_global
        self.n_local = n_local
        self.global_scale = global_scale
        self.local_scale = local_scale
        self.ratio = ratio
        self.respect_laterality = respect_laterality
        self.hflip_prob = hflip_prob
        self.photometric = photometric
        self.global_blur_probs = tuple(float(p) for p in global_blur_probs)
        self.local_blur_prob = local_blur_prob
        self.blur_sigma = blur_sigma
        self.solarize_prob = solarize_prob
        self.mean = mean
        self.std = std

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(global={self.n_global}x{self.global_size} {self.global_scale}, "
            f"local={self.n_local}x{self.local_size} {self.local_scale}, hflip={self.hflip_prob}, "
            f"mean={self.mean}, std={self.std})"
        )

    @property
    def value_range(self) -> tuple[float, float]:
        """The range of the normalised outputs: ``((0 - mean) / std, (1 - mean) / std)``."""
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std

    def _view(
        self,
        image: Tensor,
        size: int,
        scale: tuple[float, float],
        blur_prob: float,
        solarize_prob: float,
        cfg: PhotometricConfig,
        generator: torch.Generator | None,
    ) -> Tensor:
        x = random_resized_crop(image, size, scale, self.ratio, generator)
        if _chance(self.hflip_prob, generator):
            x = x.flip(-1)
        if _chance(cfg.jitter_prob, generator):
            x = _jitter(x, cfg, generator)
        if _chance(blur_prob, generator):
            x = gaussian_blur(x, _uniform(self.blur_sigma[0], self.blur_sigma[1], generator))
        if _chance(solarize_prob, generator):
            x = torch.where(x >= 0.5, 1.0 - x, x)
        if _chance(cfg.noise_prob, generator):
            x = _noise(x, cfg, generator)
        return ((x.clamp(0.0, 1.0) - self.mean) / self.std).contiguous()

    def __call__(
        self, image: Tensor, *, generator: torch.Generator | None = None, family: str = "radiograph"
    ) -> dict[str, list[Tensor]]:
        """Crops of ``image`` (``[1, H, W]`` or ``[H, W]``, values in ``[0, 1]``).

        Returns:
            ``{"global": n_global tensors [1, global_size, global_size], "local": n_local tensors
            [1, local_size, local_size]}``, float32, normalised.

        Raises:
            ValueError: for a tensor that is not a single-channel 2-D image.
        """
        if not isinstance(image, Tensor):
            raise ValueError(f"expected a torch.Tensor, got {type(image).__name__}")
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a single-channel image [1, H, W], got shape {tuple(image.shape)}")
        if image.shape[1] < 1 or image.shape[2] < 1:
            raise ValueError(f"empty image of shape {tuple(image.shape)}")
        image = image.to(torch.float32).clamp(0.0, 1.0)
        cfg = self.photometric.get(family, self.photometric["other"])
        global_views = [
            self._view(
                image,
                self.global_size,
                self.global_scale,
                self.global_blur_probs[i],
                self.solarize_prob if i == 1 else 0.0,
                cfg,
                generator,
            )
            for i in range(self.n_global)
        ]
        local_views = [
            self._view(image, self.local_size, self.local_scale, self.local_blur_prob, 0.0, cfg, generator)
            for _ in range(self.n_local)
        ]
        return {"global": global_views, "local": local_views}
