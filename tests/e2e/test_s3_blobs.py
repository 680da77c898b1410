"""The whole gateway (`karnak up`) with its blobs in S3 (SeaweedFS): no shared directory at all.

Instances travel modality -> receiver -> processor -> dicom-sender -> storescp with their blobs as
objects: a plain destination (its copy a server-side link of the received object) and a de-identifying
one (a new object written from the streamed original). Everything arrives, bytes compared, and once it
has the bucket holds nothing. The fault tests SIGKILL each service mid-transfer: nothing acknowledged
is lost, and `karnak blobs sweep` leaves no blob behind.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from karnak_dicom.testing import StudyFiles, dataset_bytes, make_study
from karnak_processor.processor import WORKERS as PROCESSOR_WORKERS
from karnak_shared.blobstore import BlobStore, open_blob_store
from karnak_shared.config import BlobStoreConfig, parse_config
from karnak_shared.service.testing.seaweedfs import SeaweedS3
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_faults import Rig, _assert_all_delivered, _delivery_figures, _report
from tests.support.faults import CountingStoreSCP, Modality, kill_service
from tests.support.servers import Gateway, StoreSCP, free_port, storescu, wait_for_port, wait_until

pytestmark = pytest.mark.e2e

PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
SECRET = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def s3_settings(server: SeaweedS3) -> dict[str, Any]:
    return {**server.blob_store_settings(prefix=f"e2e-{uuid.uuid4().hex[:8]}"), "max_inline_bytes": 65536}


def store_of(settings: dict[str, Any]) -> BlobStore:
    return open_blob_store(BlobStoreConfig.model_validate(settings))


def blobs_in(store: BlobStore) -> tuple[int, int]:
    """(blobs, set-aside blobs) in the store."""
    return sum(1 for _ in store.blobs()), sum(1 for _ in store.set_aside_blobs())


@dataclass
class Run:
    study: StudyFiles
    peers: dict[str, StoreSCP]
    gateway: Gateway
    store: BlobStore


@pytest.fixture(scope="module")
def run(amqp_url: str, s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("s3-e2e")
    prefix = f"karnak-test-s3-{free_port()}"
    peers = {
        name: StoreSCP(ae, free_port(), workdir / name).start()
        for name, ae in (("plain", "PACS_P"), ("deid", "PACS_D"))
    }
    destinations = [
        {"id": "plain", "type": "dicom", "ae_title": "PACS_P", "hostname": "127.0.0.1", "port": peers["plain"].port},
        {
            "id": "deid",
            "type": "dicom",
            "ae_title": "PACS_D",
            "hostname": "127.0.0.1",
            "port": peers["deid"].port,
            "deidentification": {"project": "study-s3"},
        },
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations, blob_store=s3_settings(s3_server))
    config["projects"] = [{"name": "study-s3", "secret": SECRET, "profile": str(PROFILE)}]
    config["metrics"]["ports"].pop("console")  # not started: ready means the three services
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    # 0.5 MB and 2 MB CT (blobs), small MR (inline), a multi-frame one.
    study = make_study(workdir / "study", ct=8, mr=3, multiframe=1, large=1, compressed=0)
    try:
        gateway.start("--only", "receiver", "processor", "dicom-sender")
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        assert sent.returncode == 0, sent.stderr
        yield Run(study, peers, gateway, store_of(config["blob_store"]))
    finally:
        gateway.stop()
        for peer in peers.values():
            peer.stop()


def arrived(run: Run, destination: str) -> list[Path]:
    scp = run.peers[destination]
    wait_until(
        lambda: len(scp.files()) >= len(run.study.paths),
        90,
        f"the study at {destination} (log: {run.gateway.log_path})",
    )
    return scp.files()


def test_every_instance_arrives_unchanged_at_the_plain_destination(run: Run) -> None:
    files = arrived(run, "plain")

    assert sorted(dataset_bytes(p) for p in files) == sorted(dataset_bytes(p) for p in run.study.paths)


def test_the_de_identified_copies_arrive_whole_with_new_identifiers(run: Run) -> None:
    files = arrived(run, "deid")
    originals = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in run.study.paths}

    received = [dcmread(p) for p in files]
    assert len(received) == len(originals)
    assert not {str(ds.SOPInstanceUID) for ds in received} & set(originals)
    pixels = sorted(bytes(dcmread(p).PixelData) for p in originals.values())
    assert sorted(bytes(ds.PixelData) for ds in received) == pixels  # the streamed pixel data, whole


def test_no_blob_is_left_in_the_bucket_once_everything_arrived(run: Run) -> None:
    arrived(run, "plain")
    arrived(run, "deid")

    wait_until(lambda: blobs_in(run.store) == (0, 0), 30, "every blob deleted after its last ack")
    assert not Path(run.gateway.workdir / "blobs").exists()  # no directory store was used


# --- faults: each service SIGKILLed mid-transfer, with the S3 store ----------------------------------------

INSTANCES = 300
DESTINATIONS = ("pacs-a", "pacs-b")
SERVICES = ("receiver", "processor", "dicom-sender")


@pytest.fixture(scope="module")
def fault_study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    return make_study(
        tmp_path_factory.mktemp("s3-fault-study"), ct=INSTANCES, mr=0, multiframe=0, large=0, compressed=0
    )


@pytest.fixture
def s3_rig(amqp_url: str, prefix: str, tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Callable[[], Rig]]:
    rigs: list[Rig] = []

    def start() -> Rig:
        pacs = {
            name: CountingStoreSCP(name.upper().replace("-", "_"), free_port(), tmp_path / name)
            for name in DESTINATIONS
        }
        destinations = [
            {"id": name, "type": "dicom", "ae_title": scp.ae_title, "hostname": "127.0.0.1", "port": scp.port}
            for name, scp in pacs.items()
        ]
        config = gateway_config(amqp_url, prefix, tmp_path, destinations, blob_store=s3_settings(s3_server))
        config["metrics"]["ports"].pop("console")
        topology = register_topology(amqp_url, parse_config(json.dumps(config)))
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
        for scp in made.pacs.values():
            scp.stop()


@pytest.mark.fault
@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_with_s3_a_service_killed_mid_transfer_loses_nothing_and_the_sweep_leaves_no_blob(
    service: str,
    s3_rig: Callable[[], Rig],
    fault_study: StudyFiles,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    originals = fault_study.by_sop_instance()
    r = s3_rig()
    store = store_of(r.gateway.config["blob_store"])
    progress: dict[str, Callable[[], float]] = {
        "receiver": lambda: r.metric("receiver", "karnak_instances_received_total", outcome="accepted"),
        "processor": lambda: r.metric(
            "processor", "karnak_instances_routed_total", destination="pacs-a", outcome="queued"
        ),
        "dicom-sender": lambda: r.pacs["pacs-a"].count(),
    }
    r.modality.start(fault_study.paths)
    wait_until(lambda: progress[service]() >= INSTANCES // 3, 90, f"a third of the study through the {service}")
    delivered_before = min(scp.count() for scp in r.pacs.values())
    old, new = kill_service(r.gateway, service)
    assert delivered_before < INSTANCES, "the transfer was over before the kill: the test proves nothing"

    first = r.modality.wait()
    if service == "receiver":
        missing = first.unacknowledged(fault_study.paths)
        assert missing, "storescu saw nothing of the receiver's death: the kill came too late"
        r.modality.send_until_acknowledged(missing)
    else:
        assert first.unacknowledged(fault_study.paths) == [], first.output[-2000:]

    deliveries = r.wait_delivered_and_settled(originals, timeout=120)
    bound = {"receiver": 1, "processor": PROCESSOR_WORKERS, "dicom-sender": 1}[service]
    _assert_all_delivered(deliveries, originals, bound, when=f" after the {service} was killed (S3 store)")
    assert r.depths()[r.topology.dead_queue] == 0, "messages parked in the dead queue"
    left_by_crash = blobs_in(store)[0]

    swept = r.gateway.karnak("blobs", "sweep", "--older-than", "0", "--json")

    assert swept.returncode == 0, swept.stderr
    assert blobs_in(store) == (0, 0), f"blobs left after the sweep: {swept.stdout}"
    _report(
        record_property,
        service=service,
        killed_pid=old,
        restarted_pid=new,
        delivered_at_kill=delivered_before,
        **_delivery_figures(deliveries),
        blobs_left_by_the_crash=left_by_crash,
        swept=len(json.loads(swept.stdout)["purged"]),
        seconds=round(time.monotonic() - started, 1),
    )
