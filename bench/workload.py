"""What the benchmarks give the gateway: realistic instances, the DICOM basic profile and a project secret.

The instances (a scanner's 0.5 MB CT slice, a large multi-frame) come from `karnak_dicom.testing`, the one
builder of test DICOM, which tests use too: they carry what a modality writes (patient, study, series,
equipment and image modules, sequences, private blocks), so that de-identification has its real work to do.
"""

from __future__ import annotations

from karnak_dicom.deid import parse_project_secret
from karnak_dicom.testing import build_ct, build_multiframe, write_ct_series

__all__ = ["BASIC_PROFILE", "SECRET", "SECRET_TEXT", "build_ct", "build_multiframe", "write_ct_series"]
BASIC_PROFILE = """\
name: "Dicom Basic Profile"
version: "1.0"
profileElements:
  - name: "DICOM basic profile"
    codename: "basic.dicom.profile"
"""
SECRET_TEXT = "5f0c2a33-9b1e-4d6a-8c21-0e7d4b9a1f35"
SECRET = parse_project_secret(SECRET_TEXT)
