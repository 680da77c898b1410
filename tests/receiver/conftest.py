"""A receiver started as its own process (`karnak run receiver`), so its memory is its own to measure."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from karnak_shared.config import parse_config
from tests.conftest import gateway_config, register_topology
from tests.support.servers import free_port, wait_for_port, wait_until


class ReceiverProcess:
    """`karnak run receiver` on a configuration of the test; its log in `workdir/receiver.log`."""

    def __init__(self, amqp_url: str, prefix: str, workdir: Path, **listener: Any) -> None:
        self.config = gateway_config(amqp_url, prefix, workdir, destinations=[])
        self.config["listener"].update(listener)
        self.config["logging"] = {"level": "DEBUG"}
        self.workdir = workdir
        self.log_path = workdir / "receiver.log"
        self.config_path = workdir / "karnak.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        register_topology(amqp_url, parse_config(self.config_path.read_text(), str(self.config_path)))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.config["listener"]["port"])

    @property
    def metrics_port(self) -> int:
        return int(self.config["metrics"]["ports"]["receiver"])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ReceiverProcess:
        command = [sys.executable, "-m", "karnak_shared.cli", "run", "receiver", "--config", str(self.config_path)]
        self.process = subprocess.Popen(command, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=30)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.log(), timeout, f"{text!r} in {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def start_receiver(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Any]:
    """Start a receiver process with these listener settings (stopped at the end of the test)."""
    started: list[ReceiverProcess] = []

    def start(**listener: Any) -> ReceiverProcess:
        receiver = ReceiverProcess(amqp_url, prefix, tmp_path, **listener).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


__all__ = ["ReceiverProcess", "free_port"]
