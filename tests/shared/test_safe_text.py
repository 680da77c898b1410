"""Control characters from messages are shown escaped in command output and logs, never obeyed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pika
import pytest
import yaml

from karnak_shared import header_names
from karnak_shared.config import parse_config
from karnak_shared.logs import JsonFormatter, KeyValueFormatter
from karnak_shared.safe_text import escape_controls
from tests.conftest import gateway_config, register_topology

CRAFTED = "1.2.3\r\n- instance forged destination=pacs\x1b[2K\u202etxt.exe\u2028\x85"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("1.2.840.10008", "1.2.840.10008"),
        ("a\nb", "a\\nb"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("x\u202ey", "x\\u202ey"),
        ("x\u2028y\x85z", "x\\u2028y\\x85z"),
        ("^karnak\\.(ingest)$", "^karnak\\.(ingest)$"),
        ("é ü 東京", "é ü 東京"),
    ],
)
def test_control_characters_are_escaped_and_other_text_kept(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("karnak.test", logging.WARNING, __file__, 1, "c-store.refused", None, None)
    record.fields = fields
    return record


def test_a_key_value_log_line_stays_one_line_whatever_a_value_holds() -> None:
    line = KeyValueFormatter().format(_record(sop_instance_uid=CRAFTED))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert "\u2028" not in line and "\x85" not in line
    # The value is still all there, readable back.
    quoted = line.split("sop_instance_uid=", 1)[1]
    assert json.loads(quoted) == CRAFTED


def test_a_json_log_line_escapes_them_too() -> None:
    line = JsonFormatter().format(_record(sop_instance_uid=CRAFTED))
    assert line.isascii() and "\n" not in line and "\r" not in line
    assert json.loads(line)["sop_instance_uid"] == CRAFTED


def test_karnak_dead_list_shows_a_crafted_value_escaped_on_its_own_line(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    config = gateway_config(amqp_url, prefix, tmp_path, destinations=[])
    path = tmp_path / "karnak.yml"
    path.write_text(yaml.safe_dump(config))
    topology = register_topology(amqp_url, parse_config(path.read_text()))
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        topology.declare(channel)
        headers = {
            "karnak-instance-id": "i-1",
            "karnak-destination": "pacs",
            "karnak-sop-instance-uid": CRAFTED,
            header_names.REASON: "bad\nreason",
            header_names.ORIGIN_EXCHANGE: topology.send_exchange,
            header_names.ORIGIN_ROUTING_KEY: f"{prefix}.send.dicom.pacs",
        }
        channel.basic_publish(
            topology.dead_exchange, topology.dead_queue, b"", pika.BasicProperties(headers=headers, delivery_mode=2)
        )
    finally:
        connection.close()
    karnak = str(Path(sys.executable).with_name("karnak"))
    listing = subprocess.run(
        [karnak, "dead", "list", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == f"1 parked message(s) in {topology.dead_queue}"
    assert len(lines) == 3, lines  # the header, the message, its reason: nothing forged
    assert "sop_instance=1.2.3\\r\\n- instance forged destination=pacs\\x1b[2K\\u202etxt.exe\\u2028\\x85 " in lines[1]
    assert lines[2] == "  reason: bad\\nreason"
    assert not any(c in listing.stdout for c in "\r\x1b\u202e\u2028\x85")
