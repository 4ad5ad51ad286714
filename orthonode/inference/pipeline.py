"""One job's inference: the routed series of a complete study -> findings (DESIGN "Data flow").

Per route (``orthonode.completion.selection``):

* **Radiograph pipelines** (``knee_radiograph``): every instance of the route's series is read
  (``loading.load_radiograph``) and turned into the joints to grade (``films.read_film``): an image that is
  already a joint crop is graded whole; a full-size film is graded only when it is a frontal view (from
  the header, else from the localiser's view classifier), per knee joint the localiser finds
  (``localise``), each cut with the Chen crop geometry, its side from the header and its position on the
  film (``laterality``); a lateral view, a film without a knee joint, a joint cut by the film's edge are
  recorded outcomes without a grade (``PipelineOutput.not_graded``). The crops are letterboxed to the
  encoder's input (``preprocess.fit_to_square``) and encoded once; every installed radiograph head of
  that anatomy reads the same embeddings. Several images of one side: their probabilities are averaged;
  the key image is the one most confident in the reported value.
* **MRI pipelines**: each series of the route is read as a volume (``loading.load_volume``); the head's
  slice selection picks the slices, which are encoded and pooled by the head (attention pooling over the
  slice set). Several series: probabilities averaged; the key image is the central selected slice of the
  first series.

A series that cannot be decoded fails only the findings that needed it: its reason is recorded in
``PipelineOutput.failures`` and the other findings still go out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.sr.coding import Code

from orthonode import metrics
from orthonode.completion.selection import Route, SeriesRole
from orthonode.errors import OrthonodeError
from orthonode.inference.backbones import is_vit
from orthonode.inference.device import resolve_device
from orthonode.inference.encoder import Encoder, EncoderOutput, load_encoder
from orthonode.inference.films import JointCrop, Skip, read_film
from orthonode.inference.findings import Finding, ModelIdentity, NotGraded, SourceImage, untrained_marked
from orthonode.inference.heads import HeadRegistry, InstalledHead
from orthonode.inference.layout import ENCODER_SUBDIR, HEADS_SUBDIR, models_root
from orthonode.inference.loading import DecodeError, Volume, load_radiograph, load_volume
from orthonode.inference.localise import LOCALISER_SUBDIR, Localiser, LocaliserError
from orthonode.inference.preprocess import Placement, fit_to_square, select_slices
from orthonode.settings import Settings
from orthonode.tasks import tta
from orthonode.tasks.pipelines import ModalityKind

log = logging.getLogger(__name__)


class NoModelInstalled(OrthonodeError, RuntimeError):
    """No encoder or no head for a pipeline: the job records it, nothing is sent."""


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over the job (benchmarks/infer.py prints them)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


@dataclass
class PipelineOutput:
    findings: list[Finding] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what could not be done, and why (no PHI)
    not_graded: list[NotGraded] = field(default_factory=list)  # recorded outcomes without a grade
    times: StageTimes = field(default_factory=StageTimes)


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
@dataclass
class Models:
    """The encoder and the heads installed beside it; loaded once per worker process."""

    root: Path
    encoder: Encoder
    registry: HeadRegistry
    #: The knee-joint localiser trained on this encoder (``<models>/localiser``), if any: without it a
    #: full-size film is not graded (a joint crop still is).
    localiser: Localiser | None = None
    _loaded: dict[str, list[InstalledHead]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, settings: Settings) -> Models:
        encoder_dir = root / ENCODER_SUBDIR
        if not encoder_dir.exists():
            raise NoModelInstalled(f"no encoder in {encoder_dir} (see README 'Models')")
        encoder = load_encoder(
            encoder_dir,
            autocast=settings.inference_autocast,
            device=resolve_device(settings.inference_device),
        )
        return cls(root, encoder, HeadRegistry(root / HEADS_SUBDIR), _localiser(root, encoder))

    def heads_for(self, pipeline: str) -> list[InstalledHead]:
        """The heads ``pipeline`` runs (trained on this encoder), loaded once."""
        if pipeline not in self._loaded:
            self._loaded[pipeline] = self.registry.for_pipeline(pipeline, self.encoder.fingerprint)
        return self._loaded[pipeline]

    def describe(self) -> list[str]:
        """One line per installed bundle, saying whether it matches the running encoder."""
        lines = []
        for b in self.registry.bundles:
            state = "trained" if b.trained else "UNTRAINED"
            match = (
                "" if b.encoder_fingerprint == self.encoder.fingerprint else " (another encoder: not used)"
            )
            lines.append(f"{b.task} {b.version} [{b.anatomy} {b.modality}, {state}]{match}")
        return lines


def _localiser(root: Path, encoder: Encoder) -> Localiser | None:
    """The localiser of ``root`` when there is one for ``encoder``; one log line when there is none."""
    directory = root / LOCALISER_SUBDIR
    if not directory.is_dir():
        log.info("no knee-joint localiser in %s: full-size films will not be graded", root)
        return None
    try:
        return Localiser.load(directory, encoder.fingerprint)
    except LocaliserError as exc:
        log.warning("%s: full-size films will not be graded", exc)
        return None


class ModelCache:
    """The models one process loaded, by (models root, autocast, device): each loaded once, on first use.
    The process's ``Runtime`` owns one (``Runtime.models``); nothing of it is module state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[Path, str, str], Models] = {}

    def models_for(self, settings: Settings) -> Models:
        """The models of ``settings.models_dir`` (or the packaged default), loaded once per cache."""
        root = models_root(settings)
        key = (root, settings.inference_autocast, settings.inference_device)
        with self._lock:
            if key not in self._models:
                start = time.perf_counter()
                self._models[key] = Models.load(root, settings)
                metrics.MODEL_LOAD_SECONDS.observe(time.perf_counter() - start)
                models = self._models[key]
                log.info(
                    "models loaded from %s: encoder %s (%s) on %s, heads: %s",
                    root,
                    models.encoder.card.name,
                    models.encoder.fingerprint,
                    models.encoder.device,
                    "; ".join(models.describe()) or "none",
                )
            return self._models[key]


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------
def run_pipeline(
    models: Models,
    routes: Sequence[Route],
    files_by_series: Mapping[str, Sequence[Path]],
    *,
    batch_size: int = 16,
) -> PipelineOutput:
    """All findings of one job. ``routes`` as routing decided them (read back from the job with
    ``Route.from_json``); ``files_by_series`` maps each Series Instance UID to its stored files."""
    out = PipelineOutput()
    for route in routes:
        pipeline = route.pipeline
        try:
            heads = models.heads_for(pipeline)
        except ValueError as exc:
            out.failures.append(f"{pipeline}: {exc}")
            continue
        if not heads:
            out.failures.append(f"{pipeline}: no head installed for this pipeline")
            continue
        series = [s for s in route.series if s.series_uid in files_by_series]
        if route.modality == ModalityKind.RADIOGRAPH:
            _radiograph_route(models, heads, series, files_by_series, route, out, batch_size)
        else:
            _mri_route(models.encoder, heads, series, files_by_series, route, out, batch_size)
    return out


