"""The `karnak` command as an operator runs it: checks before `up`, progress, Ctrl-C, JSON output."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml

from karnak_dicom.testing import make_study
from karnak_shared import header_names
from karnak_shared.config import GatewayConfig
from tests.conftest import gateway_config, register_topology
from tests.support.servers import free_port

KARNAK = str(Path(sys.executable).with_name("karnak"))
PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
SECRET = "0123456789abcdef0123456789abcdef"


def karnak(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KARNAK, *args], capture_output=True, text=True, input=stdin, timeout=timeout)


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "karnak.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _destination(**fields: Any) -> dict[str, Any]:
    return {"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": 11113, **fields}


def _base(amqp_url: str, prefix: str, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config = gateway_config(amqp_url, prefix, tmp_path, [_destination()], **overrides)
    config.setdefault("database", {"url": f"sqlite:///{tmp_path / 'karnak.db'}"})
    return config


def _assert_refused_before_start(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "starting" not in result.stdout, "a service was started despite the problem"
    assert "nothing was started" in result.stderr
    lines = result.stderr.splitlines()
    problems = [line for line in lines if line.startswith("karnak up: ") and "problem(s)" not in line]
    assert len(problems) == 1, result.stderr
    for text in expected:
        assert text in problems[0], problems[0]
    return problems[0]


# --- karnak up checks ------------------------------------------------------------------------------------


def test_up_refuses_an_invalid_field_naming_it_and_starts_nothing(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    config = _base(amqp_url, prefix, tmp_path)
    config["forward_nodes"][0]["destinations"][0]["port"] = 70000

    _assert_refused_before_start(karnak("up", "--config", str(_write(tmp_path, config))), "port")


def test_up_refuses_a_profile_the_processor_cannot_load(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    config = _base(amqp_url, prefix, tmp_path)
    config["forward_nodes"][0]["destinations"][0]["deidentification"] = {"project": "study-x"}
    config["projects"] = [{"name": "study-x", "secret": SECRET, "profile": str(tmp_path / "missing-profile.yml")}]

    _assert_refused_before_start(karnak("up", "--config", str(_write(tmp_path, config))), "missing-profile.yml")


def test_up_names_an_unreachable_broker_and_how_to_start_one(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    closed = free_port()
    config = _base(f"amqp://guest:secret-pw@127.0.0.1:{closed}/", prefix, tmp_path)

    result = karnak("up", "--config", str(_write(tmp_path, config)))

    line = _assert_refused_before_start(result, f"127.0.0.1:{closed}", "rabbitmq-server -detached")
    assert "secret-pw" not in result.stderr + result.stdout, line


def test_up_names_an_unreachable_database(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    closed = free_port()
    config = _base(amqp_url, prefix, tmp_path, database={"url": f"postgresql+psycopg://postgres@127.0.0.1:{closed}/x"})

    _assert_refused_before_start(
        karnak("up", "--config", str(_write(tmp_path, config))), "database not reachable", f"127.0.0.1:{closed}"
    )


def test_up_names_a_port_that_is_taken(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    config = _base(amqp_url, prefix, tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config["listener"]["port"]))
        squatter.listen()

        result = karnak("up", "--config", str(_write(tmp_path, config)))

    _assert_refused_before_start(result, f"port {config['listener']['port']}", "DICOM listener")


def test_up_says_ready_once_every_service_is_and_names_one_that_exits(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    config = _base(amqp_url, prefix, tmp_path)
    register_topology(amqp_url, GatewayConfig.model_validate(config))
    up = subprocess.Popen(
        [KARNAK, "up", "--config", str(_write(tmp_path, config)), "--only", "receiver", "processor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = [_next_line(up, "karnak up: starting") for _ in range(2)]
        ready = _next_line(up, "karnak up: ")
        assert ready.startswith("karnak up: ready (2 service process(es))"), ready
        processor_pid = int(next(s for s in started if "processor" in s).split("pid ")[1].split(")")[0])
        os.kill(processor_pid, signal.SIGKILL)
        # Once ready, a service that dies is named and restarted, not silently replaced.
        assert up.stderr is not None
        deadline = time.monotonic() + 30
        seen = ""
        while "processor exited with -9" not in seen and time.monotonic() < deadline:
            seen += up.stderr.readline()
        assert "karnak up: processor exited with -9" in seen
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert "karnak up: stopped" in out


def _next_line(process: subprocess.Popen[str], starting: str, timeout: float = 90) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        if line.startswith(starting):
            return line.strip()
    raise AssertionError(f"no line starting with {starting!r}")


# --- progress ------------------------------------------------------------------------------------------------


def _deid_config(tmp_path: Path) -> Path:
    config = {
        "forward_nodes": [
            {
                "ae_title": "KARNAK-GW",
                "destinations": [_destination(deidentification={"project": "study-x"})],
            }
        ],
        "projects": [{"name": "study-x", "secret": SECRET, "profile": str(PROFILE)}],
        "database": {"url": f"sqlite:///{tmp_path / 'karnak.db'}"},
    }
    return _write(tmp_path, config)


def test_deid_off_a_terminal_prints_one_progress_line_per_n_files(tmp_path: Path) -> None:
    make_study(tmp_path / "in", ct=25, mr=0, multiframe=0, large=0, compressed=0)

    result = karnak(
        "deid",
        "--config",
        str(_deid_config(tmp_path)),
        "--destination",
        "pacs",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--progress-every",
        "10",
    )

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("karnak deid: ")]
    assert [line.split(" file(s)")[0] for line in lines] == [
        "karnak deid: 10/25",
        "karnak deid: 20/25",
        "karnak deid: 25/25",
    ]
    assert all("/s" in line for line in lines)


def test_deid_on_a_terminal_draws_a_bar_with_count_and_rate(tmp_path: Path) -> None:
    make_study(tmp_path / "in", ct=12, mr=0, multiframe=0, large=0, compressed=0)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    command = [KARNAK, "deid", "--config", str(_deid_config(tmp_path)), "--destination", "pacs"]
    process = subprocess.Popen(
        [*command, str(tmp_path / "in"), "--out", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = shown.decode("utf-8", "replace")
    assert "12/12" in text and "file/s" in text, text
    assert "karnak deid: 12/12 file(s)" not in text  # the plain lines are for logs, not terminals


# --- dead replay: Ctrl-C, then again: each message exactly once ---------------------------------------------


def test_an_interrupted_replay_then_another_deliver_each_parked_message_exactly_once(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    config = _base(amqp_url, prefix, tmp_path)
    topology = register_topology(amqp_url, GatewayConfig.model_validate(config))
    path = _write(tmp_path, config)
    send_queue = topology.send_queue("dicom", "pacs")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    topology.declare(channel)
    channel.confirm_delivery()
    parked = [f"instance-{n:05d}" for n in range(2000)]
    for instance_id in parked:
        headers = {
            "karnak-instance-id": instance_id,
            "karnak-destination": "pacs",
            header_names.REASON: "association refused",
            header_names.ORIGIN_EXCHANGE: topology.send_exchange,
            header_names.ORIGIN_ROUTING_KEY: send_queue,
        }
        channel.basic_publish(
            "", topology.dead_queue, b"", properties=pika.BasicProperties(delivery_mode=2, headers=headers)
        )
    connection.close()

    first = subprocess.Popen(
        [KARNAK, "dead", "replay", "--all", "--config", str(path), "--progress-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stderr is not None
    line = first.stderr.readline()
    assert line.startswith("karnak dead replay: 1/2000"), line  # the first message is done: stop now
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "interrupted after" in err and "those are done" in err
    done_first = int(out.split("replayed ")[1].split(" ")[0])
    assert 1 <= done_first < 2000

    second = karnak("dead", "replay", "--all", "--config", str(path))
    assert second.returncode == 0, second.stderr
    assert f"replayed {2000 - done_first} message(s)" in second.stdout

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    delivered = []
    while True:
        method, properties, _ = channel.basic_get(send_queue, auto_ack=True)
        if method is None:
            break
        delivered.append(properties.headers["karnak-instance-id"])
    left = channel.queue_declare(topology.dead_queue, passive=True).method.message_count
    connection.close()
    assert sorted(delivered) == parked
    assert left == 0


# --- --json ------------------------------------------------------------------------------------------------


def test_pseudonyms_export_json_lists_every_patient_with_a_stable_schema(tmp_path: Path) -> None:
    config = _deid_config(tmp_path)
    csv = tmp_path / "patients.csv"
    csv.write_text("pseudonym,patient_id,issuer_of_patient_id\nPSN-1,P1,HOSP\nPSN-2,P2,HOSP\n")
    assert karnak("db", "upgrade", "--config", str(config)).returncode == 0
    imported = karnak("pseudonyms", "import", str(csv), "--project", "study-x", "--config", str(config))
    assert imported.returncode == 0, imported.stderr

    exported = karnak("pseudonyms", "export", "-", "--json", "--project", "study-x", "--config", str(config))

    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout) == [
        {"patient_id": "P1", "issuer_of_patient_id": "HOSP", "pseudonym": "PSN-1"},
        {"patient_id": "P2", "issuer_of_patient_id": "HOSP", "pseudonym": "PSN-2"},
    ]


@pytest.mark.parametrize("option", ["--help"])
def test_every_exit_code_is_documented_in_the_help(option: str) -> None:
    result = karnak(option)
    assert result.returncode == 0
    assert "0 ok" in result.stdout and "1 failure" in result.stdout and "2 bad input" in result.stdout
