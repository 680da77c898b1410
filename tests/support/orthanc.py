"""Kept for the tests' imports: this lives in the runtime's testing kit, which the benchmarks use too."""

from karnak_shared.service.testing.orthanc import (
    INSTALL_HINT,
    Orthanc,
    dicomweb_plugin,
    orthanc_binary,
)

__all__ = [
    "INSTALL_HINT",
    "Orthanc",
    "dicomweb_plugin",
    "orthanc_binary",
]