@dataclass(frozen=True)
class _View:
    """One knee of one radiograph as the model sees it."""

    side: str | None
    source: SourceImage
    crop: JointCrop  # the pixels shown as key image, the joint's box on the film, notes
    square: np.ndarray  # model input, [S, S]
    placement: Placement
    overview: np.ndarray | None  # the whole film, for the key image of a joint cut from it


def _radiograph_views(
    models: Models, route: Route, series: Sequence[SeriesRole], files_by_series: Mapping[str, Sequence[Path]],
    heads: Sequence[InstalledHead], out: PipelineOutput,
) -> list[_View]:  # fmt: skip
    """Every joint to grade of the route's radiographs (:func:`films.read_film`); outcomes not graded
    go to ``out.not_graded`` for every head."""
    size = max(h.card.input.img_size for h in heads)
    views: list[_View] = []
    for role in series:
        for path in files_by_series[role.series_uid]:
            with out.times.stage("read"):
                try:
                    image = load_radiograph(path)
                except DecodeError as exc:
                    out.failures.append(f"{route.pipeline}: {exc}")
                    continue
            laterality = _side(image.laterality, role.laterality, _paired(route.laterality))
            with out.times.stage("localise"):
                reading = read_film(image, laterality, models.localiser, models.encoder, size)
            for skip in reading.skipped:
                out.not_graded.extend(_not_graded(head, models.encoder, skip, image.source) for head in heads)
            with out.times.stage("preprocess"):
                for crop in reading.crops:
                    square, placement = fit_to_square(crop.pixels, size, patch=models.encoder.patch_size)
                    views.append(_View(crop.side, image.source, crop, square, placement, reading.overview))
    return views


