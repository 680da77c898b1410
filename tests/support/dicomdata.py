"""Kept for older imports: the one builder of test DICOM is `karnak_dicom.testing`; import it from there."""

from karnak_dicom.testing import (
    ACCESSION_NUMBER,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    StudyFiles,
    dataset_bytes,
    make_instance,
    make_study,
    with_image,
    with_jpeg_like_image,
    write_file,
)

__all__ = [
    "ACCESSION_NUMBER",
    "PATIENT_BIRTH_DATE",
    "PATIENT_ID",
    "PATIENT_NAME",
    "StudyFiles",
    "dataset_bytes",
    "make_instance",
    "make_study",
    "with_image",
    "with_jpeg_like_image",
    "write_file",
]
