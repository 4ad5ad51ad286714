"""Decide which task pipelines a complete study feeds.

A pure package: :class:`StudyFacts` (what the index knows about a study's series, read from the header
elements of PS3.3) goes in, a :class:`RoutingDecision` (zero or more :class:`Route` and a human-readable
reason) comes out. No I/O, no database, no pydicom. Per image, :func:`decide_view` (:mod:`.views`) says
which projection a radiograph's header names (:class:`ViewFacts` in, :class:`ViewDecision` out).

One module per job: :mod:`.facts` (the typed hand-offs), :mod:`.kinds` (rule 1), :mod:`.anatomy` and
:mod:`.text` (rule 2), :mod:`.mri` (rule 5), :mod:`.laterality` (rule 6) and :mod:`.routing` (rules 3, 4
and 7, :func:`route_study`). Callers import from this package.

Rules, in the order :func:`route_study` applies them:

1. **Series kind** (PS3.3 C.7.3.1 Modality (0008,0060), PS3.4 Annex B / PS3.6 Annex A SOP Class UIDs).
   A series whose SOP Class (under the storage root ``1.2.840.10008.5.1.4.1.1``) is a Structured Report
   or Key Object Selection (``.88.x``), Secondary Capture (``.7[.x]``), Presentation State (``.11.x``),
   Raw Data / Spatial Registration / Segmentation (``.66[.x]``) or Encapsulated Document (``.104.x``), or
   whose Modality is SR, KO, PR, SEG, OT, DOC or REG, is a *result or derived object* and never an input:
   the node's own results come back to it as SR and SC. Otherwise the SOP Class decides (CR and both DX
   Image Storage classes: radiograph; MR, Enhanced MR and Legacy Converted Enhanced MR Image Storage:
   MRI; CT classes: CT) and, for a SOP Class outside those, the Modality does (CR, DX: radiograph; MR:
   MRI; CT: CT). CT is accepted by the node but no pipeline uses it yet; any other modality is not used.
   A series with no instance is skipped.
2. **Anatomy per series** (:func:`detect_anatomy`): the first source that decides wins.

   a. Body Part Examined (0018,0015), PS3.3 C.7.3.1, with the defined terms of PS3.16 Annex L
      ("Correspondence of Anatomic Region Codes and Body Part Examined Defined Terms", CID 4031 "Common
      Anatomic Regions"): KNEE and PATELLA are the knee, HIP the hip, SHOULDER the shoulder, ANKLE the
      ankle (spaces, underscores and a ``JOINT`` suffix are tolerated, as are vendor values that name the
      joint as a word, e.g. ``L KNEE``). A term for a clearly different region (FOOT, HAND, WRIST, ELBOW,
      FEMUR, HUMERUS, CHEST, the spine, ... see ``_OTHER_BODY_PARTS``) decides "not a supported joint".
      Generic terms that may contain a joint (LEG, LOWERLIMB, EXTREMITY, LOWEREXTREMITY, PELVIS - an AP
      pelvis is a hip view - and unknown vendor values) do not decide.
   b. Series Description (0008,103E), then Study Description (0008,1030), then Protocol Name (0018,1030):
      case- and accent-insensitive keywords with word boundaries (so SHIP, WHIPLASH and ANKLET match
      nothing): knee(s), genou, patella, patellofemoral, menisc..., ACL, PCL; hip(s), hanche,
      acetabul..., femoral head; shoulder(s), epaule, rotator cuff, glenohumeral, supraspinatus; ankle(s),
      cheville, talus, talocrural, ATFL. A text naming two joints (``HIP TO ANKLE``) does not decide.
   c. Anatomic Region Sequence (0008,2218), PS3.3 Section 10.5 (General Anatomy Macros) with the Code
      Sequence Macro (PS3.3 Table 8.8-1): SNOMED CT (scheme SCT) 72696002 knee, 24136001 hip joint,
      16982005 shoulder, 70258002 ankle joint (the CID 4031 codes) and the legacy SNOMED-RT codes (scheme
      SRT or SNM3) T-15720 knee joint, T-15710 hip joint, T-15420 shoulder joint, T-15750 ankle joint;
      failing a known code, the Code Meanings are matched like the descriptions. Codes naming two joints
      do not decide.
3. **Adoption**: a radiograph or MRI series whose anatomy nothing decided adopts the anatomy of the other
   series of the same kind when all those that were decided agree on one supported joint (a knee MRI
   whose one series lacks Body Part Examined); otherwise it is ignored and the reason names it. A series
   whose anatomy differs from the study's majority is routed by its own anatomy.
4. **Pipelines** (:data:`PIPELINES`, one line per pipeline): all series of one (anatomy, kind) feed one
   route per pipeline for that pair. An (anatomy, kind) without a pipeline (hip, shoulder or ankle
   radiographs today) is not routed and the reason says so.
5. **MRI series roles**: plane from Image Orientation (Patient) (0020,0037), PS3.3 C.7.6.2.1.1
   (:func:`plane_from_orientation`), weighting and fat suppression from Series Description, Protocol
   Name and Sequence Name (0018,0024) keywords (:func:`mri_weighting`). Localizers (description or
   protocol says LOC, LOCALIZER, SCOUT, SURVEY, 3-PLANE, or fewer than 3 instances of a single-frame MR
   SOP Class; Enhanced MR is multi-frame, so its instance count says nothing) are excluded. A series with
   no orientation is kept with plane None; a series whose plane the pipeline does not use (an oblique
   knee series) is excluded and the reason says so.
6. **Laterality**: a series' side is its Laterality (0020,0060) (PS3.3 C.7.3.1), else the distinct Image
   Laterality (0020,0062) values of its instances (e.g. PS3.3 C.8.11.5 DX Anatomy Imaged): one L or R
   gives that side, a B value or both L and R give B (bilateral); U and absent mean unknown. A route's
   laterality is L or R when all its sided series agree, B when both sides occur, None when no series
   has a side.
7. Nothing routable gives ``RoutingDecision(routes=(), reason=...)`` where the reason names what was
   seen (kinds, modalities, anatomies found, where anatomy was looked for).
"""

