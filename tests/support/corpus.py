"""Builder of a tiny mixed corpus: synthetic DICOM (CR and an MR series), Chen-style PNGs, a NIfTI volume, a
corrupt file and a text file (used by the ``ssl_corpus`` fixture of this folder's conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_PATIENT_ID = "PAT-CR-001"
MR_PATIENT_ID = "PAT-MR-042"


def write_dicom(path: Path, pixels: np.ndarray, sop_class: str, **attributes: Any) -> Dataset:
    """Write a single-frame, uncompressed 16-bit grayscale instance; ``attributes`` are DICOM keywords."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def cr_pixels() -> np.ndarray:
    """A 24x32 ramp of stored values 0..4095 (so min and max are known)."""
    return np.linspace(0, 4095, 24 * 32).round().astype(np.uint16).reshape(24, 32)


def mr_slice(index: int) -> np.ndarray:
    """Slice ``index`` of a 6-slice volume: brightness grows with the slice, slice 5 holds the maximum."""
    rng = np.random.default_rng(index)
    base = rng.integers(0, 200, size=(16, 20)) + 100 * index
    return base.astype(np.uint16)


@dataclass
class Corpus:
    root: Path
    cr: Path
    mr_dir: Path
    pngs: list[Path]
    nifti: Path
    corrupt: Path
    mr_uids: tuple[str, str]


def build_corpus(root: Path) -> Corpus:
    """Write the corpus under ``root`` (created) and describe it."""
    import SimpleITK as sitk  # noqa: N813
    from PIL import Image

    cr = root / "xr" / "cr_knee.dcm"
    write_dicom(
        cr,
        cr_pixels(),
        CR_STORAGE,
        Modality="CR",
        PatientID=CR_PATIENT_ID,
        BodyPartExamined="KNEE",
        ImageLaterality="L",
        PhotometricInterpretation="MONOCHROME1",
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=4000,
        WindowWidth=8001,
    )
    mr_dir = root / "mr" / "series1"
    study, series = generate_uid(), generate_uid()
    for i in [3, 0, 5, 1, 4, 2]:  # written out of order; positions give the order
        write_dicom(
            mr_dir / f"img{[4, 2, 0, 5, 1, 3][i]}.dcm",
            mr_slice(i),
            MR_STORAGE,
            Modality="MR",
            PatientID=MR_PATIENT_ID,
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            SeriesDescription="SAG PD FS KNEE",
            ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
            ImagePositionPatient=[-20.0 + 3.0 * i, 0.0, 0.0],
            InstanceNumber=i + 1,
            RescaleSlope=1,
            RescaleIntercept=0,
        )
    pngs = []
    for side, value in (("L", 40), ("R", 200)):
        png = root / "knee_png" / "train" / "2" / f"9001695{side}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        array = np.full((20, 24), value, dtype=np.uint8)
        array[:, :12] = 255 - value
        Image.fromarray(array).save(png)
        pngs.append(png)
    nifti = root / "nifti" / "sub-07" / "anat" / "sub-07_T2w.nii.gz"
    nifti.parent.mkdir(parents=True, exist_ok=True)
    volume = np.arange(5 * 12 * 10, dtype=np.float32).reshape(5, 12, 10)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(nifti))
    corrupt = root / "xr" / "broken.dcm"
    corrupt.write_bytes(b"this is not a DICOM file" * 10)
    (root / "README.txt").write_text("not an image")
    return Corpus(root, cr, mr_dir, pngs, nifti, corrupt, (study, series))
