"""The node's installed task heads: find head bundles, pick those a pipeline runs, and run them.

Bundles (``orthonode.tasks.bundle``, format ``orthonode-head/1``) are directories ``<task>-<version>/`` with
``head.json`` + ``head.safetensors``, anywhere up to two levels below the models directory (e.g.
``models/heads/kl_grade-1.0.0/``). :meth:`HeadRegistry.scan` lists them without loading weights;
:meth:`HeadRegistry.for_pipeline` loads the heads a pipeline runs (``knee_radiograph`` -> the knee
radiograph tasks; ``knee_mri`` / ``hip_mri`` / ``shoulder_mri`` / ``ankle_mri`` -> that anatomy's MRI
tasks), one per task: a bundle trained on the running encoder (others are skipped with a warning naming
both fingerprints), trained before untrained, then the highest version.

:meth:`InstalledHead.predict` takes the encoder's output for one sample's images -- an
``EncoderOutput`` of ``B`` radiographs, or of the ``S`` selected slices of one MRI series -- composes
the features the head was trained on (CLS, or CLS + mean patch token) and returns per-label
probabilities.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from orthonode.tasks import tta
from orthonode.tasks.bundle import CARD_FILE, BundleError, HeadCard, load_bundle, read_card
from orthonode.tasks.decoding import decode
from orthonode.tasks.modules import Head, compose_features
from orthonode.tasks.pipelines import pipeline_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstalledBundle:
    """A bundle found on disk (card read, weights not loaded)."""

    task: str
    version: str
    trained: bool
    encoder_fingerprint: str
    path: Path
    card: HeadCard

    @property
    def anatomy(self) -> str:
        return self.card.anatomy

    @property
    def modality(self) -> str:
        return self.card.modality


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", version))


class InstalledHead:
    """A loaded head bundle, ready to turn encoder outputs into per-label probabilities."""

    def __init__(self, card: HeadCard, head: Head, path: Path) -> None:
        self.card = card
        self.head = head.eval()
        self.path = path

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    @property
    def trained(self) -> bool:
        return self.card.trained

    def features(self, output: Any) -> Tensor:
        """Head input from an ``EncoderOutput`` (``cls`` [B, D], ``patches`` [B, N, D]) or a ready tensor.

        For MRI heads the ``B`` rows of an ``EncoderOutput`` are the slices of ONE series -> ``[1, B, F]``.
        """
        if isinstance(output, Tensor | np.ndarray):
            return torch.as_tensor(output, dtype=torch.float32)
        x = compose_features(output.cls.float(), output.patches.float().mean(1), self.card.input.features)
        if self.card.input.kind == "mri_slices":
            x = x.unsqueeze(0)
        return x

    @torch.no_grad()
    def predict_array(self, features: Any, mask: Tensor | None = None) -> np.ndarray:
        """Probabilities ``[B, K]`` (rows sum to 1) in label order."""
        x = self.features(features)
        expected = 3 if self.card.input.kind == "mri_slices" else 2
        if x.ndim != expected or x.shape[-1] != self.card.head.in_dim:
            raise BundleError(
                f"{self.card.dirname}: expects features [..., {self.card.head.in_dim}] with {expected} dims, "
                f"got {tuple(x.shape)}"
            )
        return self.head.probabilities(x, mask).numpy().astype(np.float64)

    def predict_with_tta(self, output: Any, mirrored: Any = None) -> np.ndarray:
        """Probabilities ``[B, K]`` as the card's test-time augmentation asks (:mod:`orthonode.tasks.tta`):
        of ``output`` alone, or for ``hflip`` combined with those of ``mirrored``, the encoder's output for
        the left-right mirrored images in the same order."""
        if self.card.input.tta == "none":
            return self.predict_array(output)
        if mirrored is None:
            raise BundleError(f"{self.card.dirname}: test-time augmentation {self.card.input.tta} needs the "
                              "mirrored images' features")  # fmt: skip
        return tta.combine([self.predict_array(output), self.predict_array(mirrored)])

    def decide(self, probabilities: np.ndarray) -> int:
        """The class the node reports for one probability vector ``[K]``: for a binary task the positive
        class when ``p(positive)`` reaches the card's ``positive`` threshold (as ``heads evaluate`` scores
        it), else the card's decoding rule (:mod:`orthonode.tasks.decoding`)."""
        p = np.asarray(probabilities, dtype=np.float64)
        threshold = self.card.thresholds.get("positive")
        if self.card.head.num_classes == 2 and threshold is not None:
            return int(p[1] >= threshold)
        return int(decode(p, self.card.head.decode))

    @torch.no_grad()
    def class_activation(self, output: Any, label: int) -> np.ndarray | None:
        """``[B, h, w]`` map in ``[0, 1]`` of the evidence for ``label`` at each output position of an
        ``EncoderOutput`` (min-max scaled per image; a constant map is 0), or ``None`` where the head has
        no per-position form (only linear heads do; see ``LinearHead.position_logits``)."""
        position_logits = getattr(self.head, "position_logits", None)
        if position_logits is None or self.card.input.kind != "radiograph":
            return None
        positions = output.patches.float()
        if self.card.input.features == "cls+meanpatch":
            positions = torch.cat([positions, positions], dim=-1)
        evidence = position_logits(positions)[..., label]  # [B, N]
        low = evidence.min(dim=1, keepdim=True).values
        span = evidence.max(dim=1, keepdim=True).values - low
        scaled = torch.where(span > 0, (evidence - low) / span.clamp_min(1e-12), torch.zeros_like(evidence))
        h, w = output.grid
        return scaled.reshape(-1, h, w).numpy().astype(np.float32)

    def predict(self, features: Any, mask: Tensor | None = None) -> list[dict[str, float]]:
        """Per-label probabilities, one mapping ``label -> p`` per sample."""
        return [
            dict(zip(self.labels, map(float, row), strict=True)) for row in self.predict_array(features, mask)
        ]


