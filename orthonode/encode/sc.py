"""A key image any viewer can show: Secondary Capture (PS3.3 A.8.1) with overlay and burned-in text.

Built with ``highdicom.sc.SCImage.from_ref_dataset`` from the source instance, so the key image is in the
source's study (patient and study attributes copied) as a new series. Pixels: the finding's key image
(grayscale in [0, 1]) as RGB, 8 bits (PS3.3 C.7.6.3, Photometric Interpretation RGB), with the heatmap
blended in colour where it is high, and a text block burned in: task, result, probability, model name and
version, and "NOT FOR DIAGNOSTIC USE" ("UNTRAINED MODEL - NOT A FINDING" instead of the result for an
untrained model). Burned In Annotation (0028,0301) is therefore YES; Conversion Type (0008,0064) is WSD
("workstation", PS3.3 C.8.6.1); no Pixel Spacing is claimed (the image is resampled for display).

A finding read from a localised joint of a full-size film (``Finding.region`` and ``Finding.overview``,
issue 14) gets a wider picture: on the left the whole film (the overview, scaled to the crop panel's
height) with the box of every finding of the same task on that image drawn and labelled with its side
and result (the finding's own box highlighted in yellow, the others cyan), on the right the crop the
model saw with its heatmap and the text, as above. Boxes are in source pixel coordinates (SCOORD
column/row of the stored frame, ``ImageRegion.box``) and are scaled by the overview's size against the
source's Rows (0028,0010) and Columns (0028,0011); the overview is the stored frame, downscaled.

The colour map is a small fixed piecewise-linear "hot" ramp implemented with numpy (black-red-yellow-
white anchors), because matplotlib is not a dependency of the node. Small key images are enlarged by an
integer factor (bilinear, Pillow) so that the short side is at least :data:`MIN_SIDE` pixels and the
text stays legible.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.valuerep import DA, DT, TM

from orthonode.encode.codes import PROCESSING_EQUIPMENT
from orthonode.encode.sr import DISCLAIMER, NODE_MANUFACTURER, UNTRAINED_STATEMENT, model_display_name
from orthonode.errors import OrthonodeError
from orthonode.inference.findings import Finding, ImageRegion, SourceImage

DEFAULT_SERIES_NUMBER = 9902
MIN_SIDE = 512  # pixels: the key image's short side after enlargement
OVERLAY_MAX_ALPHA = 0.6  # opacity of the colour overlay where the heatmap is 1
OVERLAY_THRESHOLD = 0.2  # heatmap values at or below this are not drawn
TEXT_MARGIN_FRACTION = 0.015
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
SERIES_DESCRIPTION = "OrthoFoundation key images - NOT FOR DIAGNOSTIC USE"
SERIES_DESCRIPTION_UNTRAINED = "OrthoFoundation key images - UNTRAINED - NOT FOR DIAGNOSTIC USE"
MAX_LO = 64
PANEL_GAP = 8  # black columns between the film and the crop
OWN_BOX_COLOUR = (255, 220, 0)
OTHER_BOX_COLOUR = (0, 200, 255)

# "hot" colour ramp anchors: (position, (r, g, b)) with r, g, b in [0, 1]
_HOT_ANCHORS = np.array(
    [
        [0.00, 0.0, 0.0, 0.0],
        [0.35, 0.9, 0.0, 0.0],
        [0.70, 1.0, 0.85, 0.0],
        [1.00, 1.0, 1.0, 1.0],
    ],
    dtype=np.float64,
)


class KeyImageError(OrthonodeError, ValueError):
    """The finding's key image or heatmap cannot make a key image."""


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB in [0, 1] ("hot" ramp); shape [..., 3], float64."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    positions = _HOT_ANCHORS[:, 0]
    channels = [np.interp(v, positions, _HOT_ANCHORS[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1)


def display_scale(height: int, width: int) -> int:
    """The integer enlargement factor: ``ceil(MIN_SIDE / min(height, width))``, at least 1."""
    if height < 1 or width < 1:
        raise KeyImageError(f"key image has no pixels ({height}x{width})")
    return max(1, math.ceil(MIN_SIDE / min(height, width)))


def _checked(image: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise KeyImageError(f"{name} must be 2-D [H, W], got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise KeyImageError(f"{name} contains NaN or infinity")
    return np.clip(array, 0.0, 1.0)


def _resize(array: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return array
    h, w = array.shape
    image = Image.fromarray(array.astype(np.float32))  # mode "F"
    return np.asarray(image.resize((w * scale, h * scale), Image.Resampling.BILINEAR), dtype=np.float32)


def compose(key_image: np.ndarray, heatmap: np.ndarray | None) -> np.ndarray:
    """The RGB uint8 picture (enlarged, overlay blended) without text; [H*k, W*k, 3]."""
    gray = _checked(key_image, "key_image")
    scale = display_scale(*gray.shape)
    gray = _resize(gray, scale)
    rgb = np.repeat(gray[..., None].astype(np.float64), 3, axis=-1)
    if heatmap is not None:
        heat = _checked(heatmap, "heatmap")
        if heat.shape != key_image.shape:
            raise KeyImageError(f"heatmap shape {heat.shape} differs from key image {key_image.shape}")
        heat = _resize(heat, scale).astype(np.float64)
        alpha = np.where(heat > OVERLAY_THRESHOLD, OVERLAY_MAX_ALPHA * heat, 0.0)[..., None]
        rgb = (1.0 - alpha) * rgb + alpha * colormap(heat)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def text_lines(finding: Finding) -> list[str]:
    """The burned-in text (ASCII only), one string per line."""
    side = {"L": "left", "R": "right", "B": "both"}.get(finding.laterality or "", "")
    title = f"{finding.title} ({side})" if side else finding.title
    model = finding.model
    lines = [f"AI: {title}"]
    if model.trained:
        lines.append(f"Result: {finding.value.meaning}  (p = {float(finding.probability):.2f})")
    else:
        lines.append(UNTRAINED_STATEMENT)
    lines.append(f"Model: {model_display_name(model)}  {model.version}")
    lines.append(NOT_FOR_DIAGNOSTIC_USE)
    return [line.encode("ascii", "replace").decode("ascii") for line in lines]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def burn_text(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Draw ``lines`` at the top left on a dark box, font sized to the image; returns a new array."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))  # mode "RGB"
    height, width = rgb.shape[:2]
    margin = max(2, round(TEXT_MARGIN_FRACTION * min(height, width)))
    size = max(8, height // 32)
    draw = ImageDraw.Draw(image)
    font = _font(size)
    for _ in range(64):  # shrink until the widest line fits (bounded)
        widest = max(draw.textlength(line, font=font) for line in lines)
        if widest <= width - 4 * margin or size <= 8:
            break
        size -= 1
        font = _font(size)
    line_height = round(size * 1.25)
    box_w = min(width, int(max(draw.textlength(line, font=font) for line in lines)) + 2 * margin)
    box_h = min(height, line_height * len(lines) + 2 * margin)
    region = image.crop((0, 0, box_w, box_h))
    darkened = Image.blend(region, Image.new("RGB", region.size, (0, 0, 0)), 0.7)
    image.paste(darkened, (0, 0))
    for i, line in enumerate(lines):
        colour = (255, 80, 80) if line in (NOT_FOR_DIAGNOSTIC_USE, UNTRAINED_STATEMENT) else (255, 255, 255)
        draw.text((margin, margin + i * line_height), line, fill=colour, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def box_label(finding: Finding) -> str:
    """The short label of a joint box on the film: side (``?`` when unknown) and result, e.g. "R KL 2"."""
    side = finding.laterality if finding.laterality in ("L", "R") else "?"
    if not finding.model.trained:
        return f"{side} untrained"
    value = finding.value.meaning.replace("Kellgren-Lawrence grade", "KL")
    return f"{side} {value}".encode("ascii", "replace").decode("ascii")


def _same_image(a: SourceImage, b: SourceImage) -> bool:
    return (a.sop_instance_uid, a.frame_number or 1) == (b.sop_instance_uid, b.frame_number or 1)


def film_boxes(finding: Finding, siblings: Sequence[Finding]) -> list[tuple[Finding, ImageRegion, bool]]:
    """``(finding, region, is_own)`` for every finding of ``finding``'s task whose region is on its
    image, the finding itself first."""
    region = finding.region
    if region is None:
        return []
    out = [(finding, region, True)]
    for other in siblings:
        if other is finding or other.task != finding.task or other.region is None:
            continue
        if _same_image(other.region.source, region.source):
            out.append((other, other.region, False))
    return out


def film_panel(
    finding: Finding, siblings: Sequence[Finding], source: pydicom.Dataset, height: int
) -> np.ndarray:
    """The whole film (``finding.overview``) at ``height`` rows as RGB uint8, with the joint boxes."""
    if finding.overview is None:
        raise KeyImageError("the finding has no overview of its film")
    overview = _checked(finding.overview, "overview")
    rows, columns = int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise KeyImageError("the source has no Rows/Columns to place the joint boxes on the film")
    h, w = overview.shape
    width = max(1, round(w * height / h))
    scaled = Image.fromarray(overview).resize((width, height), Image.Resampling.BILINEAR)
    gray = np.clip(np.rint(np.asarray(scaled, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    draw = ImageDraw.Draw(image)
    font = _font(max(10, height // 28))
    sx, sy = width / columns, height / rows
    line = max(2, height // 200)
    for other, region, own in reversed(film_boxes(finding, siblings)):  # the own box drawn last, on top
        x0, y0, x1, y1 = region.box[0] * sx, region.box[1] * sy, region.box[2] * sx, region.box[3] * sy
        colour = OWN_BOX_COLOUR if own else OTHER_BOX_COLOUR
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line * (2 if own else 1))
        label = box_label(other)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_h = bottom - top + 2 * line
        y = y0 - text_h if y0 >= text_h else y1  # above the box, else below it
        draw.rectangle((x0, y, x0 + right - left + 2 * line, y + text_h), fill=(0, 0, 0))
        draw.text((x0 + line, y + line - top), label, fill=colour, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def key_picture(
    finding: Finding, source: pydicom.Dataset, siblings: Sequence[Finding] = (), overlay: bool = True
) -> np.ndarray:
    """The key image's RGB pixels: the crop with its overlay and text, after the film with its boxes when
    the finding has a region and an overview (module docstring)."""
    crop = burn_text(compose(finding.key_image, finding.heatmap if overlay else None), text_lines(finding))
    if finding.region is None or finding.overview is None:
        return crop
    if not _same_image(finding.region.source, finding.key_source):
        raise KeyImageError("the finding's region is not on its key source image")
    film = film_panel(finding, siblings, source, crop.shape[0])
    gap = np.zeros((crop.shape[0], PANEL_GAP, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([film, gap, crop], axis=1))


def _laterality(finding: Finding, source: pydicom.Dataset) -> str | None:
    """R or L for the General Series Laterality: the finding's, else the source's (series or image)."""
    for value in (finding.laterality, source.get("Laterality"), source.get("ImageLaterality")):
        if value in ("R", "L"):
            return str(value)
    return None


def _finish(sc: hd.sc.SCImage, finding: Finding, source: pydicom.Dataset, when: datetime.datetime) -> None:
    """The attributes highdicom's constructor does not set as the node wants them."""
    # Patient Orientation (Type 2C, PS3.3 C.7.6.1.1.1): the source's own value when it has one (the key
    # image keeps the source's display orientation), otherwise empty rather than a guess.
    orientation = source.get("PatientOrientation")
    patient_orientation: Any = list(orientation) if orientation and len(orientation) == 2 else ""
    sc.PatientOrientation = patient_orientation
    # Laterality (0020,0060) is Type 2C (PS3.3 C.7.3.1): required for a paired body part when the image
    # has no Image Laterality. A joint whose side is unknown (header and position disagree) on a paired
    # source (one that names a side, e.g. B) gets it empty rather than a guess.
    if "Laterality" not in sc and (source.get("Laterality") or source.get("ImageLaterality")):
        sc.Laterality = ""
    sc.BurnedInAnnotation = "YES"
    sc.ConversionType = "WSD"
    sc.DateOfSecondaryCapture = DA(when.date())
    sc.TimeOfSecondaryCapture = TM(when.time())
    sc.InstanceCreationDate = DA(when.date())
    sc.InstanceCreationTime = TM(when.time())
    for item in sc.ContributingEquipmentSequence:
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
    film = (
        " and the whole film with the joint boxes" if finding.overview is not None and finding.region else ""
    )
    sc.DerivationDescription = (
        f"AI key image: source resampled for display, heatmap colour overlay, burned-in result text{film}"
    )
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = finding.key_source.sop_class_uid
    reference.ReferencedSOPInstanceUID = finding.key_source.sop_instance_uid
    if finding.key_source.frame_number is not None:
        reference.ReferencedFrameNumber = finding.key_source.frame_number
    sc.SourceImageSequence = [reference]


def build_key_image(
    finding: Finding,
    source: pydicom.Dataset,
    *,
    series_uid: str,
    sop_uid: str,
    series_number: int = DEFAULT_SERIES_NUMBER,
    instance_number: int = 1,
    created: datetime.datetime | None = None,
    overlay: bool = True,
    siblings: Sequence[Finding] = (),
) -> hd.sc.SCImage:
    """The Secondary Capture key image of one finding, in ``source``'s study, as a new series.

    ``source`` is the dataset of ``finding.key_source`` (header suffices; its Rows and Columns place the
    joint boxes). ``siblings`` are the job's other findings: those of the same task with a region on the
    same image are drawn on the film too. ``overlay=False`` leaves the heatmap out (used by tests to see
    what the overlay changes). ``created`` fixes the content and capture date/times (None: now).
    """
    if str(source.SOPInstanceUID) != finding.key_source.sop_instance_uid:
        raise KeyImageError("source dataset is not the finding's key source image")
    when = created if created is not None else datetime.datetime.now()
    rgb = key_picture(finding, source, siblings, overlay)
    model = finding.model
    equipment = hd.ContributingEquipment(
        manufacturer=model.manufacturer,
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=model_display_name(model)[:MAX_LO],
        software_versions=model.version[:MAX_LO],
        contribution_datetime=when,
        contribution_description=f"AI key image; {DISCLAIMER}"[:MAX_LO],
    )
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=NODE_MANUFACTURER,
        laterality=_laterality(finding, source),
        # Placeholder: highdicom requires a value for the PATIENT coordinate system; replaced below.
        patient_orientation=("L", "F"),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        contributing_equipment=[equipment],
        series_description=SERIES_DESCRIPTION if model.trained else SERIES_DESCRIPTION_UNTRAINED,
        content_date=when.date(),
        content_time=when.time(),
        series_date=when.date(),
        series_time=when.time(),
    )
    _finish(sc, finding, source, when)
    return sc


def key_image_png(image: pydicom.Dataset | np.ndarray, path: str | Path) -> Path:
    """Write the RGB pixels of a key image (dataset or [H, W, 3] uint8 array) as PNG; return the path."""
    pixels = image.pixel_array if isinstance(image, pydicom.Dataset) else np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise KeyImageError(f"expected RGB uint8 [H, W, 3], got {pixels.dtype} {pixels.shape}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(target, format="PNG")
    return target
