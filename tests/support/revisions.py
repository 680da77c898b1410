"""Configuration files for the revision tests: service settings with a database, and routing documents."""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

import yaml

PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
# A literal project secret: stored encrypted, so no output, log or table may ever show it.
SECRET = "5ec7e7a1c0ffee5ec7e7a1c0ffee5ec7"
KEY = base64.b64encode(bytes(range(32))).decode()


def routing(port: int = 11113, secret: str = SECRET, profile: str | Path = PROFILE) -> dict[str, Any]:
    """Routing keys: a forward node with a plain destination and a de-identifying one, and its project."""
    return {
        "forward_nodes": [
            {
                "ae_title": "KARNAK-GW",
                "sources": [{"ae_title": "CT01"}],
                "destinations": [
                    {"id": "pacs-a", "type": "dicom", "ae_title": "PACS", "hostname": "localhost", "port": port},
                    {
                        "id": "research",
                        "type": "dicom",
                        "ae_title": "RESEARCH",
                        "hostname": "localhost",
                        "port": 104,
                        "deidentification": {"project": "study-x"},
                    },
                ],
            }
        ],
        "projects": [{"name": "study-x", "secret": secret, "profile": str(profile)}],
    }


def settings(db_url: str, *, key: str | None = KEY, source: str = "database", **more: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"database": {"url": db_url}, "configuration": {"source": source}, **more}
    if key is not None:
        values["secrets"] = {"key": key}
    return values


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed in, as an editor or kubelet does: a reader never sees half a file.
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(yaml.safe_dump(copy.deepcopy(data), sort_keys=False), encoding="utf-8")
    os.replace(scratch, path)
    return path
