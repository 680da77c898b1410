"""Faults on purpose against the whole gateway (`karnak up`), real RabbitMQ and real DICOM peers.

Each test sends a study of 300 CT instances of 0.5 MB with storescu, breaks something in the middle of
the transfer, and then counts exactly: every instance at every destination (SOP Instance UID sets and
bytes compared), duplicates counted per destination (the destinations are storescp with unique file
names, so a second delivery is a second file) and bounded by what at-least-once delivery makes
unavoidable, every queue drained and the dead queue empty.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from karnak_dicom.testing import StudyFiles, dataset_bytes, make_study
from karnak_processor.processor import WORKERS as PROCESSOR_WORKERS
from karnak_shared.config import parse_config
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.support.faults import (
    CountingStoreSCP,
    Deliveries,
    Modality,
    broker_app_stopped,
    kill_service,
    queue_depths,
    service_pid,
    small_tmpfs,
)
from tests.support.servers import Gateway, free_port, metric_value, resident_bytes, wait_for_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

INSTANCES = 300
DESTINATIONS = ("pacs-a", "pacs-b")
SERVICES = ("receiver", "processor", "dicom-sender")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    return make_study(tmp_path_factory.mktemp("fault-study"), ct=INSTANCES, mr=0, multiframe=0, large=0, compressed=0)


@pytest.fixture(scope="module")
def originals(study: StudyFiles) -> dict[str, Path]:
    return study.by_sop_instance()


@dataclass
class Rig:
    """A running gateway with two counting storescp destinations and a modality in front of it."""

    amqp_url: str
    gateway: Gateway
    topology: Topology
    pacs: dict[str, CountingStoreSCP]
    modality: Modality
    workdir: Path

    def metric(self, service: str, name: str, **labels: str) -> float:
        return metric_value(self.gateway.metrics(service), name, **labels)

    def deliveries(self, originals: dict[str, Path]) -> dict[str, Deliveries]:
        return {name: scp.deliveries(originals) for name, scp in self.pacs.items()}

    def leftover_blobs(self) -> int:
        """Blob files left once everything was delivered: not lost data, but disk a crash leaves behind."""
        return sum(1 for p in Path(self.gateway.config["blob_store"]["path"]).rglob("*") if p.is_file())

    def depths(self) -> dict[str, int]:
        return queue_depths(self.amqp_url, self.topology.all_queues())

    def wait_delivered_and_settled(self, originals: dict[str, Path], timeout: float = 60) -> dict[str, Deliveries]:
        """Wait for every instance at every destination, the work queues empty and nothing moving for 1 s."""
        try:
            wait_until(lambda: all(scp.count() >= len(originals) for scp in self.pacs.values()), timeout, "")
        except AssertionError:
            pass  # some are missing: once nothing moves any more, the caller's counts say which
        last: list[object] = []

        def settled() -> bool:
            state = ([scp.count() for scp in self.pacs.values()], self.depths())
            # The dead queue only has to stop moving: the caller asserts it empty, saying so.
            work = [depth for queue, depth in state[1].items() if queue != self.topology.dead_queue]
            quiet = bool(last) and last[-1] == state and not any(work)
            last.append(state)
            return quiet

        wait_until(
            settled, timeout, f"queues drained and deliveries stopped (log: {self.gateway.log_path})", interval=1.0
        )
        return self.deliveries(originals)


@pytest.fixture
def rig(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []
    scps: list[CountingStoreSCP] = []

    def start(*, retry_delays: list[int] | None = None, blob_path: Path | None = None, peers_up: bool = True) -> Rig:
        pacs = {
            name: CountingStoreSCP(name.upper().replace("-", "_"), free_port(), tmp_path / name)
            for name in DESTINATIONS
        }
        scps.extend(pacs.values())
        destinations = [
            {"id": name, "type": "dicom", "ae_title": scp.ae_title, "hostname": "127.0.0.1", "port": scp.port}
            for name, scp in pacs.items()
        ]
        config = gateway_config(amqp_url, prefix, tmp_path, destinations)
        if retry_delays is not None:
            config["broker"]["retry_delays"] = retry_delays
        if blob_path is not None:
            config["blob_store"]["path"] = str(blob_path)
        topology = register_topology(amqp_url, parse_config(json.dumps(config)))
        if peers_up:
            for scp in pacs.values():
                scp.start()
        gateway = Gateway(config, tmp_path)
        modality = Modality(0, "KARNAK-GW", "CT01", tmp_path)
        made = Rig(amqp_url, gateway, topology, pacs, modality, tmp_path)
        rigs.append(made)
        gateway.start("--only", *SERVICES)
        wait_for_port(gateway.listener_port)
        modality.port = gateway.listener_port
        return made

    yield start
    for made in rigs:
        made.modality.stop()
        made.gateway.stop()
    for scp in scps:
        scp.stop()


def _assert_all_delivered(
    deliveries: dict[str, Deliveries], originals: dict[str, Path], most_duplicates: int, when: str = ""
) -> None:
    """Every destination has every instance, with at most `most_duplicates` second copies of one."""
    for name, got in deliveries.items():
        assert got.distinct == set(originals), f"{name}: {len(set(originals) - got.distinct)} instance(s) lost{when}"
        assert got.duplicates <= most_duplicates, (
            f"{name}: {got.duplicates} duplicates, more than the {most_duplicates} expected"
        )


def _delivery_figures(deliveries: dict[str, Deliveries]) -> dict[str, int]:
    """Deliveries and duplicates per destination, for the test's report."""
    figures = {}
    for name, got in deliveries.items():
        figures[f"{name}_deliveries"] = got.total
        figures[f"{name}_duplicates"] = got.duplicates
    return figures


