"""Instances/s of the stow-sender into Orthanc (DICOMweb plugin, basic auth) for 0.5 MB CT instances.

Four runs in one go, each into a fresh Orthanc on loopback with the same files:
- a plain `requests` loop posting the files straight to Orthanc, one per request and 20 per request (the
  ceiling: no broker, no blob store);
- the stow-sender (in-process, real RabbitMQ on localhost, default concurrency) with batch sizes 1 and 20,
  its queue filled beforehand with the instances as the processor would queue them (0.5 MB each, so
  through the blob store), timed from its consumer's connection to its last `sent` (events and acks
  included: every instance is settled when the clock stops).

Usage: .venv/bin/python bench/stow_throughput.py [INSTANCES]   (default 200; needs RabbitMQ, orthanc and
orthanc-dicomweb installed)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from io import BytesIO
from pathlib import Path

import pika
import requests
from pydicom import dcmread

from karnak_dicom.testing import make_study
from karnak_shared.blobstore import DirectoryBlobStore
from karnak_shared.broker import Publisher
from karnak_shared.config import parse_config
from karnak_shared.envelope import Envelope
from karnak_shared.headers import basic_authorization, karnak_form
from karnak_shared.payload import store_payload
from karnak_shared.sender_metrics import SENT
from karnak_shared.service import ServiceRunner
from karnak_shared.service.testing.orthanc import Orthanc
from karnak_shared.topology import Topology
from karnak_stow_sender.multipart import encode_related
from karnak_stow_sender.sender import StowSenderService
from karnak_stow_sender.settings import StowSenderSettings

AMQP_URL = "amqp://guest:guest@localhost:5672/"
DESTINATION = "orthanc"


def plain_loop(orthanc: Orthanc, files: list[bytes], per_request: int) -> float:
    """Seconds to post every file with one requests.Session, `per_request` instances per request."""
    session = requests.Session()
    started = time.perf_counter()
    for start in range(0, len(files), per_request):
        body, content_type = encode_related(files[start : start + per_request])
        answer = session.post(
            orthanc.stow_url,
            data=body,
            headers={"Content-Type": content_type, "Authorization": orthanc.authorization},
            timeout=120,
        )
        answer.raise_for_status()
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed


def stow_sender(orthanc: Orthanc, files: list[bytes], batch_size: int, workdir: Path) -> float:
    """Seconds for the stow-sender to deliver `files`, queued beforehand as the processor queues them."""
    prefix = f"karnak-bench-stow-{uuid.uuid4().hex[:8]}"
    header = karnak_form({"Authorization": basic_authorization(orthanc.user, orthanc.password)})
    raw = {
        "forward_nodes": [
            {
                "ae_title": "KARNAK-GW",
                "destinations": [{"id": DESTINATION, "type": "stow", "url": orthanc.stow_url, "headers": header}],
            }
        ],
        "broker": {"url": AMQP_URL, "prefix": prefix},
        "blob_store": {"path": str(workdir / f"blobs-{prefix}")},
    }
    config = parse_config(json.dumps(raw))
    topology = Topology.from_config(config)
    blobs = DirectoryBlobStore(config.blob_store.path)
    blobs.ensure()
    publisher = Publisher(AMQP_URL, topology).start()
    try:
        for data in files:
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
            body, blob = store_payload(data, blobs, config.blob_store.max_inline_bytes)
            envelope = Envelope(
                forward_node="KARNAK-GW",
                destination=DESTINATION,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                blob=blob,
                size=len(data),
            )
            publisher.publish(
                topology.send_exchange, topology.send_queue("stow", DESTINATION), body, envelope.to_headers()
            )
    finally:
        publisher.stop()

    sent = SENT.labels(DESTINATION, "sent")
    before = sent._value.get()
    settings = StowSenderSettings(batch_size=batch_size, max_wait=0.05)
    runner = ServiceRunner(StowSenderService(settings), config, metrics_port=0).start()
    try:
        # Timed from the consumer's connection (set-up excluded): the throughput of a running sender.
        while runner.consumer is None or not runner.consumer.connected:
            time.sleep(0.001)
        started = time.perf_counter()
        deadline = started + 600
        while sent._value.get() - before < len(files):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the stow-sender delivered {sent._value.get() - before} of {len(files)} in 600 s")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        runner.stop()
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        topology.delete(connection.channel())
        connection.close()
    return elapsed


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="karnak-bench-stow-") as tmp:
        workdir = Path(tmp)
        study = make_study(workdir / "study", ct=count, mr=0, multiframe=0, large=0, compressed=0)
        files = [p.read_bytes() for p in study.paths]
        size = sum(len(f) for f in files) / len(files)
        rows: list[tuple[str, int, float]] = []
        runs = [
            ("requests loop -> Orthanc (ceiling)", 1, lambda o: plain_loop(o, files, 1)),
            ("requests loop -> Orthanc (ceiling)", 20, lambda o: plain_loop(o, files, 20)),
            ("stow-sender (RabbitMQ) -> Orthanc", 1, lambda o: stow_sender(o, files, 1, workdir)),
            ("stow-sender (RabbitMQ) -> Orthanc", 20, lambda o: stow_sender(o, files, 20, workdir)),
        ]
        for number, (name, batch, measure) in enumerate(runs):
            orthanc = Orthanc(workdir / f"orthanc-{number}").start()
            try:
                seconds = measure(orthanc)
                stored = orthanc.instance_count()
                if stored != count:
                    raise RuntimeError(f"{name}: Orthanc holds {stored} instances, expected {count}")
            finally:
                orthanc.stop()
            rows.append((name, batch, seconds))
            print(f"  {name}, batch {batch}: {count / seconds:.1f} instances/s", file=sys.stderr, flush=True)
    print(f"STOW-RS into Orthanc on loopback: {count} CT instances of {size / 1e6:.2f} MB each")
    print(f"{'run':<38} {'batch':>5} {'seconds':>8} {'instances/s':>12} {'MB/s':>7}")
    for name, batch, seconds in rows:
        print(f"{name:<38} {batch:>5} {seconds:>8.2f} {count / seconds:>12.1f} {count * size / 1e6 / seconds:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
