"""Find each knee joint on a full-size radiograph and cut it the way the KL model was trained (issue 14).

Real PACS send whole films (both knees on one frontal film, single-knee views, laterals, two-view plates,
2000-3000 px); the KL head learned from Chen 2018 crops: one joint, cut from OAI films by a joint detector.
This module turns a film into joints:

* **The film at working scale.** The film is resized so that its long side is :data:`WORK_LONG_SIDE`
  pixels -- or, when Pixel Spacing / Imager Pixel Spacing is known (PS3.3 10.7.1.3), to
  :data:`WORK_MM_PER_PX` (clamped to :data:`WORK_MAX_SIDE`) -- and padded with black to the encoder's stride.
* **One pass of the shipped encoder**, tapped at stride 16 and at its last feature map (stride 32), and a
  small convolutional head (:class:`LocaliserHead`, a few hundred kB, trained by ``heads localiser`` on
  our annotated development films): a heat map of joint centres (the middle of the tibial plateau at the
  joint line), a sub-cell offset and the plateau width at every stride-16 cell, and a view classifier on
  the pooled last map (frontal, lateral, two-view plate, other).
* **Peaks** of the heat map above the bundle's threshold (at most two, at least one plateau apart) are
  the joints; the plateau width gives the scale.
* **The Chen crop** (:func:`chen_box`): a square centred on the plateau, its side the plateau width over
  :data:`CHEN_PLATEAU_FRACTION`, the joint line at :data:`CHEN_JOINT_ROW` of its height -- the geometry of
  the Chen crops, measured by eye on training crops (``experiments/knee_fullsize/ANNOTATION.md``).

Physical units: from the header's spacing where present (``scale_source`` names the attribute), else
estimated from the anatomy -- the plateau taken as :data:`ADULT_PLATEAU_MM` wide -- and marked
``estimated``. Coordinates are SCOORD's (PS3.3 C.18.6.1.2): ``(column, row)``, ``(0, 0)`` the top-left
corner of the top-left pixel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from torch import Tensor, nn

from orthonode.errors import OrthonodeError

__all__ = [
    "ADULT_PLATEAU_MM",
    "CHEN_JOINT_ROW",
    "CHEN_PLATEAU_FRACTION",
    "VIEWS",
    "KneeJoint",
    "Localisation",
    "Localiser",
    "LocaliserCard",
    "LocaliserHead",
    "chen_box",
    "cut_box",
    "encoder_taps",
    "image_taps",
    "is_joint_crop",
    "working_image",
]

LOCALISER_FORMAT = "orthonode-localiser/1"
LOCALISER_SUBDIR = "localiser"
#: Tibial plateau width over the side of a Chen 2018 crop, and the joint line's row over its height.
CHEN_PLATEAU_FRACTION = 0.85
CHEN_JOINT_ROW = 0.60
#: Mean adult mediolateral width of the tibial plateau, mm (about 70 mm in women, 80 in men: e.g.
#: Erkocak et al. 2016, Knee Surg Sports Traumatol Arthrosc 24:2766): the scale when the header has none.
ADULT_PLATEAU_MM = 76.0
#: Working scale: the long side without spacing (a 14 x 17 inch film at ~1.1 mm/px), or mm per pixel.
WORK_LONG_SIDE = 384
WORK_MM_PER_PX = 1.125
WORK_MAX_SIDE = 640
#: The stride of the heat map (the encoder tap it is computed at).
MAP_STRIDE = 16
#: The views the image classifier knows (the header decides first: orthonode.inference.views).
VIEWS = ("frontal", "lateral", "plate", "other")
#: A joint whose Chen box lies more than this fraction outside the film is partial (cut by the edge).
PARTIAL_OUTSIDE = 0.12
#: An image this small and this square is already a joint crop (the Chen layout): it passes through.
CROP_MAX_SIDE = 512
CROP_MAX_ASPECT = 2.0


class LocaliserError(OrthonodeError):
    """The localiser bundle is missing, malformed, or belongs to another encoder."""


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class KneeJoint:
    """One knee joint on a film, in source pixels (SCOORD coordinates: ``(column, row)``).

    ``centre``: the middle of the tibial plateau at the joint line; ``plateau_px``: the plateau's width;
    ``box``: the Chen crop ``(x0, y0, x1, y1)`` (may reach past the film's edge: :attr:`partial`);
    ``confidence``: the heat map's peak in ``[0, 1]``; ``mm_per_px`` and ``scale_source``: the scale at the
    joint and where it came from (``PixelSpacing``, ``ImagerPixelSpacing`` or ``estimated``).
    """

    centre: tuple[float, float]
    plateau_px: float
    box: tuple[float, float, float, float]
    confidence: float
    mm_per_px: float
    scale_source: str
    partial: bool = False

    @property
    def plateau_mm(self) -> float:
        return self.plateau_px * self.mm_per_px

    def image_half(self, width: int) -> str:
        """``"left"`` or ``"right"``: the half of the image (as stored) the joint's centre lies in."""
        return "left" if self.centre[0] < width / 2 else "right"


@dataclass(frozen=True)
class Localisation:
    """What the localiser found on one film: its joints (left to right on the image), the image's view
    as the classifier sees it (with every view's probability), and, when there is no joint, why."""

    joints: tuple[KneeJoint, ...]
    view: str
    view_probabilities: Mapping[str, float]
    reason: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------------------- geometry
def chen_box(centre: tuple[float, float], plateau_px: float) -> tuple[float, float, float, float]:
    """The Chen crop of a joint: side ``plateau / CHEN_PLATEAU_FRACTION``, horizontally centred on the
    plateau, the joint line at ``CHEN_JOINT_ROW`` of the height."""
    side = plateau_px / CHEN_PLATEAU_FRACTION
    x, y = centre
    top = y - CHEN_JOINT_ROW * side
    return (x - side / 2, top, x + side / 2, top + side)


def outside_fraction(box: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    """The fraction of ``box``'s area that lies outside an image of ``shape`` = ``(rows, cols)``."""
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    if area <= 0:
        return 1.0
    inside_w = max(0.0, min(x1, shape[1]) - max(x0, 0.0))
    inside_h = max(0.0, min(y1, shape[0]) - max(y0, 0.0))
    return 1.0 - inside_w * inside_h / area


def cut_box(pixels: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The square ``box`` of ``pixels`` ``[H, W]`` resampled to ``[size, size]`` float32 (bilinear,
    antialiased when shrinking); what lies outside the film is black (0), as the letterbox pads."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    if side <= 0:
        raise ValueError(f"empty box {box}")
    ix0, iy0 = math.floor(x0), math.floor(y0)
    ix1, iy1 = math.ceil(x0 + side), math.ceil(y0 + side)
    h, w = pixels.shape
    canvas = np.zeros((iy1 - iy0, ix1 - ix0), dtype=np.float32)
    sy0, sy1, sx0, sx1 = max(iy0, 0), min(iy1, h), max(ix0, 0), min(ix1, w)
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = pixels[sy0:sy1, sx0:sx1]
    t = torch.from_numpy(canvas)[None, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return np.ascontiguousarray(out[0, 0].clamp(0, 1).numpy(), dtype=np.float32)


def is_joint_crop(shape: tuple[int, int]) -> bool:
    """Whether an image of ``shape`` is already one joint's crop (the Chen layout, ~224 px): no side
    over :data:`CROP_MAX_SIDE` and not elongated (a film at that size would show a knee joint a few
    dozen pixels wide). Such an image is graded as it is, as before localisation existed."""
    h, w = shape
    return max(h, w) <= CROP_MAX_SIDE and max(h, w) / max(min(h, w), 1) <= CROP_MAX_ASPECT


def working_image(
    pixels: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    stride: int = 32,
    long_side: int = WORK_LONG_SIDE,
) -> tuple[np.ndarray, float]:
    """``(image, scale)``: the film resized by ``scale`` (working pixels per source pixel) and padded with
    black at its bottom and right to a multiple of ``stride``."""
    h, w = pixels.shape
    if spacing_mm is not None:
        scale = float(np.mean(spacing_mm)) / WORK_MM_PER_PX
        scale = min(scale, WORK_MAX_SIDE / max(h, w))
    else:
        scale = long_side / max(h, w)
    rh, rw = max(stride, round(h * scale)), max(stride, round(w * scale))
    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    small = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    ph, pw = -rh % stride, -rw % stride
    padded = F.pad(small, (0, pw, 0, ph))
    return np.ascontiguousarray(padded.clamp(0, 1).numpy()), rh / h


# -------------------------------------------------------------------------------------------- network
def encoder_taps(model: nn.Module, x: Tensor) -> list[Tensor]:
    """``[stride 16, stride 32]`` feature maps of a normalised input ``x`` ``[B, C, H, W]``.

    For timm's EfficientNet family (the shipped encoder): the output of the last stride-16 stage and the
    final map after ``conv_head`` (what the KL head pools). Other backbones: their final map only.
    """
    net: Any = model
    blocks = getattr(net, "blocks", None)
    if blocks is not None and hasattr(net, "conv_stem") and hasattr(net, "conv_head"):
        h = net.bn1(net.conv_stem(x))
        s16: Tensor | None = None
        for stage in blocks:
            h = stage(h)
            if h.shape[-1] * MAP_STRIDE == x.shape[-1]:  # the last stage at stride 16
                s16 = h
        final = net.bn2(net.conv_head(h))
        return [s16 if s16 is not None else final, final]
    fmap = net.forward_features(x)
    return [fmap, fmap]


def image_taps(encoder: Any, image: np.ndarray) -> list[Tensor]:
    """The :func:`encoder_taps` of one working image ``[H, W]`` in ``[0, 1]`` through ``encoder`` (an
    ``orthonode.inference.encoder.Encoder``: its normalisation, device and dtype), float32 ``[C, h, w]``
    on the CPU -- what the localiser reads at run time and what ``heads localiser`` caches to train it."""
    x = encoder.prepare(image[None, None])
    dtype = next(encoder.model.parameters()).dtype
    with torch.inference_mode():
        taps = encoder_taps(encoder.model, x.to(encoder.device, dtype=dtype))
    return [t[0].float().cpu() for t in taps]


class LocaliserHead(nn.Module):
    """Joint heat map, offset and plateau width at stride 16, and the view, from the encoder's taps.

    Output channels per cell: the heat-map logit, the centre's offset ``(dx, dy)`` from the cell's
    centre in cells, and ``log`` of the plateau width in cells.
    """

    def __init__(self, channels: Sequence[int], width: int = 64, views: int = len(VIEWS)) -> None:
        super().__init__()
        self.channels, self.width = tuple(int(c) for c in channels), int(width)
        self.reduce = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 1)
        )
        self.view = nn.Linear(channels[-1], views)

    @property
    def last(self) -> nn.Conv2d:
        """The output convolution (channel 0: the heat-map logit)."""
        conv = self.body[-1]
        assert isinstance(conv, nn.Conv2d)
        return conv

    def forward(self, taps: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        size = taps[0].shape[-2:]
        mixed = sum(
            F.interpolate(r(t), size=size, mode="bilinear", align_corners=False) if t.shape[-2:] != size
            else r(t)
            for r, t in zip(self.reduce, taps, strict=True)
        )  # fmt: skip
        return self.body(mixed), self.view(taps[-1].mean((2, 3)))


# ----------------------------------------------------------------------------------------------- card
@dataclass(frozen=True)
class LocaliserCard:
    """``localiser.json``: the format, the encoder it was trained on (its fingerprint), the head's
    shape, the decision threshold and its provenance (data, annotations, metrics)."""

    encoder_fingerprint: str
    channels: tuple[int, ...]
    width: int
    threshold: float
    views: tuple[str, ...] = VIEWS
    training: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LOCALISER_FORMAT,
            "encoder_fingerprint": self.encoder_fingerprint,
            "channels": list(self.channels),
            "width": self.width,
            "threshold": self.threshold,
            "views": list(self.views),
            "training": dict(self.training),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocaliserCard:
        if data.get("format") != LOCALISER_FORMAT:
            raise LocaliserError(
                f"localiser.json: format {data.get('format')!r}, expected {LOCALISER_FORMAT}"
            )
        try:
            card = cls(
                encoder_fingerprint=str(data["encoder_fingerprint"]),
                channels=tuple(int(c) for c in data["channels"]),
                width=int(data["width"]),
                threshold=float(data["threshold"]),
                views=tuple(str(v) for v in data.get("views", VIEWS)),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LocaliserError(f"localiser.json: {exc}") from exc
        if not 0 < card.threshold < 1 or len(card.channels) != 2 or "frontal" not in card.views:
            raise LocaliserError("localiser.json: threshold must be in (0, 1), two channels, a frontal view")
        return card


# ------------------------------------------------------------------------------------------ localiser
class Localiser:
    """The trained head with its card, run on the encoder it was trained on."""

    def __init__(self, head: LocaliserHead, card: LocaliserCard) -> None:
        self.head = head.eval()
        self.card = card

    @classmethod
    def load(cls, directory: Path, encoder_fingerprint: str) -> Localiser:
        """The bundle in ``directory`` (``localiser.json`` + ``localiser.safetensors``); an error when it
        is malformed or was trained on another encoder (its features would mean nothing)."""
        try:
            card = LocaliserCard.from_json(json.loads((directory / "localiser.json").read_text("utf-8")))
            weights = load_file(str(directory / "localiser.safetensors"))
        except (OSError, ValueError) as exc:
            raise LocaliserError(f"localiser bundle {directory.name}: {exc}") from exc
        if card.encoder_fingerprint != encoder_fingerprint:
            raise LocaliserError(
                f"localiser bundle {directory.name} was trained on encoder {card.encoder_fingerprint}, "
                f"not on the installed encoder {encoder_fingerprint}"
            )
        head = LocaliserHead(card.channels, card.width, len(card.views))
        try:
            head.load_state_dict(weights)
        except RuntimeError as exc:
            raise LocaliserError(f"localiser bundle {directory.name}: {exc}") from exc
        return cls(head, card)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(directory / "localiser.safetensors"))
        text = json.dumps(self.card.to_json(), indent=1, sort_keys=True) + "\n"
        (directory / "localiser.json").write_text(text, encoding="utf-8")

    def outputs(self, encoder: Any, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """``(maps [4, h, w], view logits [V])`` for one working image ``[H, W]`` in ``[0, 1]``."""
        with torch.inference_mode():
            maps, views = self.head([t[None] for t in image_taps(encoder, image)])
        return maps[0], views[0]

    def localise(
        self,
        encoder: Any,
        pixels: np.ndarray,
        spacing_mm: tuple[float, float] | None = None,
        spacing_source: str | None = None,
    ) -> Localisation:
        """The knee joints of one film ``[H, W]`` in ``[0, 1]`` (bone bright), left to right."""
        image, scale = working_image(pixels, spacing_mm)
        maps, view_logits = self.outputs(encoder, image)
        probabilities = torch.softmax(view_logits, 0).tolist()
        view_p = dict(zip(self.card.views, (round(p, 4) for p in probabilities), strict=True))
        view = self.card.views[int(np.argmax(probabilities))]
        peaks = decode_peaks(maps, self.card.threshold)
        joints = []
        for cx, cy, plateau, confidence in peaks:
            centre = (cx / scale, cy / scale)
            width = plateau / scale
            if spacing_mm is not None:
                mm, source = float(np.mean(spacing_mm)), spacing_source or "PixelSpacing"
            else:
                mm, source = ADULT_PLATEAU_MM / width, "estimated"
            box = chen_box(centre, width)
            partial = outside_fraction(box, pixels.shape) > PARTIAL_OUTSIDE
            joints.append(KneeJoint(centre, width, box, confidence, mm, source, partial))
        joints.sort(key=lambda j: j.centre[0])
        reason = None
        if not joints:
            reason = f"no knee joint found (strongest response {float(torch.sigmoid(maps[0]).max()):.2f}"
            reason += f" below {self.card.threshold:.2f}; the image looks {view}, p {view_p[view]:.2f})"
        return Localisation(tuple(joints), view, view_p, reason)


def decode_peaks(maps: Tensor, threshold: float, most: int = 2) -> list[tuple[float, float, float, float]]:
    """``(x, y, plateau width, confidence)`` in working pixels of the heat map's peaks: local maxima
    (3 x 3) above ``threshold``, strongest first, each at least one plateau width from a stronger one."""
    heat = torch.sigmoid(maps[0])
    local = heat == F.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    rows, cols = torch.nonzero(local & (heat >= threshold), as_tuple=True)
    order = torch.argsort(heat[rows, cols], descending=True)
    found: list[tuple[float, float, float, float]] = []
    for i in order.tolist():
        r, c = int(rows[i]), int(cols[i])
        x = (c + 0.5 + float(maps[1, r, c])) * MAP_STRIDE
        y = (r + 0.5 + float(maps[2, r, c])) * MAP_STRIDE
        width = math.exp(float(maps[3, r, c])) * MAP_STRIDE
        if all(math.hypot(x - fx, y - fy) >= max(width, fw) for fx, fy, fw, _ in found):
            found.append((x, y, width, float(heat[r, c])))
        if len(found) == most:
            break
    return found
