"""Tests of the receiver: the DICOM port, its limits and its answers."""
