"""Kept for the tests' imports: this lives in the runtime's testing kit, which the benchmarks use too."""

from karnak_shared.service.testing.dicomdata import (
    ACCESSION_NUMBER,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    StudyFiles,
    _base,
    _image,
    _jpeg_like_image,
    _write,
    dataset_bytes,
    make_study,
)

__all__ = [
    "ACCESSION_NUMBER",
    "PATIENT_BIRTH_DATE",
    "PATIENT_ID",
    "PATIENT_NAME",
    "StudyFiles",
    "_base",
    "_image",
    "_jpeg_like_image",
    "_write",
    "dataset_bytes",
    "make_study",
]
