"""A running gateway changes its routing without a restart (DESIGN.md section 14), against real peers.

`karnak up` on a database-mode configuration (SQLite) whose file bootstraps revision 1: destination A
takes every instance. `karnak config apply` then stores revision 2, which adds destination B (a second
storescp) and gives A a condition (CT only); `karnak config rollback 1` stores revision 3, equal to 1.
Each batch of 100 instances (60 CT, 40 MR) is sent only once every service instance reports the new
revision in `karnak status`, and every instance is accounted for at every destination; the services'
pids never change.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from karnak_dicom.testing import StudyFiles, make_study
from tests.conftest import gateway_config, register_topology
from tests.support.faults import CountingStoreSCP, Modality, queue_depths, service_pid
from tests.support.servers import Gateway, ScriptedSCP, free_port, metric_value, wait_until

pytestmark = pytest.mark.e2e

SERVICES = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier")
CT_ONLY = "tagValueContains(#Tag.SeriesDescription, 'CT AXIAL')"
CT, MR = 60, 40


def _destination(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"id": name, "type": "dicom", "ae_title": name.upper().replace("-", "_"), "hostname": "127.0.0.1"} | {
        "port": port,
        **extra,
    }


def _batch(directory: Path) -> StudyFiles:
    return make_study(directory, ct=CT, mr=MR, multiframe=0, large=0, compressed=0)


class LiveGateway:
    """`karnak up` and the `karnak config`/`karnak status` commands of one test."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routing(self, destinations: list[dict[str, Any]]) -> Path:
        """A file with the gateway's settings and these destinations, for `karnak config apply`."""
        config = copy.deepcopy(self.gateway.config)
        config["forward_nodes"][0]["destinations"] = destinations
        path = self.gateway.workdir / f"routing-{time.monotonic_ns()}.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def command(self, *args: str) -> str:
        result = self.gateway.karnak(*args)
        assert result.returncode == 0, f"karnak {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def apply(self, destinations: list[dict[str, Any]]) -> int:
        self.command("config", "apply", str(self.routing(destinations)))
        return self.current_revision()

    def current_revision(self) -> int:
        return int(json.loads(self.command("config", "history", "--json", "--limit", "1"))[0]["revision"])

    def statuses(self) -> list[dict[str, Any]]:
        result = self.gateway.karnak("status", "--json", "--wait", "2")
        return list(json.loads(result.stdout)) if result.stdout.strip() else []

    def wait_revision(self, revision: int, timeout: float = 45) -> list[dict[str, Any]]:
        """Wait until one instance of every service runs `revision` and is ready; their reports."""
        seen: list[dict[str, Any]] = []

        def applied() -> bool:
            seen[:] = self.statuses()
            running = {r["service"] for r in seen if r["revision"] == revision and r["ready"]}
            return running >= set(SERVICES)

        wait_until(applied, timeout, f"every service on revision {revision}: {seen} (log: {self.gateway.log_path})")
        return seen

    def pids(self) -> dict[str, int]:
        return {service: service_pid(self.gateway, service) for service in SERVICES}


