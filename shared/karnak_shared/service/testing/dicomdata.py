"""The test studies of the runtime's testing kit are the DICOM library's: `karnak_dicom.testing` builds them.

The library cannot import karnak_shared, so the one builder lives there; this name stays for code that
looks for it beside the kit's servers.
"""

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