def _radiograph_route(
    models: Models,
    heads: Sequence[InstalledHead],
    series: Sequence[SeriesRole],
    files_by_series: Mapping[str, Sequence[Path]],
    route: Route,
    out: PipelineOutput,
    batch_size: int,
) -> None:
    encoder = models.encoder
    recorded = len(out.not_graded)
    views = _radiograph_views(models, route, series, files_by_series, heads, out)
    if not views:
        if len(out.not_graded) == recorded:  # nothing graded and nothing recorded: nothing readable
            out.failures.append(f"{route.pipeline}: no decodable image")
        return
    squares = np.stack([v.square for v in views])[:, None]
    with out.times.stage("encode"):
        embedded = encoder.embed(squares, batch_size=batch_size)
        mirrored = (
            encoder.embed(tta.mirror(squares), batch_size=batch_size)
            if any(h.card.input.tta == "hflip" for h in heads)
            else None
        )
    saliency = encoder.saliency(embedded)
    for head in heads:
        with out.times.stage("heads"):
            probs = head.predict_with_tta(embedded, mirrored)  # [views, labels]
        for members in _by_knee(views):
            mean = probs[members].mean(axis=0)
            label = head.decide(mean)
            key = max(members, key=lambda i: probs[i, label])
            view = views[key]
            # A CNN's overlay is the class activation of the reported grade (its pooled vector is the mean
            # of its positions); a ViT's stays the CLS-to-patch similarity.
            maps = None if is_vit(encoder.model) else head.class_activation(embedded, label)
            heatmap = view.placement.to_source(saliency[key] if maps is None else maps[key])
            finding = _finding(
                head, encoder, view.side, mean, tuple(views[i].source for i in members), view.source,
                view.crop.pixels, heatmap,
            )  # fmt: skip
            out.findings.append(
                replace(finding, region=view.crop.region, overview=view.overview, notes=view.crop.notes)
            )


def _by_knee(views: Sequence[_View]) -> list[list[int]]:
    """Indices of the views of one knee: the views of one side are averaged (several films of the right
    knee); a joint of unknown side cut from a film stays on its own (two knees of one film whose side is
    unknown are two knees, not one)."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, view in enumerate(views):
        if view.side is None and view.crop.region is not None:
            groups[("", i)].append(i)
        else:
            groups[(view.side or "", -1)].append(i)
    return [groups[k] for k in sorted(groups)]


def _not_graded(head: InstalledHead, encoder: Encoder, skip: Skip, source: SourceImage) -> NotGraded:
    codes = head.card.codes
    return NotGraded(
        task=head.task, title=head.card.title, finding_site=Code(*codes.finding_site), laterality=skip.side,
        reason=skip.reason, reason_code=skip.code, source=source, model=model_identity(head, encoder),
    )  # fmt: skip


def _mri_route(
    encoder: Encoder,
    heads: Sequence[InstalledHead],
    series: Sequence[SeriesRole],
    files_by_series: Mapping[str, Sequence[Path]],
    route: Route,
    out: PipelineOutput,
    batch_size: int,
) -> None:
    by_side: dict[str | None, list[Volume]] = defaultdict(list)
    route_side = _paired(route.laterality)
    for role in series:
        with out.times.stage("read"):
            try:
                volume = load_volume(files_by_series[role.series_uid])
            except DecodeError as exc:
                out.failures.append(f"{route.pipeline}: series {role.series_uid}: {exc}")
                continue
        side = _side(volume.laterality, role.laterality, route_side)
        by_side[side if side in ("L", "R") else None].append(volume)
    if not by_side:
        out.failures.append(f"{route.pipeline}: no decodable series")
        return
    embeddings: _SliceEmbeddings = {}  # heads with the same slice selection and size share one encoding
    for head in heads:
        for side, volumes in sorted(by_side.items(), key=lambda kv: kv[0] or ""):
            out.findings.append(_mri_finding(encoder, head, side, volumes, out, batch_size, embeddings))


def _paired(laterality: Any) -> str | None:
    """A route's laterality as a fallback side: only a single side; "B" means both sides are present."""
    return laterality if laterality in ("L", "R") else None


