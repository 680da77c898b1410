"""Tests of DICOM reading and writing (karnak_dicom)."""
