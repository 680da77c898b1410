"""Orthanc with its DICOMweb plugin, started by a test on loopback ports with a configuration of the test."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karnak_shared.service.testing.servers import free_port, wait_until

INSTALL_HINT = "apt-get install -y orthanc orthanc-dicomweb (CI's .ci/run does it)"


def orthanc_binary() -> str:
    path = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if path is None:
        raise RuntimeError(f"Orthanc is not installed: {INSTALL_HINT}")
    return path


def dicomweb_plugin() -> str:
    """The DICOMweb plugin's shared library, as the Debian package installed it."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"Orthanc's DICOMweb plugin is not installed ({exc}): {INSTALL_HINT}") from None
    libraries = [line for line in listing.splitlines() if "DicomWeb" in line and ".so" in line]
    existing = [path for path in libraries if Path(path).is_file()]
    if not existing:
        raise RuntimeError(f"orthanc-dicomweb lists no plugin library: {INSTALL_HINT}")
    return sorted(existing, key=len)[0]


@dataclass
class Orthanc:
    """An Orthanc process of the test: DICOMweb at `/dicom-web/`, HTTP basic auth on (`user`/`password`)."""

    workdir: Path
    user: str = "karnak"
    password: str = "s3cret-Orthanc"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def stow_url(self) -> str:
        return f"{self.url}/dicom-web/studies"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "KARNAK-TEST",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "HttpThreadsCount": 8,
            "HttpCompressionEnabled": False,
            "SaveJobs": False,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }

    def start(self, timeout: float = 30.0) -> Orthanc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        self.process = subprocess.Popen(
            [orthanc_binary(), str(config_path)],
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        wait_until(self._answers, timeout, f"Orthanc answering on {self.url} (see {self.log_path})")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.process.returncode}:\n{self.log()}")
        try:
            self.get("/system")
            return True
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def get(self, path: str) -> Any:
        """GET a REST resource of Orthanc (with the credentials) and decode its JSON."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": self.authorization})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every instance stored."""
        instances = self.get("/instances?expand")
        return {str(i["MainDicomTags"]["SOPInstanceUID"]) for i in instances}

    def instance_tags(self) -> dict[str, dict[str, Any]]:
        """The simplified tags of every instance, by SOP Instance UID."""
        out: dict[str, dict[str, Any]] = {}
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            out[str(tags["SOPInstanceUID"])] = tags
        return out

    def file_bytes(self, sop_instance_uid: str) -> bytes:
        """The Part 10 file Orthanc stored for an instance."""
        found = self.post_json("/tools/lookup", sop_instance_uid.encode())
        orthanc_id = next(item["ID"] for item in found if item["Type"] == "Instance")
        request = urllib.request.Request(
            f"{self.url}/instances/{orthanc_id}/file", headers={"Authorization": self.authorization}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return bytes(answer.read())

    def post_json(self, path: str, body: bytes) -> Any:
        request = urllib.request.Request(
            self.url + path, data=body, method="POST", headers={"Authorization": self.authorization}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def wait_for_instances(self, count: int, timeout: float = 60.0) -> None:
        wait_until(lambda: self.instance_count() >= count, timeout, f"{count} instances in Orthanc")
        time.sleep(0.2)