def _side(*candidates: Any) -> str | None:
    """The first usable laterality: "L", "R" or "B" ("U" -- unpaired/unknown -- and empty are skipped)."""
    return next((str(c) for c in candidates if c in ("L", "R", "B")), None)


#: (volume, selected slices, input size) -> the encoder's output for those slices and their placements.
_SliceEmbeddings = dict[tuple[int, tuple[int, ...], int], tuple[EncoderOutput, list[Placement]]]


def _mri_finding(
    encoder: Encoder,
    head: InstalledHead,
    side: str | None,
    volumes: Sequence[Volume],
    out: PipelineOutput,
    batch_size: int,
    embeddings: _SliceEmbeddings,
) -> Finding:
    """One head on the series of one side: probabilities averaged over the series."""
    count = head.card.input.slices or 16
    strategy = head.card.input.strategy or "central"
    size = head.card.input.img_size
    per_series = []
    sources: list[SourceImage] = []
    key: tuple[SourceImage, np.ndarray, np.ndarray] | None = None
    for volume in volumes:
        chosen = select_slices(volume, count, strategy)
        cache_key = (id(volume), tuple(chosen), size)
        if cache_key not in embeddings:
            with out.times.stage("preprocess"):
                fitted = [fit_to_square(volume.voxels[i], size, patch=encoder.patch_size) for i in chosen]
            with out.times.stage("encode"):
                batch = np.stack([f[0] for f in fitted])[:, None]
                embeddings[cache_key] = (encoder.embed(batch, batch_size=batch_size), [f[1] for f in fitted])
        embedded, placements = embeddings[cache_key]
        with out.times.stage("heads"):
            per_series.append(head.predict_array(embedded)[0])
        sources.extend(volume.sources[i] for i in chosen)
        if key is None:
            middle = len(chosen) // 2
            one = EncoderOutput(
                embedded.cls[middle : middle + 1], embedded.patches[middle : middle + 1], embedded.grid
            )
            saliency = encoder.saliency(one)[0]
            key = (
                volume.sources[chosen[middle]],
                volume.voxels[chosen[middle]],
                placements[middle].to_source(saliency),
            )
    if key is None:
        raise ValueError("an MRI finding needs at least one series")
    mean = np.mean(per_series, axis=0)
    return _finding(head, encoder, side, mean, tuple(sources), key[0], key[1], key[2])


def _finding(
    head: InstalledHead,
    encoder: Encoder,
    side: str | None,
    probabilities: np.ndarray,
    sources: tuple[SourceImage, ...],
    key_source: SourceImage,
    key_image: np.ndarray,
    heatmap: np.ndarray | None,
) -> Finding:
    codes = head.card.codes
    values = [Code(*triple) for triple in codes.values]
    label = head.decide(probabilities)
    return Finding(
        task=head.task,
        title=head.card.title,
        finding_site=Code(*codes.finding_site),
        laterality=side,
        concept=Code(*codes.concept),
        value=values[label],
        probability=float(probabilities[label]),
        probabilities={v.meaning: float(p) for v, p in zip(values, probabilities, strict=True)},
        sources=sources,
        model=model_identity(head, encoder),
        key_source=key_source,
        key_image=np.clip(key_image, 0.0, 1.0).astype(np.float32),
        heatmap=None if heatmap is None else np.clip(heatmap, 0.0, 1.0).astype(np.float32),
    )


def model_identity(head: InstalledHead, encoder: Encoder) -> ModelIdentity:
    card = encoder.card
    return ModelIdentity(
        name=untrained_marked(f"OrthoFoundation {head.card.title}", head.trained),
        version=f"encoder {card.version} ({encoder.fingerprint[:8]}) / head {head.card.version}",
        parameters={
            "encoder": card.name,
            "architecture": card.arch,
            "input size": f"{head.card.input.img_size} px",
            "features": head.card.input.features,
            "head": head.card.head.kind,
            "encoder fingerprint": encoder.fingerprint,
        },
        trained=head.trained,
    )
