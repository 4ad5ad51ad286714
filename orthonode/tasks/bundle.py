"""Head bundles: the unit a trained head ships in, and what the node loads.

A bundle is a directory ``<task>-<version>/`` holding

* ``head.safetensors``: the head's state dict (contiguous CPU float32 tensors, including the feature
  standardisation buffers);
* ``head.json``: the :class:`HeadCard` (format ``orthonode-head/1``; unknown keys are an error): the
  task, its labels and codes (``[value, scheme, meaning]``, from ``orthonode.encode.codes``), decision
  thresholds, the input spec (image size, features ``cls`` | ``cls+meanpatch``, slice count / strategy
  for MRI), the head kind and hyper-parameters, the decoding rule (``argmax`` | ``median`` |
  ``expected``, :mod:`orthonode.tasks.decoding`), the fingerprint and name of the encoder it was trained
  on, ``trained``, and its metrics with CIs and the data they were computed on.

:func:`load_bundle` refuses a bundle trained on another encoder (:class:`EncoderMismatchError` names
both fingerprints): a head is meaningless on features of a different encoder. :func:`random_bundle`
writes a random, clearly UNTRAINED head (name contains "untrained", ``trained: false``) for tests and
for the demo until a trained head ships.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom.sr.coding import Code
from safetensors.torch import load_file, save_file

from orthonode.errors import OrthonodeError
from orthonode.inference.layout import HEAD_CARD_FILE
from orthonode.inference.preprocess import SliceStrategy
from orthonode.tasks.decoding import Decoding, check_decoding
from orthonode.tasks.modules import (
    FEATURE_MODES,
    HEAD_KINDS,
    FeatureMode,
    Head,
    HeadKind,
    build_head,
    feature_dim,
)
from orthonode.tasks.pipelines import Anatomy, ModalityKind
from orthonode.tasks.registry import InputKind, TaskSpec, get_task
from orthonode.tasks.tta import TTAMode, check_mode

FORMAT = "orthonode-head/1"
WEIGHTS_FILE = "head.safetensors"
CARD_FILE = HEAD_CARD_FILE
UNTRAINED_VERSION = "untrained"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

CodeTriple = tuple[str, str, str]


class BundleError(OrthonodeError):
    """A head bundle that cannot be used (missing files, invalid card, weights that do not fit)."""


class EncoderMismatchError(BundleError):
    """A bundle trained on a different encoder than the one it would run on."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodesModel(_Strict):
    concept: CodeTriple
    values: list[CodeTriple]
    finding_site: CodeTriple


class InputModel(_Strict):
    kind: InputKind
    img_size: int = Field(gt=0)
    patch: int = Field(default=16, gt=0)
    features: FeatureMode
    slices: int | None = Field(default=None, gt=0)
    strategy: SliceStrategy | None = None
    plane: str | None = None
    #: Test-time augmentation the head was scored with and the node applies (:mod:`orthonode.tasks.tta`).
    tta: TTAMode = "none"


class HeadModel(_Strict):
    kind: HeadKind
    in_dim: int = Field(gt=0)
    num_classes: int = Field(ge=2)
    hparams: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)  # fit configuration, epochs, data summary
    #: How its probabilities become the reported class (:mod:`orthonode.tasks.decoding`).
    decode: Decoding = "argmax"


class EncoderRef(_Strict):
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$")
    name: str


class MetricModel(_Strict):
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_boot: int | None = None


class EvaluationModel(_Strict):
    dataset: str
    split: str
    n_samples: int
    n_patients: int
    real: bool  # real data (e.g. knee_kl224) or a fixture


class HeadCard(_Strict):
    """``head.json``."""

    format: Literal["orthonode-head/1"]
    name: str = Field(min_length=1)
    task: str
    title: str
    anatomy: Anatomy  # the vocabulary of orthonode.tasks.pipelines, stored as its value ("knee")
    modality: ModalityKind
    labels: list[str]
    codes: CodesModel
    thresholds: dict[str, float] = Field(default_factory=dict)
    input: InputModel
    head: HeadModel
    version: str = Field(pattern=_VERSION.pattern)
    encoder: EncoderRef
    trained: bool
    metrics: dict[str, MetricModel] = Field(default_factory=dict)
    evaluated_on: EvaluationModel | None = None
    created: str

    @property
    def dirname(self) -> str:
        return f"{self.task}-{self.version}"


