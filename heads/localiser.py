"""Train and evaluate the knee-joint localiser (``orthonode.inference.localise``) on annotated films.

Data: real full-size films (``../shared/data/knee_fullsize``, FracAtlas, CC BY 4.0) with our own
annotations (``experiments/knee_fullsize/annotations.csv``, protocol in ``ANNOTATION.md``): for every knee
on a frontal film the tibial plateau's edges and the joint line, and whether the knee is cut by the film's
edge. Lateral films, two-view plates, hip/pelvis and shoulder/chest films have no knee annotated: they
teach the heat map where no frontal joint is, and the view classifier the view.

Training: the shipped encoder is frozen. Every film is augmented ``augment`` times (scale 0.8-1.25,
rotation within 8 degrees, left-right flip, shift, gamma and contrast), passed once through the encoder at
working scale (:func:`orthonode.inference.localise.working_image`), and its taps cached; the head learns
a Gaussian heat map of joint centres (sigma one stride-16 cell; cells near a partial knee are ignored),
the sub-cell offset and the log plateau width at the cells around each centre, and the film's view.

Evaluation: ``folds``-fold cross-validation by film (every film predicted by a head that never saw it,
nor its augmentations), on the films as stored. A knee counts as found when a detection's centre lies
within half its annotated plateau width; centre error in pixels of the stored film and in mm estimated
from the annotated plateau (:data:`ADULT_PLATEAU_MM`). Detections on partial knees are counted apart.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from orthonode.inference.localise import (
    ADULT_PLATEAU_MM,
    MAP_STRIDE,
    VIEWS,
    Localiser,
    LocaliserCard,
    LocaliserHead,
    image_taps,
    working_image,
)

log = logging.getLogger(__name__)

#: Film kinds of the shared data's manifest, and the view each one teaches.
KIND_VIEW = {
    "knee_ap_single": "frontal",
    "knee_ap_both": "frontal",
    "knee_lateral": "lateral",
    "knee_two_view_plate": "plate",
    "hip": "other",
    "shoulder_chest": "other",
}


@dataclass(frozen=True)
class Knee:
    centre: tuple[float, float]  # (x, y) in stored-film pixels
    plateau: float
    partial: bool


@dataclass
class Film:
    path: Path
    kind: str
    knees: list[Knee] = field(default_factory=list)

    @property
    def view(self) -> str:
        return KIND_VIEW[self.kind]


def load_films(films_root: Path, annotations: Path) -> list[Film]:
    """Every film of the manifest, with its annotated knees."""
    films: dict[str, Film] = {}
    with (films_root / "manifest.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["kind"] not in KIND_VIEW:
                raise ValueError(f"{films_root / 'manifest.csv'}: unknown kind {row['kind']!r}")
            films[row["path"]] = Film(films_root / row["path"], row["kind"])
    with annotations.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            film = films.get(row["path"])
            if film is None:
                raise ValueError(f"{annotations}:{n}: {row['path']} is not in the manifest")
            left, right, joint = (
                float(row["plateau_left_x"]),
                float(row["plateau_right_x"]),
                float(row["joint_y"]),
            )
            if right <= left:
                raise ValueError(f"{annotations}:{n}: plateau right edge not right of the left edge")
            film.knees.append(Knee(((left + right) / 2, joint), right - left, row["partial"] == "1"))
    return sorted(films.values(), key=lambda film: str(film.path))


def read_film(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


# ------------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class Sample:
    """One (augmented) film at working scale: the encoder's taps and the knees in working pixels."""

    film: int
    taps: tuple[torch.Tensor, torch.Tensor]  # float16 [C, h, w] each
    knees: tuple[Knee, ...]
    view: int