@pytest.fixture
def started(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[tuple[LiveGateway, dict[str, CountingStoreSCP]]]:
    pacs = {name: CountingStoreSCP(name.upper().replace("-", "_"), free_port(), tmp_path / name) for name in ("a", "b")}
    for scp in pacs.values():
        scp.start()
    config = gateway_config(amqp_url, prefix, tmp_path, [_destination("a", pacs["a"].port)])
    config["metrics"]["ports"] = {service: free_port() for service in SERVICES}
    config["database"] = {"url": f"sqlite:///{tmp_path / 'karnak.db'}"}
    gateway = Gateway(config, tmp_path)
    gateway.start(timeout=60)
    yield LiveGateway(gateway), pacs
    gateway.stop()
    for scp in pacs.values():
        scp.stop()
    register_topology(amqp_url, _full(config, pacs))


def _full(config: dict[str, Any], pacs: dict[str, CountingStoreSCP]) -> Any:
    from karnak_shared.config import parse_config

    every = copy.deepcopy(config)
    every["forward_nodes"][0]["destinations"] = [_destination(name, scp.port) for name, scp in pacs.items()]
    return parse_config(yaml.safe_dump(every))


def test_an_applied_revision_routes_the_next_instances_and_a_rollback_restores_the_first_routing(
    started: tuple[LiveGateway, dict[str, CountingStoreSCP]], tmp_path: Path
) -> None:
    live, pacs = started
    gateway = live.gateway
    modality = Modality(gateway.listener_port, "KARNAK-GW", "CT01", tmp_path)
    first = live.current_revision()
    live.wait_revision(first)
    pids = live.pids()

    batch1 = _batch(tmp_path / "batch1")
    modality.send_until_acknowledged(batch1.paths)
    wait_until(lambda: pacs["a"].count() >= 100, 60, "batch 1 at A")

    second = live.apply([_destination("a", pacs["a"].port, condition=CT_ONLY), _destination("b", pacs["b"].port)])
    assert second == first + 1
    live.wait_revision(second)
    batch2 = _batch(tmp_path / "batch2")
    modality.send_until_acknowledged(batch2.paths)
    wait_until(lambda: pacs["a"].count() >= 100 + CT and pacs["b"].count() >= 100, 60, "batch 2 at A (CT) and B")

    live.command("config", "rollback", str(first))
    third = live.current_revision()
    assert third == second + 1
    live.wait_revision(third)
    batch3 = _batch(tmp_path / "batch3")
    modality.send_until_acknowledged(batch3.paths)
    wait_until(lambda: pacs["a"].count() >= 200 + CT, 60, "batch 3 at A")
    time.sleep(2)  # anything more that would arrive (a duplicate, a copy for B) has time to

    a = pacs["a"].deliveries({**batch1.by_sop_instance(), **batch2.by_sop_instance(), **batch3.by_sop_instance()})
    b = pacs["b"].deliveries({**batch1.by_sop_instance(), **batch2.by_sop_instance(), **batch3.by_sop_instance()})
    ct2 = {uid for uid, path in batch2.by_sop_instance().items() if path.name.startswith("ct")}
    assert a.distinct == set(batch1.by_sop_instance()) | ct2 | set(batch3.by_sop_instance())
    assert b.distinct == set(batch2.by_sop_instance())
    assert a.duplicates == 0 and b.duplicates == 0 and a.incomplete == 0 and b.incomplete == 0
    assert live.pids() == pids, "a service was restarted"
    topology = register_topology(gateway.config["broker"]["url"], _full(gateway.config, pacs))
    depths = queue_depths(gateway.config["broker"]["url"], topology.all_queues())
    assert not any(depths.values()), depths
    # The MR instances of batch 2 were rejected for A by its condition, and only they.
    routed = gateway.metrics("processor")
    assert metric_value(routed, "karnak_instances_routed_total", destination="a", outcome="rejected") == MR


def test_a_removed_destinations_backlog_waits_in_its_queue_and_is_delivered_once_it_is_re_added(
    started: tuple[LiveGateway, dict[str, CountingStoreSCP]], tmp_path: Path
) -> None:
    live, pacs = started
    gateway = live.gateway
    slow = ScriptedSCP("SLOW", free_port(), delay=0.3).start()
    try:
        with_slow = [_destination("a", pacs["a"].port), _destination("slow", slow.port)]
        revision = live.apply(with_slow)
        live.wait_revision(revision)
        batch = make_study(tmp_path / "backlog", ct=0, mr=60, multiframe=0, large=0, compressed=0)
        Modality(gateway.listener_port, "KARNAK-GW", "CT01", tmp_path).send_until_acknowledged(batch.paths)
        wait_until(lambda: len(slow.received) >= 3, 30, "the slow destination receiving")

        removed = live.apply([_destination("a", pacs["a"].port)])
        live.wait_revision(removed)
        # What the sender had taken before the swap finishes; then nothing more is taken from the queue.
        seen: list[int] = []

        def stopped() -> bool:
            seen.append(len(slow.received))
            return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

        wait_until(stopped, 30, f"deliveries to the removed destination stopping: {seen}", interval=1.0)
        delivered_before = len(slow.received)
        assert delivered_before < 60
        queue = f"{gateway.config['broker']['prefix']}.send.dicom.slow"
        waiting = queue_depths(gateway.config["broker"]["url"], [queue])[queue]
        assert delivered_before + waiting == 60, "a message of the removed destination went missing"
        listed = {line["queue"]: line for line in json.loads(live.command("queues", "--json"))}
        assert listed[queue]["messages"] == waiting and listed[queue]["consumers"] == 0
        assert listed[queue]["state"] == f"removed in revision {removed}: not consumed, kept"

        readded = live.apply(with_slow)
        live.wait_revision(readded)
        wait_until(lambda: set(slow.received) >= set(batch.by_sop_instance()), 60, "the backlog delivered")
        assert queue_depths(gateway.config["broker"]["url"], [queue])[queue] == 0
    finally:
        slow.stop()