def _report(record_property: Callable[[str, object], None], **figures: object) -> None:
    for name, value in figures.items():
        record_property(name, value)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


# --- 1. a service killed mid-transfer -----------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_killed_mid_transfer_is_restarted_and_every_instance_reaches_every_destination(
    service: str,
    rig: Callable[..., Rig],
    study: StudyFiles,
    originals: dict[str, Path],
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    r = rig()
    progress: dict[str, Callable[[], float]] = {
        "receiver": lambda: r.metric("receiver", "karnak_instances_received_total", outcome="accepted"),
        "processor": lambda: r.metric(
            "processor", "karnak_instances_routed_total", destination="pacs-a", outcome="queued"
        ),
        "dicom-sender": lambda: r.pacs["pacs-a"].count(),
    }
    r.modality.start(study.paths)
    wait_until(lambda: progress[service]() >= INSTANCES // 3, 60, f"a third of the study through the {service}")
    delivered_before = min(scp.count() for scp in r.pacs.values())
    old, new = kill_service(r.gateway, service)
    assert delivered_before < INSTANCES, "the transfer was over before the kill: the test proves nothing"

    first = r.modality.wait()
    resends = 0
    if service == "receiver":
        # The modality's association died with the receiver: it resends what was not acknowledged.
        missing = first.unacknowledged(study.paths)
        assert missing, "storescu saw nothing of the receiver's death: the kill came too late"
        resends = r.modality.send_until_acknowledged(missing)
    else:
        assert first.unacknowledged(study.paths) == [], first.output[-2000:]

    deliveries = r.wait_delivered_and_settled(originals)
    # At-least-once windows: the receiver's C-STORE stored and confirmed but not answered when it died
    # (one association, one C-STORE at a time); the sender's C-STORE done but its blob not yet deleted
    # (one per destination link); the processor's deliveries being routed by its workers (a routed one
    # whose received blob is gone is recognised when it comes again; the prefetched rest was not begun).
    bound = {"receiver": 1, "processor": PROCESSOR_WORKERS, "dicom-sender": 1}[service]
    _assert_all_delivered(deliveries, originals, bound, when=f" after the {service} was killed")
    assert r.depths()[r.topology.dead_queue] == 0, "messages parked in the dead queue"
    assert f"karnak up: {service} exited with -9; restarting" in r.gateway.log()
    _report(
        record_property,
        service=service,
        killed_pid=old,
        restarted_pid=new,
        delivered_at_kill=delivered_before,
        modality_resends=resends,
        **_delivery_figures(deliveries),
        **{f"{name}_cut_transfers": got.incomplete for name, got in deliveries.items()},
        leftover_blobs=r.leftover_blobs(),
        seconds=round(time.monotonic() - started, 1),
    )
    assert service_pid(r.gateway, service) == new


# --- 2. RabbitMQ down -----------------------------------------------------------------------------------


def _c_store(port: int, path: Path) -> int:
    """One C-STORE with pynetdicom, as a second modality: the status the gateway answers."""
    from pydicom import dcmread
    from pynetdicom import AE

    dataset = dcmread(path)
    ae = AE(ae_title="MR01")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="KARNAK-GW")
    assert assoc.is_established, "the gateway refused the association while RabbitMQ was down"
    try:
        status = assoc.send_c_store(dataset)
        assert "Status" in status, "no C-STORE response"
        return int(status.Status)
    finally:
        assoc.release()