def augment(
    pixels: np.ndarray, knees: Sequence[Knee], rng: np.random.Generator, identity: bool
) -> tuple[np.ndarray, list[Knee], float]:
    """``(working image, knees in its pixels, scale)``: one random similarity transform of the film at
    working scale (or none), with photometric jitter."""
    image, scale = working_image(pixels, None)
    h, w = round(pixels.shape[0] * scale), round(pixels.shape[1] * scale)
    if identity:
        return (
            image,
            [Knee((k.centre[0] * scale, k.centre[1] * scale), k.plateau * scale, k.partial) for k in knees],
            scale,
        )
    zoom = float(math.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    angle = math.radians(rng.uniform(-8, 8))
    flip = bool(rng.random() < 0.5)
    shift = rng.uniform(-0.1, 0.1, size=2) * (w, h)
    centre = np.array([w / 2, h / 2])
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.diag([-1.0 if flip else 1.0, 1.0])

    def move(p: tuple[float, float]) -> tuple[float, float]:
        q = forward @ (np.array(p) - centre) + centre + shift
        return float(q[0]), float(q[1])

    # grid_sample wants, for every output pixel, where it comes from: the inverse map, in [-1, 1] units
    ih, iw = image.shape
    inverse = np.linalg.inv(forward)
    ys, xs = np.meshgrid(np.arange(ih) + 0.5, np.arange(iw) + 0.5, indexing="ij")
    out = np.stack([xs.ravel(), ys.ravel()]) - (centre + shift)[:, None]
    src = inverse @ out + centre[:, None]
    grid = np.stack([src[0] / iw * 2 - 1, src[1] / ih * 2 - 1], axis=-1).reshape(1, ih, iw, 2)
    warped = F.grid_sample(
        torch.from_numpy(image)[None, None], torch.from_numpy(grid).float(), align_corners=False
    )[0, 0].numpy()
    gamma = float(math.exp(rng.uniform(math.log(0.7), math.log(1.4))))
    contrast, bright = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
    warped = np.clip((np.clip(warped, 0, 1) ** gamma - 0.5) * contrast + 0.5 + bright, 0, 1)
    sx, sy = src[0].reshape(ih, iw), src[1].reshape(ih, iw)
    warped[(sx < 0) | (sx >= w) | (sy < 0) | (sy >= h)] = 0  # what came from outside the film stays black
    moved = [
        Knee(move((k.centre[0] * scale, k.centre[1] * scale)), k.plateau * scale * zoom, k.partial)
        for k in knees
    ]
    return np.ascontiguousarray(warped, dtype=np.float32), moved, scale


def build_samples(encoder: Any, films: Sequence[Film], augment_n: int, seed: int) -> list[Sample]:
    """Every film once as stored and ``augment_n - 1`` times augmented, through the frozen encoder."""
    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    start = time.perf_counter()
    for i, film in enumerate(films):
        pixels = read_film(film.path)
        for a in range(augment_n):
            image, knees, _ = augment(pixels, film.knees, rng, identity=a == 0)
            s16, s32 = (t.to(torch.float16) for t in image_taps(encoder, image))
            samples.append(Sample(i, (s16, s32), tuple(knees), VIEWS.index(film.view)))
        if (i + 1) % 10 == 0:
            log.info(
                "localiser: %d/%d films encoded (%.0f s)", i + 1, len(films), time.perf_counter() - start
            )
    return samples


def cached_samples(
    encoder: Any, films: Sequence[Film], augment_n: int, seed: int, cache: Path | None, inputs: Sequence[Path]
) -> list[Sample]:
    """:func:`build_samples`, kept in ``cache`` (a torch file) under a key of everything they depend on:
    the encoder's fingerprint, the passes, the seed and the sha256 of the manifest and the annotations."""
    key = {
        "encoder": encoder.fingerprint, "augment": augment_n, "seed": seed,
        "inputs": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs},
    }  # fmt: skip
    if cache is not None and cache.exists():
        stored = torch.load(cache, weights_only=False)
        if stored.get("key") == key:
            log.info("localiser: %d encoded samples from %s", len(stored["samples"]), cache)
            return list(stored["samples"])
        log.info("localiser: %s was made from other inputs; encoding again", cache)
    samples = build_samples(encoder, films, augment_n, seed)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "samples": samples}, cache)
    return samples


