"""`karnak queues` on real RabbitMQ and a revision store: a removed destination's queue and backlog are shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pika

from karnak_shared.revisions import RevisionStore
from tests.conftest import register_topology
from tests.support.revisions import routing, settings, write_yaml


def _karnak_queues(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("karnak")), "queues", "--config", str(config), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_removed_destinations_queue_is_listed_with_its_messages_and_the_revision_that_removed_it(
    tmp_path: Path, amqp_url: str, prefix: str
) -> None:
    config = write_yaml(
        tmp_path / "karnak.yml",
        {**settings(f"sqlite:///{tmp_path / 'karnak.db'}", broker={"url": amqp_url, "prefix": prefix}), **routing()},
    )
    store = RevisionStore.open(config)
    try:
        first = store.check()
        register_topology(amqp_url, store.gateway_config(first))
        store.notify(first)  # declares the revision's queues
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        for n in range(3):
            connection.channel().basic_publish(f"{prefix}.send", f"{prefix}.send.dicom.research", f"m{n}".encode())
        connection.close()
        without_research = routing()
        without_research["forward_nodes"][0]["destinations"] = without_research["forward_nodes"][0]["destinations"][:1]
        without_research["projects"] = []
        document = store.read_document(write_yaml(tmp_path / "without.yml", without_research))
        second = store.apply(document, author="test", origin="apply")
    finally:
        store.close()

    result = _karnak_queues(config, "--json")
    assert result.returncode == 0, result.stderr
    lines = {line["queue"]: line for line in json.loads(result.stdout)}
    research = lines[f"{prefix}.send.dicom.research"]
    assert research["messages"] == 3 and research["consumers"] == 0 and research["destination"] == "research"
    assert research["state"] == f"removed in revision {second.number}: not consumed, kept"
    assert lines[f"{prefix}.send.dicom.pacs-a"]["state"] == "configured"
    assert lines[f"{prefix}.dead"]["destination"] == ""

    table = _karnak_queues(config)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if ".send.dicom.research" in line)
    assert row.split()[1:4] == ["3", "0", "research"] and "removed in revision 2" in row
