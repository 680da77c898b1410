"""karnak_dicom knows nothing of RabbitMQ or of the gateway's services: importing it imports neither."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "karnak_dicom",
    "karnak_dicom.attributes",
    "karnak_dicom.conditions",
    "karnak_dicom.deid",
    "karnak_dicom.instance",
    "karnak_dicom.language",
    "karnak_dicom.located_yaml",
    "karnak_dicom.part10",
    "karnak_dicom.pixels",
    "karnak_dicom.testing",
    "karnak_dicom.transcoding",
    "karnak_dicom._internals",
]


def test_importing_the_dicom_library_imports_neither_pika_nor_karnak_shared() -> None:
    # A fresh interpreter: this test process has imported everything already.
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {MODULES!r}]; "
        "found = {'pika', 'karnak_shared'} & {name.split('.')[0] for name in sys.modules}; "
        "sys.exit(f'imported {sorted(found)}' if found else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr + result.stdout