from orthonode.completion.selection.anatomy import (
    SOURCE_ANATOMIC_REGION,
    SOURCE_BODY_PART,
    SOURCE_PROTOCOL_NAME,
    SOURCE_SERIES_DESCRIPTION,
    SOURCE_STUDY_DESCRIPTION,
    detect_anatomy,
)
from orthonode.completion.selection.facts import Route, RoutingDecision, SeriesFacts, SeriesRole, StudyFacts
from orthonode.completion.selection.laterality import series_laterality
from orthonode.completion.selection.mri import (
    OBLIQUE_THRESHOLD,
    is_localizer,
    mri_weighting,
    plane_from_orientation,
)
from orthonode.completion.selection.routing import route_study
from orthonode.completion.selection.views import (
    SOURCE_IMAGE_COMMENTS,
    SOURCE_PROCESSING_DESCRIPTION,
    SOURCE_VIEW_CODE,
    SOURCE_VIEW_POSITION,
    ViewDecision,
    ViewFacts,
    ViewKind,
    decide_view,
)
from orthonode.tasks.pipelines import PIPELINES, Anatomy, ModalityKind, PipelineSpec, Plane

__all__ = [
    "OBLIQUE_THRESHOLD",
    "PIPELINES",
    "SOURCE_ANATOMIC_REGION",
    "SOURCE_BODY_PART",
    "SOURCE_IMAGE_COMMENTS",
    "SOURCE_PROCESSING_DESCRIPTION",
    "SOURCE_PROTOCOL_NAME",
    "SOURCE_SERIES_DESCRIPTION",
    "SOURCE_STUDY_DESCRIPTION",
    "SOURCE_VIEW_CODE",
    "SOURCE_VIEW_POSITION",
    "Anatomy",
    "ModalityKind",
    "PipelineSpec",
    "Plane",
    "Route",
    "RoutingDecision",
    "SeriesFacts",
    "SeriesRole",
    "StudyFacts",
    "ViewDecision",
    "ViewFacts",
    "ViewKind",
    "decide_view",
    "detect_anatomy",
    "is_localizer",
    "mri_weighting",
    "plane_from_orientation",
    "route_study",
    "series_laterality",
]
