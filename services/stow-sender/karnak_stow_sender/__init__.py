"""Karnak gateway service: delivers instances to DICOMweb destinations with STOW-RS."""
