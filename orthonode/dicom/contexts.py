"""What the node accepts on the wire: storage SOP classes, transfer syntaxes and the C-STORE statuses it
answers with. The Conformance Statement is generated from these constants (``conformance.statement``).

References: PS3.4 Annex B (Storage Service Class; statuses in Table B.2-1), PS3.5 Section 10 and Annex A
(transfer syntaxes), PS3.6 Annex A (UID registry).
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

VERIFICATION = "1.2.840.10008.1.1"


# Every syntax here is decodable by the node (pydicom with GDCM, pylibjpeg-openjpeg, pyjpegls,
# pylibjpeg-rle; 12-bit JPEG Extended through GDCM directly, see orthonode.inference.loading).
UNCOMPRESSED_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
TRANSFER_SYNTAXES: tuple[str, ...] = (
    *UNCOMPRESSED_SYNTAXES,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
)
# Non-image objects (SR, KOS) are only ever encoded in the uncompressed syntaxes.
NON_IMAGE_SYNTAXES: tuple[str, ...] = (*UNCOMPRESSED_SYNTAXES, DeflatedExplicitVRLittleEndian)


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 Table B.2-1). Codes within a class name our reason."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700  # free disk below the watermark, or the index is unavailable: retry later
    INSTANCE_TOO_LARGE = 0xA701  # over max_instance_bytes
    STUDY_TOO_LARGE = 0xA702  # over max_instances_per_study
    SOP_CLASS_MISMATCH = 0xA900  # dataset's SOP Class differs from the one negotiated / in the command
    CANNOT_UNDERSTAND = 0xC210  # not parseable, truncated, or no Pixel Data in an image object
    MISSING_IDENTIFIER = 0xC212  # a required UID (study, series, SOP class or instance) is absent
    INVALID_UID = 0xC213  # a UID that is not a valid PS3.5 §9.1 UID
    IDENTIFIER_MISMATCH = 0xC214  # SOP Instance UID in the dataset differs from the command's


#: What each status means for the sender, as the Conformance Statement and the README say it.
STORE_STATUS_MEANINGS: dict[StoreStatus, str] = {
    StoreStatus.SUCCESS: "stored durably (fsynced, renamed into place, indexed) or an identical resend",
    StoreStatus.OUT_OF_RESOURCES: "free disk below min_free_bytes, the index unavailable, or an internal "
    "error: nothing was kept; send again later",
    StoreStatus.INSTANCE_TOO_LARGE: "the instance is larger than max_instance_bytes",
    StoreStatus.STUDY_TOO_LARGE: "the study already holds max_instances_per_study instances",
    StoreStatus.SOP_CLASS_MISMATCH: "the dataset's SOP Class UID differs from the negotiated one",
    StoreStatus.CANNOT_UNDERSTAND: "not parseable, truncated, or an image object without Pixel Data",
    StoreStatus.MISSING_IDENTIFIER: "Study, Series, SOP Class or SOP Instance UID missing",
    StoreStatus.INVALID_UID: "a UID that is not valid per PS3.5 section 9.1",
    StoreStatus.IDENTIFIER_MISMATCH: "the dataset's SOP Instance UID differs from the C-STORE request's",
}
