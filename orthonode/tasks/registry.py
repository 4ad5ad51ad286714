"""The task registry: one :class:`TaskSpec` per downstream task of the OrthoFoundation paper.

Yu et al., *A multimodal vision foundation model for generalizable knee pathology* (OrthoFoundation),
2026, arXiv:2601.18250: 14 downstream tasks on knee radiographs (KL grading, OA progression, total knee
replacement) and knee MRI (ligament, meniscus, cartilage and bone injuries), plus cross-anatomy transfer
to hip, shoulder and ankle MRI. Tasks are registered with :func:`register_task` (the pattern of timm's
``register_model``): the node chooses heads at run time by pipeline (see :func:`tasks_for`).

Labels and coded concepts are *not* typed here: they come from ``orthonode.encode.codes.TASK_CONCEPTS``
(the SR writer's single source of codes), in label order, so head class ``i`` is code ``values[i]``.

The paper's per-task numbers are not transcribed into this repository (we had no reliable copy of its
tables); :attr:`TaskSpec.paper` therefore carries the metric and the reference, with ``value=None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from orthonode.encode.codes import TASK_CONCEPTS, TaskCodes
from orthonode.tasks.pipelines import Anatomy, ModalityKind, pipeline_spec

InputKind = Literal["radiograph", "mri_slices"]

PAPER = "Yu et al. 2026, OrthoFoundation, arXiv:2601.18250"

#: Default number of slices fed to the attention-pooling head for MRI tasks.
DEFAULT_MRI_SLICES = 16


@dataclass(frozen=True)
class InputSpec:
    """What one sample of the task is: a single radiograph, or a set of MRI slices from one series.

    ``slices`` / ``strategy`` (``orthonode.inference.preprocess.select_slices``) and the preferred
    ``plane`` only apply to ``mri_slices``.
    """

    kind: InputKind
    slices: int | None = None
    strategy: str | None = None
    plane: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "mri_slices" and (self.slices is None or self.slices < 1 or not self.strategy):
            raise ValueError("an MRI slice-set input needs a positive slice count and a selection strategy")
        if self.kind == "radiograph" and (self.slices is not None or self.strategy is not None):
            raise ValueError("a radiograph input has no slice count or strategy")


@dataclass(frozen=True)
class PaperResult:
    """The number the paper reports for the task (``value`` None where not transcribed)."""

    metric: str
    value: float | None = None
    reference: str = PAPER


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: what it looks at, what it answers and how it is scored."""

    name: str
    title: str
    anatomy: Anatomy
    modality: ModalityKind
    input: InputSpec
    ordinal: bool
    metrics: tuple[str, ...]  # metric(s) of record; evaluation computes every metric that applies
    datasets: tuple[str, ...] = ()  # public datasets with labels for the task
    paper: PaperResult | None = None
    notes: str = ""
    _codes: TaskCodes | None = field(default=None, repr=False, compare=False)

    @property
    def codes(self) -> TaskCodes:
        """The task's coded concept and answer codes (``orthonode.encode.codes.TASK_CONCEPTS``)."""
        if self._codes is not None:
            return self._codes
        try:
            return TASK_CONCEPTS[self.name]
        except KeyError:
            raise KeyError(
                f"task {self.name!r} has no entry in orthonode.encode.codes.TASK_CONCEPTS"
            ) from None

    @property
    def labels(self) -> tuple[str, ...]:
        """Label meanings in class order (class ``i`` is ``codes.values[i]``)."""
        return self.codes.labels

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def positive_index(self) -> int | None:
        """Class index of the positive answer for binary tasks (the last one), None otherwise."""
        return 1 if self.binary else None


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(factory: Callable[[], TaskSpec]) -> Callable[[], TaskSpec]:
    """Decorator: register the :class:`TaskSpec` that ``factory`` returns (names must be unique)."""
    spec = factory()
    if spec.name in _REGISTRY:
        raise ValueError(f"task {spec.name!r} is registered twice")
    if spec.ordinal and spec.num_classes < 3:
        raise ValueError(f"task {spec.name!r}: an ordinal task needs at least 3 classes")
    _REGISTRY[spec.name] = spec
    return factory


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; KeyError lists the known tasks."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_tasks() -> list[TaskSpec]:
    """Every registered task, in registration order."""
    return list(_REGISTRY.values())


def iter_tasks(*, anatomy: str | None = None, modality: str | None = None) -> Iterator[TaskSpec]:
    """Registered tasks filtered by anatomy and/or modality."""
    for spec in _REGISTRY.values():
        if anatomy is not None and spec.anatomy != anatomy:
            continue
        if modality is not None and spec.modality != modality:
            continue
        yield spec


def tasks_for(pipeline: str) -> list[TaskSpec]:
    """The tasks a node pipeline (``knee_radiograph``, ``knee_mri``, ``hip_mri``...) can run."""
    spec = pipeline_spec(pipeline)
    return list(iter_tasks(anatomy=spec.anatomy, modality=spec.modality))


# ---------------------------------------------------------------------------------- the tasks

