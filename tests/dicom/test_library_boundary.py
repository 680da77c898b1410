"""karnak_dicom knows nothing of RabbitMQ or of the gateway's services: importing it imports neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import karnak_dicom

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


# pydicom itself imports urllib and requests (to fetch its test data), so what matters is the library's code;
# its DICOM sockets (pynetdicom internals) are not HTTP.
HTTP_MODULES = ("urllib.request", "http.", "httpx", "requests", "aiohttp", "urllib3")


def test_the_dicom_library_calls_no_http_itself_its_users_inject_callers() -> None:
    found = []
    for path in Path(karnak_dicom.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: {n}" for n in names if n in ("urllib", "http") or n.startswith(HTTP_MODULES)]
    assert found == []