# ------------------------------------------------------------------------------------------- training
def targets(sample: Sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(heat [h, w], weight [h, w], regression [3, h, w], regression mask [h, w])`` at stride 16."""
    h, w = sample.taps[0].shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    heat, weight = torch.zeros(h, w), torch.ones(h, w)
    reg, mask = torch.zeros(3, h, w), torch.zeros(h, w)
    for knee in sample.knees:
        cx, cy = knee.centre[0] / MAP_STRIDE, knee.centre[1] / MAP_STRIDE
        d2 = (xs - cx) ** 2 + (ys - cy) ** 2
        if knee.partial:
            weight[d2 <= 2.0**2] = 0.0  # neither a joint to find nor background
            continue
        heat = torch.maximum(heat, torch.exp(-d2 / 2.0))
        r, c = (
            int(cy),
            int(cx),
        )  # the cell holding the centre is the positive (CenterNet); the offset says where in it
        if 0 <= r < h and 0 <= c < w:
            heat[r, c] = 1.0
        near = d2 <= 1.5**2
        reg[0][near] = (cx - xs)[near]
        reg[1][near] = (cy - ys)[near]
        reg[2][near] = math.log(knee.plateau / MAP_STRIDE)
        mask[near] = 1.0
    return heat, weight, reg, mask


def _batch(samples: Sequence[Sample]) -> tuple[list[torch.Tensor], ...]:
    """Pad a batch to its largest map (black film: padded cells are background)."""
    hmax = max(s.taps[0].shape[-2] for s in samples)
    wmax = max(s.taps[0].shape[-1] for s in samples)
    t16, t32, heat, weight, reg, mask = [], [], [], [], [], []
    for s in samples:
        h, w = s.taps[0].shape[-2:]
        pad = (0, wmax - w, 0, hmax - h)
        t16.append(F.pad(s.taps[0], pad))
        t32.append(F.pad(s.taps[1], (0, wmax // 2 - w // 2, 0, hmax // 2 - h // 2)))
        a, b, c, d = targets(s)
        heat.append(F.pad(a, pad))
        weight.append(F.pad(b, pad, value=1.0))
        reg.append(F.pad(c, pad))
        mask.append(F.pad(d, pad))
    return t16, t32, heat, weight, reg, mask


def train_head(
    samples: Sequence[Sample], *, steps: int = 600, batch: int = 16, seed: int = 0
) -> LocaliserHead:
    """Fit a :class:`LocaliserHead` on cached taps (AdamW, cosine schedule)."""
    torch.manual_seed(seed)
    channels = (samples[0].taps[0].shape[0], samples[0].taps[1].shape[0])
    head = LocaliserHead(channels)
    with torch.no_grad():  # the heat map starts at a prior of 0.1 (CenterNet's initialisation)
        bias = head.last.bias
        assert bias is not None
        bias[0] = -2.19
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    # every sample padded to one map size and its targets computed once; a step indexes them
    t16_all, t32_all, heat_all, weight_all, reg_all, mask_all = (torch.stack(x) for x in _batch(samples))
    views_all = torch.tensor([s.view for s in samples])
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(samples), size=min(batch, len(samples)), replace=False))
        t16, t32 = t16_all[idx].float(), t32_all[idx].float()
        heat, weight, reg, mask = heat_all[idx], weight_all[idx], reg_all[idx], mask_all[idx]
        maps, view_logits = head([t16, t32])
        logit = maps[:, 0]
        # penalty-reduced focal loss of CenterNet (Zhou et al. 2019) on the Gaussian heat map
        # (log-sigmoid, not a clamped log: a clamp stops the gradient of a confidently wrong cell)
        p = torch.sigmoid(logit)
        pos = heat >= 1.0
        pos_loss = -(F.logsigmoid(logit) * (1 - p) ** 2)[pos].sum()
        neg_loss = -(F.logsigmoid(-logit) * p**2 * (1 - heat) ** 4 * weight)[~pos].sum()
        n_pos = max(int(pos.sum()), 1)
        heat_loss = (pos_loss + neg_loss) / n_pos
        m = mask[:, None].expand_as(reg)
        reg_loss = (
            F.smooth_l1_loss(maps[:, 1:][m > 0], reg[m > 0]) if bool((m > 0).any()) else logit.sum() * 0
        )
        view_loss = F.cross_entropy(view_logits, views_all[idx])
        loss = heat_loss + reg_loss + 0.5 * view_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("localiser step %d: heat %.3f reg %.3f view %.3f", step, heat_loss, reg_loss, view_loss)
    return head.eval()


# ----------------------------------------------------------------------------------------- evaluation
def match(found: Sequence[tuple[float, float]], knees: Sequence[Knee]) -> dict[str, Any]:
    """Greedy matching of detections to annotated knees (nearest first, within half a plateau)."""
    pairs = sorted(
        (math.hypot(f[0] - k.centre[0], f[1] - k.centre[1]), i, j)
        for i, f in enumerate(found)
        for j, k in enumerate(knees)
    )
    used_f, used_k, errors = set(), set(), {}
    for d, i, j in pairs:
        if i in used_f or j in used_k or d > knees[j].plateau / 2:
            continue
        used_f.add(i)
        used_k.add(j)
        errors[j] = d
    return {"matched": errors, "unmatched_detections": len(found) - len(used_f)}


def evaluate_films(localiser: Localiser, encoder: Any, films: Sequence[Film]) -> list[dict[str, Any]]:
    """Per film: kind, annotated knees, detections, matches, errors (px and estimated mm), view, time."""
    rows = []
    for film in films:
        pixels = read_film(film.path)
        start = time.perf_counter()
        result = localiser.localise(encoder, pixels)
        seconds = time.perf_counter() - start
        found = [j.centre for j in result.joints]
        m = match(found, film.knees)
        knees = []
        for j, knee in enumerate(film.knees):
            err = m["matched"].get(j)
            knees.append({
                "partial": knee.partial,
                "found": err is not None,
                "error_px": None if err is None else round(err, 1),
                "error_mm_est": None if err is None else round(err * ADULT_PLATEAU_MM / knee.plateau, 1),
                "plateau_px": knee.plateau,
                "plateau_error": None if err is None else _plateau_error(result, knee),
            })  # fmt: skip
        rows.append({
            "path": f"{film.path.parent.name}/{film.path.name}", "kind": film.kind, "view": film.view,
            "predicted_view": result.view, "knees": knees, "detections": len(found),
            "false_detections": m["unmatched_detections"], "seconds": round(seconds, 3),
            "confidences": [round(j.confidence, 3) for j in result.joints],
        })  # fmt: skip
    return rows


def _plateau_error(result: Any, knee: Knee) -> float:
    """The relative error of the plateau width of the detection nearest to ``knee``."""
    nearest = min(
        result.joints, key=lambda j: math.hypot(j.centre[0] - knee.centre[0], j.centre[1] - knee.centre[1])
    )
    return round(float(nearest.plateau_px) / knee.plateau - 1, 3)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Detection rate and centre errors per kind; false detections; view accuracy; seconds per film."""
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    out: dict[str, Any] = {}
    for kind, group in sorted(by_kind.items()):
        complete = [k for r in group for k in r["knees"] if not k["partial"]]
        partial = [k for r in group for k in r["knees"] if k["partial"]]
        errors = [k["error_px"] for k in complete if k["found"]]
        mm = [k["error_mm_est"] for k in complete if k["found"]]
        entry: dict[str, Any] = {
            "films": len(group),
            "view_correct": sum(r["predicted_view"] == r["view"] for r in group),
            "false_detections": sum(r["false_detections"] for r in group),
            "films_with_detections": sum(r["detections"] > 0 for r in group),
        }
        if complete:
            entry.update({
                "knees": len(complete), "found": sum(k["found"] for k in complete),
                "median_error_px": round(statistics.median(errors), 1) if errors else None,
                "max_error_px": max(errors) if errors else None,
                "median_error_mm_est": round(statistics.median(mm), 1) if mm else None,
                "median_abs_plateau_error": _median_abs(k["plateau_error"] for k in complete if k["found"]),
            })  # fmt: skip
        if partial:
            entry["partial_knees"] = len(partial)
            entry["partial_found"] = sum(k["found"] for k in partial)
        out[kind] = entry
    out["median_seconds_per_film"] = round(statistics.median(r["seconds"] for r in rows), 3)
    return out


def _median_abs(values: Any) -> float | None:
    found = [abs(v) for v in values]
    return round(statistics.median(found), 3) if found else None


def cross_validate(
    encoder: Any,
    films: Sequence[Film],
    samples: Sequence[Sample],
    *,
    folds: int,
    threshold: float,
    steps: int,
) -> list[dict[str, Any]]:
    """Out-of-fold rows: films dealt to ``folds`` folds round-robin within each kind."""
    fold_of: dict[int, int] = {}
    counters: dict[str, int] = defaultdict(int)
    for i, film in enumerate(films):
        fold_of[i] = counters[film.kind] % folds
        counters[film.kind] += 1
    rows: list[dict[str, Any]] = []
    for fold in range(folds):
        train = [s for s in samples if fold_of[s.film] != fold]
        held = [f for i, f in enumerate(films) if fold_of[i] == fold]
        head = train_head(train, steps=steps, seed=fold)
        localiser = Localiser(head, _card(encoder, head, threshold, {}))
        rows.extend(evaluate_films(localiser, encoder, held))
        log.info("localiser: fold %d/%d done", fold + 1, folds)
    return rows


def _card(encoder: Any, head: LocaliserHead, threshold: float, training: dict[str, Any]) -> LocaliserCard:
    return LocaliserCard(encoder.fingerprint, head.channels, head.width, threshold, VIEWS, training)


def fit_localiser(
    encoder: Any,
    films_root: Path,
    annotations: Path,
    *,
    augment_n: int = 16,
    folds: int = 5,
    threshold: float = 0.5,
    steps: int = 600,
    seed: int = 0,
    cache: Path | None = None,
) -> tuple[Localiser, dict[str, Any]]:
    """Cross-validate, then train on every film; the card carries the cross-validated figures."""
    films = load_films(films_root, annotations)
    start = time.perf_counter()
    samples = cached_samples(
        encoder, films, augment_n, seed, cache, [films_root / "manifest.csv", annotations]
    )
    encode_s = time.perf_counter() - start
    rows = (
        cross_validate(encoder, films, samples, folds=folds, threshold=threshold, steps=steps)
        if folds > 1
        else []
    )
    head = train_head(samples, steps=steps, seed=seed)
    summary = summarise(rows) if rows else {}
    training = {
        "films": str(films_root), "annotations": str(annotations), "n_films": len(films),
        "augment": augment_n, "steps": steps, "seed": seed, "threshold": threshold,
        "cross_validation": {"folds": folds, "summary": summary}, "encode_seconds": round(encode_s, 1),
    }  # fmt: skip
    return Localiser(head, _card(encoder, head, threshold, training)), {"summary": summary, "films": rows}