class HeadRegistry:
    """The head bundles installed under a models directory."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self.bundles = self.scan(self.models_dir)

    @staticmethod
    def scan(models_dir: Path) -> list[InstalledBundle]:
        """Every valid bundle up to two levels below ``models_dir`` (invalid ones are logged and skipped)."""
        root = Path(models_dir)
        if not root.is_dir():
            return []
        found: list[InstalledBundle] = []
        cards = sorted({*root.glob(f"*/{CARD_FILE}"), *root.glob(f"*/*/{CARD_FILE}")})
        for card_path in cards:
            try:
                card = read_card(card_path.parent)
            except BundleError as exc:
                log.warning("skipping head bundle %s: %s", card_path.parent.name, exc)
                continue
            found.append(
                InstalledBundle(
                    task=card.task,
                    version=card.version,
                    trained=card.trained,
                    encoder_fingerprint=card.encoder.fingerprint,
                    path=card_path.parent,
                    card=card,
                )
            )
        return found

    def applicable(self, pipeline: str, encoder_fingerprint: str | None = None) -> list[InstalledBundle]:
        """The best bundle per task for ``pipeline`` (see the module docstring for the order)."""
        try:
            spec = pipeline_spec(pipeline)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        anatomy, modality = spec.anatomy, spec.modality
        best: dict[str, InstalledBundle] = {}
        for bundle in self.bundles:
            if bundle.anatomy != anatomy or bundle.modality != modality:
                continue
            if encoder_fingerprint is not None and bundle.encoder_fingerprint != encoder_fingerprint:
                log.warning(
                    "head bundle %s skipped: trained on encoder %s, the node runs %s",
                    bundle.path.name,
                    bundle.encoder_fingerprint,
                    encoder_fingerprint,
                )
                continue
            current = best.get(bundle.task)
            rank = (bundle.trained, _version_key(bundle.version))
            if current is None or rank > (current.trained, _version_key(current.version)):
                best[bundle.task] = bundle
        return [best[t] for t in sorted(best)]

    def for_pipeline(self, pipeline: str, encoder_fingerprint: str) -> list[InstalledHead]:
        """Loaded heads for ``pipeline`` that match the running encoder."""
        return [
            load_head(b.path, encoder_fingerprint) for b in self.applicable(pipeline, encoder_fingerprint)
        ]


def load_head(path: Path, encoder_fingerprint: str | None = None) -> InstalledHead:
    """Load one bundle directory (refusing another encoder's bundle when a fingerprint is given)."""
    loaded = load_bundle(path, encoder_fingerprint=encoder_fingerprint)
    return InstalledHead(loaded.card, loaded.head, loaded.path)