def code_triple(code: Code) -> CodeTriple:
    return (str(code.value), str(code.scheme_designator), str(code.meaning))


def codes_for(task: TaskSpec) -> CodesModel:
    codes = task.codes
    return CodesModel(
        concept=code_triple(codes.concept),
        values=[code_triple(v) for v in codes.values],
        finding_site=code_triple(codes.finding_site),
    )


def encoder_fields(encoder: Any) -> dict[str, Any]:
    """:func:`make_card`'s encoder arguments from a loaded ``orthonode.inference.encoder.Encoder``."""
    return {
        "encoder_fingerprint": encoder.fingerprint,
        "encoder_name": encoder.card.name,
        "img_size": int(encoder.card.img_size),
        "patch": int(encoder.card.patch_size),
    }


def make_card(
    task: TaskSpec,
    head: Head,
    *,
    encoder_fingerprint: str,
    encoder_name: str,
    img_size: int,
    features: str,
    version: str,
    trained: bool,
    patch: int = 16,
    name: str | None = None,
    thresholds: dict[str, float] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, dict[str, Any]] | None = None,
    evaluated_on: dict[str, Any] | None = None,
    tta: str = "none",
    decode: str = "argmax",
) -> HeadCard:
    """The card of ``head`` for ``task`` (labels and codes from the registry; checked against the head)."""
    if head.num_classes != task.num_classes:
        raise BundleError(f"{task.name}: head has {head.num_classes} classes, the task {task.num_classes}")
    if features not in FEATURE_MODES:
        raise BundleError(f"unknown feature mode {features!r}")
    slice_input = task.input.kind == "mri_slices"
    try:
        rule = check_decoding(decode, ordinal=task.ordinal)
    except ValueError as exc:
        raise BundleError(f"{task.name}: {exc}") from exc
    if slice_input and tta != "none":
        raise BundleError(f"{task.name}: test-time augmentation applies to radiograph heads only")
    if trained:
        default_name = f"OrthoFoundation {task.title}"
    else:
        default_name = f"OrthoFoundation {task.title} (UNTRAINED random head, untrained)"
    if not trained and "untrained" not in (name or default_name).lower():
        raise BundleError("an untrained bundle's name must say 'untrained'")
    clean_metrics = {
        k: MetricModel(**{f: v.get(f) for f in ("value", "ci_low", "ci_high", "n_boot")})
        for k, v in (metrics or {}).items()
    }
    return HeadCard(
        format=FORMAT,
        name=name or default_name,
        task=task.name,
        title=task.title,
        anatomy=task.anatomy,
        modality=task.modality,
        labels=list(task.labels),
        codes=codes_for(task),
        thresholds=dict(thresholds if thresholds is not None else ({"positive": 0.5} if task.binary else {})),
        input=InputModel(
            kind=task.input.kind,
            img_size=img_size,
            patch=patch,
            features=features,
            slices=task.input.slices if slice_input else None,
            strategy=task.input.strategy if slice_input else None,
            plane=task.input.plane,
            tta=check_mode(tta),
        ),
        head=HeadModel(
            kind=head.kind,
            in_dim=head.in_dim,
            num_classes=head.num_classes,
            hparams=head.hparams(),
            training=dict(training or {}),
            decode=rule,
        ),
        version=version,
        encoder=EncoderRef(fingerprint=encoder_fingerprint, name=encoder_name),
        trained=trained,
        metrics=clean_metrics,
        evaluated_on=EvaluationModel(**evaluated_on) if evaluated_on else None,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def save_bundle(head: Head, card: HeadCard, out_root: Path, *, overwrite: bool = False) -> Path:
    """Write ``out_root/<task>-<version>/`` (weights first, then the card); returns the directory."""
    if (
        head.kind != card.head.kind
        or head.in_dim != card.head.in_dim
        or head.num_classes != card.head.num_classes
    ):
        raise BundleError("the card does not describe this head (kind, in_dim or num_classes differ)")
    directory = Path(out_root) / card.dirname
    if directory.exists() and not overwrite and (directory / CARD_FILE).exists():
        raise BundleError(f"bundle {directory} exists already (bump the version or pass overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in head.state_dict().items()
    }
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "task": card.task, "version": card.version})
    tmp.chmod(0o644)  # safetensors creates the file owner-only; a bundle is read by the node's service user
    tmp.replace(directory / WEIGHTS_FILE)
    tmp = directory / f".{CARD_FILE}.tmp"
    tmp.write_text(
        json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    tmp.replace(directory / CARD_FILE)
    return directory


def read_card(directory: Path) -> HeadCard:
    """The validated ``head.json`` of a bundle directory."""
    path = Path(directory) / CARD_FILE
    try:
        return HeadCard.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{directory}: no {CARD_FILE}") from None
    except ValidationError as exc:
        raise BundleError(f"{path}: invalid head card: {exc}") from exc


@dataclass
class LoadedBundle:
    card: HeadCard
    head: Head
    path: Path


def build_from_card(card: HeadCard) -> Head:
    if card.head.kind not in HEAD_KINDS:
        raise BundleError(f"unknown head kind {card.head.kind!r}")
    try:
        return build_head(card.head.kind, card.head.in_dim, card.head.num_classes, **card.head.hparams)
    except ValueError as exc:
        raise BundleError(f"{card.dirname}: {exc}") from exc


def load_bundle(directory: Path, *, encoder_fingerprint: str | None = None) -> LoadedBundle:
    """Load a bundle; with ``encoder_fingerprint``, refuse one trained on another encoder."""
    directory = Path(directory)
    card = read_card(directory)
    if encoder_fingerprint is not None and card.encoder.fingerprint != encoder_fingerprint:
        raise EncoderMismatchError(
            f"head bundle {directory.name} was trained on encoder {card.encoder.fingerprint} "
            f"({card.encoder.name}) but the loaded encoder is {encoder_fingerprint}: "
            "features differ between encoders, retrain or install the matching encoder"
        )
    if len(card.labels) != card.head.num_classes or len(card.codes.values) != card.head.num_classes:
        raise BundleError(
            f"{directory.name}: labels/codes do not match the head's {card.head.num_classes} classes"
        )
    try:
        check_decoding(card.head.decode, ordinal=get_task(card.task).ordinal)
    except (KeyError, ValueError) as exc:
        raise BundleError(f"{directory.name}: {exc}") from exc
    head = build_from_card(card)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except FileNotFoundError:
        raise BundleError(f"{directory}: no {WEIGHTS_FILE}") from None
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{directory.name}: weights do not fit the head in the card: {exc}") from exc
    head.eval()
    return LoadedBundle(card, head, directory)


def random_bundle(
    task: str | TaskSpec,
    encoder: Any,
    out_dir: Path,
    *,
    features: str = "cls+meanpatch",
    kind: str | None = None,
    seed: int = 0,
    overwrite: bool = True,
) -> Path:
    """A RANDOM head for ``task`` on ``encoder`` (an ``Encoder``): ``<task>-untrained/``, ``trained: false``.

    For tests and for the demo until a trained head ships; its name says UNTRAINED and every report the
    node writes from it must say so.
    """
    spec = get_task(task) if isinstance(task, str) else task
    if kind is None:
        kind = "attention" if spec.input.kind == "mri_slices" else ("ordinal" if spec.ordinal else "linear")
    torch.manual_seed(seed)
    head = build_head(kind, feature_dim(int(encoder.embed_dim), features), spec.num_classes)
    card = make_card(
        spec,
        head,
        **encoder_fields(encoder),
        features=features,
        version=UNTRAINED_VERSION,
        trained=False,
        training={"note": "random initialisation, never trained"},
    )
    return save_bundle(head, card, out_dir, overwrite=overwrite)
