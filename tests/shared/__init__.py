"""Tests of the shared library (karnak_shared)."""