_RADIOGRAPH = InputSpec("radiograph")
_KL_METRICS = ("accuracy", "qwk")
_BINARY_METRICS = ("auroc",)


def _mri(plane: str, slices: int = DEFAULT_MRI_SLICES) -> InputSpec:
    return InputSpec("mri_slices", slices=slices, strategy="uniform", plane=plane)


def _knee_radiograph_binary(name: str, title: str, datasets: tuple[str, ...], notes: str = "") -> TaskSpec:
    return TaskSpec(
        name, title, Anatomy.KNEE, ModalityKind.RADIOGRAPH, _RADIOGRAPH, False, _BINARY_METRICS, datasets,
        PaperResult("AUROC"), notes,
    )  # fmt: skip


def _mri_binary(
    name: str, title: str, anatomy: Anatomy, plane: str, datasets: tuple[str, ...] = (), notes: str = ""
) -> TaskSpec:
    return TaskSpec(
        name,
        title,
        anatomy,
        ModalityKind.MRI,
        _mri(plane),
        False,
        _BINARY_METRICS,
        datasets,
        PaperResult("AUROC"),
        notes,
    )


@register_task
def kl_grade() -> TaskSpec:
    return TaskSpec(
        "kl_grade",
        "Kellgren-Lawrence grade",
        Anatomy.KNEE,
        ModalityKind.RADIOGRAPH,
        _RADIOGRAPH,
        True,
        _KL_METRICS,
        ("chen_kl", "oai"),
        PaperResult("accuracy"),
        "5 ordinal grades; knee_kl224 (Chen 2018) is the real data here",
    )


@register_task
def kl_progression_4y() -> TaskSpec:
    return _knee_radiograph_binary(
        "kl_progression_4y", "KL progression within 4 years", ("oai",), "OAI baseline vs 48-month KL grade"
    )


@register_task
def kl_progression_8y() -> TaskSpec:
    return _knee_radiograph_binary(
        "kl_progression_8y", "KL progression within 8 years", ("oai",), "OAI baseline vs 96-month KL grade"
    )


@register_task
def tkr() -> TaskSpec:
    return _knee_radiograph_binary("tkr", "Total knee replacement", ("oai",), "TKR during OAI follow-up")


@register_task
def acl_injury() -> TaskSpec:
    return _mri_binary("acl_injury", "ACL injury", Anatomy.KNEE, "sagittal", ("mrnet", "kneemri"))


@register_task
def pcl_injury() -> TaskSpec:
    return _mri_binary("pcl_injury", "PCL injury", Anatomy.KNEE, "sagittal")


@register_task
def mcl_injury() -> TaskSpec:
    return _mri_binary("mcl_injury", "MCL injury", Anatomy.KNEE, "coronal")


@register_task
def lcl_injury() -> TaskSpec:
    return _mri_binary("lcl_injury", "LCL injury", Anatomy.KNEE, "coronal")


@register_task
def meniscus_injury() -> TaskSpec:
    return _mri_binary("meniscus_injury", "Meniscus injury", Anatomy.KNEE, "sagittal", ("mrnet",))


@register_task
def cartilage_lesion() -> TaskSpec:
    return _mri_binary("cartilage_lesion", "Cartilage lesion", Anatomy.KNEE, "sagittal")


@register_task
def bone_contusion() -> TaskSpec:
    return _mri_binary("bone_contusion", "Bone contusion", Anatomy.KNEE, "coronal")


@register_task
def mpfl_injury() -> TaskSpec:
    return _mri_binary("mpfl_injury", "MPFL injury", Anatomy.KNEE, "axial")


@register_task
def patellar_dislocation() -> TaskSpec:
    return _mri_binary("patellar_dislocation", "Patellar dislocation", Anatomy.KNEE, "axial")


@register_task
def hip_labral_tear() -> TaskSpec:
    return _mri_binary("hip_labral_tear", "Hip labral tear", Anatomy.HIP, "coronal", notes="cross-anatomy")


@register_task
def supraspinatus_injury() -> TaskSpec:
    return _mri_binary(
        "supraspinatus_injury", "Supraspinatus injury", Anatomy.SHOULDER, "coronal", notes="cross-anatomy"
    )


@register_task
def atfl_injury() -> TaskSpec:
    return _mri_binary("atfl_injury", "ATFL injury", Anatomy.ANKLE, "axial", notes="cross-anatomy")


@register_task
def cfl_injury() -> TaskSpec:
    return _mri_binary("cfl_injury", "CFL injury", Anatomy.ANKLE, "axial", notes="cross-anatomy")


def describe(spec: TaskSpec) -> str:
    """One line per task for ``heads list``."""
    shape = "radiograph" if spec.input.kind == "radiograph" else (
        f"{spec.input.slices} {spec.input.plane} slices ({spec.input.strategy})"
    )  # fmt: skip
    kind = "ordinal" if spec.ordinal else ("binary" if spec.binary else "multiclass")
    return (
        f"{spec.name:<22} {spec.anatomy:<8} {spec.modality:<10} {kind:<7} {spec.num_classes} classes  "
        f"metric {'+'.join(spec.metrics)}  input {shape}  {spec.title}"
    )