def test_with_rabbitmq_stopped_mid_transfer_the_receiver_answers_out_of_resources_and_everything_arrives_after(
    rig: Callable[..., Rig],
    study: StudyFiles,
    originals: dict[str, Path],
    amqp_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    r = rig()
    r.modality.start(study.paths)
    wait_until(
        lambda: r.metric("receiver", "karnak_instances_received_total", outcome="accepted") >= INSTANCES // 3,
        60,
        "a third of the study received",
    )
    with broker_app_stopped(amqp_url):
        down_at = time.monotonic()
        wait_until(lambda: not r.gateway.ready("receiver"), 15, "the receiver reporting the broker lost")
        probe_status = _c_store(r.gateway.listener_port, study.paths[-1])
        refused_during = r.metric("receiver", "karnak_instances_received_total", outcome="out-of-resources")
        not_ready = [s for s in SERVICES if not r.gateway.ready(s)]
        time.sleep(max(0.0, 6 - (time.monotonic() - down_at)))
        outage = time.monotonic() - down_at
    back_at = time.monotonic()
    wait_until(lambda: all(r.gateway.ready(s) for s in SERVICES), 30, "every service ready again by itself")
    reconnected_in = time.monotonic() - back_at

    assert probe_status == 0xA700, f"C-STORE answered 0x{probe_status:04X} with RabbitMQ down"
    assert refused_during >= 1
    assert not_ready == list(SERVICES), f"only {not_ready} reported not ready with RabbitMQ down"
    first = r.modality.wait()
    assert first.refused and set(first.refused.values()) == {"Refused: OutOfResources"}, first.output[-2000:]
    resends = r.modality.send_until_acknowledged(first.unacknowledged(study.paths))

    deliveries = r.wait_delivered_and_settled(originals)
    # Duplicates: the receiver's C-STORE whose confirm was lost with the connection (the modality resends
    # it), the deliveries the processor's workers were routing, and a sender's C-STORE done whose event
    # could not be published (one per destination). Nothing prefetched is begun while RabbitMQ is away.
    bound = 1 + PROCESSOR_WORKERS + 1
    _assert_all_delivered(deliveries, originals, bound)
    assert r.depths()[r.topology.dead_queue] == 0, "messages parked in the dead queue"
    log = r.gateway.log()
    assert "c-store.refused" in log and "status=0xA700" in log
    _report(
        record_property,
        outage_seconds=round(outage, 1),
        ready_again_after_seconds=round(reconnected_in, 1),
        refused_by_receiver=int(refused_during),
        modality_refusals_first_run=len(first.refused),
        modality_resends=resends,
        **_delivery_figures(deliveries),
        leftover_blobs=r.leftover_blobs(),
        seconds=round(time.monotonic() - started, 1),
    )


# --- 3. a destination down for a while --------------------------------------------------------------------


def test_a_destination_down_mid_transfer_gets_everything_from_the_delay_queues_when_it_returns_with_bounded_memory(
    rig: Callable[..., Rig],
    study: StudyFiles,
    originals: dict[str, Path],
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    # Scaled down from the default tiers (5 s .. 1 h, 73 minutes in all): five tiers of 1..10 s (25 s in
    # all) outlast the 20 s outage, so nothing may be parked; three tiers (7 s) would park it all by design.
    r = rig(retry_delays=[1, 2, 4, 8, 10])
    sender = service_pid(r.gateway, "dicom-sender")
    baseline = resident_bytes(sender)
    r.modality.start(study.paths)
    wait_until(lambda: r.pacs["pacs-b"].count() >= INSTANCES // 10, 60, "a tenth of the study at pacs-b")
    r.pacs["pacs-b"].stop()  # with its association open: the C-STORE in progress is cut
    down_at = time.monotonic()
    peak, waiting = baseline, 0
    retry_queues = [r.topology.retry_queue(d) for d in r.topology.retry_delays]
    while time.monotonic() - down_at < 20:
        peak = max(peak, resident_bytes(sender))
        depths = queue_depths(r.amqp_url, retry_queues)
        waiting = max(waiting, sum(depths.values()))
        time.sleep(0.25)
    outcome = r.modality.wait()
    assert outcome.unacknowledged(study.paths) == [], outcome.output[-2000:]
    at_return = r.pacs["pacs-b"].deliveries(originals)
    a_done = r.pacs["pacs-a"].deliveries(originals)
    retried = r.metric("dicom-sender", "karnak_instances_sent_total", destination="pacs-b", outcome="retried")
    r.pacs["pacs-b"].start()

    deliveries = r.wait_delivered_and_settled(originals)
    assert a_done.distinct == set(originals), "pacs-a was held back by pacs-b's outage"
    missing_then = INSTANCES - len(at_return.distinct)
    assert missing_then > INSTANCES // 2, "pacs-b got most of the study before it went down: nothing waited"
    # Everything that had not reached pacs-b sat in the delay queues together at some point of the outage,
    # but for the messages the sender held unacked at that moment (its prefetch, 20).
    assert waiting >= missing_then - 20, f"at most {waiting} messages seen in the delay queues"
    assert retried >= missing_then
    # The C-STORE cut by the outage may have been stored by the dying storescp: one duplicate at most.
    _assert_all_delivered(deliveries, originals, 1)
    assert r.metric("dicom-sender", "karnak_instances_sent_total", destination="pacs-b", outcome="failed") == 0
    assert r.depths()[r.topology.dead_queue] == 0, "messages parked in the dead queue"
    # The waiting instances are about 130 MB of blobs: a sender holding them would grow by that much. It
    # holds only references (and at most `prefetch` messages), so it may grow by pynetdicom's PDU buffers
    # and allocator noise: a quarter of that is the bound.
    growth = peak - baseline
    assert growth < 32 * 2**20, f"the dicom-sender grew by {growth / 2**20:.0f} MB while the destination was down"
    _report(
        record_property,
        missing_at_pacs_b_when_down=missing_then,
        most_in_delay_queues=waiting,
        retries_scheduled=int(retried),
        sender_rss_baseline_mb=round(baseline / 2**20, 1),
        sender_rss_peak_mb=round(peak / 2**20, 1),
        **_delivery_figures(deliveries),
        pacs_b_cut_transfers=deliveries["pacs-b"].incomplete,
        leftover_blobs=r.leftover_blobs(),
        seconds=round(time.monotonic() - started, 1),
    )


# --- 4. the blob store's disk full -----------------------------------------------------------------------


def test_with_the_blob_store_full_the_receiver_answers_out_of_resources_stores_nothing_half_and_all_arrives_later(
    rig: Callable[..., Rig],
    study: StudyFiles,
    originals: dict[str, Path],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    with small_tmpfs(tmp_path / "small-disk", "8m") as blobs:
        # The destinations are down at first, so the blobs stay and the 8 MB fill up (a CT is 0.5 MB).
        r = rig(blob_path=blobs, peers_up=False, retry_delays=[1, 2, 4, 8, 16])
        first = r.modality.send(study.paths[:60])
        accepted = len(first.acknowledged)
        assert 1 <= accepted <= 16, f"{accepted} of 60 accepted on an 8 MB blob store"
        assert len(first.refused) == 60 - accepted
        assert set(first.refused.values()) == {"Refused: OutOfResources"}
        refused_metric = r.metric("receiver", "karnak_instances_received_total", outcome="out-of-resources")
        assert refused_metric == 60 - accepted
        log = r.gateway.log()
        assert f"blob store {blobs} is full (no space left on device)" in log, log[-3000:]

        # Nothing half-stored: no temporary file left, every blob a whole instance, one per acknowledged C-STORE.
        wait_until(
            lambda: (
                r.metric("processor", "karnak_instances_routed_total", destination="pacs-b", outcome="queued")
                >= accepted
            ),
            30,
            "the accepted instances routed",
        )
        files = [p for p in blobs.rglob("*") if p.is_file()]
        assert [p for p in files if p.suffix != ".dcm"] == []
        inodes = {p.stat().st_ino for p in files}
        assert len(inodes) == accepted, f"{len(inodes)} blobs for {accepted} accepted instances"
        whole = {hashlib.sha256(dataset_bytes(p)).digest() for p in originals.values()}
        half = [p for p in files if hashlib.sha256(dataset_bytes(p)).digest() not in whole]
        assert half == [], f"{len(half)} blob(s) are not whole instances: {half[:3]}"

        for scp in r.pacs.values():
            scp.start()
        wait_until(lambda: not any(p.is_file() for p in blobs.rglob("*")), 60, "blobs deleted once delivered")
        rest = first.unacknowledged(study.paths[:60]) + study.paths[60:]
        resends = r.modality.send_until_acknowledged(rest, attempts=30, pause=0.5)
        deliveries = r.wait_delivered_and_settled(originals)
        _assert_all_delivered(deliveries, originals, 0)
        assert r.depths()[r.topology.dead_queue] == 0, "messages parked in the dead queue"
        wait_until(lambda: not any(p.is_file() for p in blobs.rglob("*")), 30, "the blob store empty at the end")
        refused_total = r.metric("receiver", "karnak_instances_received_total", outcome="out-of-resources")
        r.gateway.stop()
    _report(
        record_property,
        accepted_on_full_disk=accepted,
        refused_first_run=len(first.refused),
        refused_in_all=int(refused_total),
        modality_runs_for_the_rest=resends,
        **_delivery_figures(deliveries),
        seconds=round(time.monotonic() - started, 1),
    )
