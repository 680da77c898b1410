"""The stow-sender in-process against RabbitMQ, Orthanc (DICOMweb, basic auth) and scripted STOW-RS servers."""

from __future__ import annotations

import email.parser
import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from karnak_dicom.testing import StudyFiles, dataset_bytes, make_study
from karnak_shared.blobstore import BlobStore, DirectoryBlobStore
from karnak_shared.broker import Publisher
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.deadletters import DeadLetterQueue, ParkedMessage
from karnak_shared.envelope import Envelope
from karnak_shared.errors import TransientDeliveryError
from karnak_shared.headers import basic_authorization, karnak_form
from karnak_shared.payload import store_payload
from karnak_shared.topology import Topology
from karnak_stow_sender.client import StowClient
from karnak_stow_sender.main import StowSenderService
from karnak_stow_sender.settings import StowSenderSettings
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_backbone import EventTap
from tests.support.orthanc import Orthanc
from tests.support.servers import free_port, metric_value, wait_until

pytestmark = pytest.mark.integration

# --- a scripted STOW-RS server ---------------------------------------------------------------------------

Answer = Callable[[list[str]], tuple[int, bytes]]


def referenced(uids: list[str], failed: dict[str, int] | None = None) -> bytes:
    """A DICOM JSON STOW-RS report: `failed` (uid -> Failure Reason) in the Failed SOP Sequence, the rest stored."""
    failed = failed or {}

    def item(uid: str, reason: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"00081155": {"vr": "UI", "Value": [uid]}}
        if reason is not None:
            out["00081197"] = {"vr": "US", "Value": [reason]}
        return out

    return json.dumps(
        {
            "00081198": {"vr": "SQ", "Value": [item(u, failed[u]) for u in uids if u in failed]},
            "00081199": {"vr": "SQ", "Value": [item(u) for u in uids if u not in failed]},
        }
    ).encode()


def stored(uids: list[str]) -> tuple[int, bytes]:
    return 200, referenced(uids)


@dataclass
class Request:
    headers: dict[str, str]
    uids: list[str]


@dataclass
class ScriptedStow:
    """A STOW-RS server answering each request from `script` (then `stored`), recording what it received."""

    script: list[Answer | str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    hang_seconds: float = 3.0
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                message = email.parser.BytesParser().parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
                )
                uids = [
                    str(dcmread(BytesIO(part.get_payload(decode=True)), stop_before_pixels=True).SOPInstanceUID)
                    for part in message.get_payload()  # type: ignore[union-attr]
                ]
                server.requests.append(Request(dict(self.headers.items()), uids))
                answer = server.script.pop(0) if server.script else stored
                if answer == "hang":
                    time.sleep(server.hang_seconds)
                    self.close_connection = True
                    return
                assert callable(answer)
                status, payload = answer(uids)
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if self.tls is not None:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/dicom-web/studies"

    def received(self) -> list[str]:
        return [uid for request in self.requests for uid in request.uids]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the sender in-process ------------------------------------------------------------------------------


@dataclass
class RunningSender:
    config: GatewayConfig
    topology: Topology
    blobs: BlobStore
    service: StowSenderService
    publisher: Publisher
    events: EventTap

    def send(self, destination: str, paths: list[Path], albums: list[int] | None = None) -> None:
        """Publish the instances as the processor would to the destination's stow queue."""
        for path in paths:
            data = path.read_bytes()
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
            body, blob = store_payload(data, self.blobs, self.config.blob_store.max_inline_bytes)
            envelope = Envelope(
                forward_node="KARNAK-GW",
                destination=destination,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                blob=blob,
                size=len(data),
                kheops_albums=albums or [],
            )
            queue = self.topology.send_queue("stow", destination)
            self.publisher.publish(self.topology.send_exchange, queue, body, envelope.to_headers())

    def parked(self) -> list[ParkedMessage]:
        dead = DeadLetterQueue.connect(self.config)
        try:
            return dead.list()
        finally:
            dead.close()


@pytest.fixture
def start_sender(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., RunningSender]]:
    started: list[RunningSender] = []

    def start(destinations: list[dict[str, Any]], **settings: Any) -> RunningSender:
        raw = gateway_config(amqp_url, prefix, tmp_path, destinations)
        raw["broker"]["retry_delays"] = [1, 2]
        config = parse_config(json.dumps(raw))
        topology = register_topology(amqp_url, config)
        blobs = DirectoryBlobStore(config.blob_store.path)
        blobs.ensure()
        defaults: dict[str, Any] = {"batch_size": 10, "max_wait": 0.2, "read_timeout": 10}
        service = StowSenderService(config, topology, blobs, StowSenderSettings(**{**defaults, **settings})).start()
        publisher = Publisher(amqp_url, topology, confirm_timeout=10).start()
        running = RunningSender(config, topology, blobs, service, publisher, EventTap(amqp_url, f"{prefix}.events"))
        started.append(running)
        wait_until(lambda: service.connected, 15, "stow-sender connected to RabbitMQ")
        return running

    yield start
    for running in started:
        running.service.stop()
        running.publisher.stop()
        running.events.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    return make_study(tmp_path_factory.mktemp("stow-study"), ct=20, mr=4, multiframe=1, large=1, compressed=1)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    try:
        server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


def stow(dest_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": dest_id, "type": "stow", "url": url, **extra}


def uids_of(paths: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


# --- Orthanc ---------------------------------------------------------------------------------------------


def test_a_study_lands_in_orthanc_unchanged_in_batches_with_the_basic_header(
    start_sender: Callable[..., RunningSender], orthanc: Orthanc, study: StudyFiles
) -> None:
    header = karnak_form({"Authorization": basic_authorization(orthanc.user, orthanc.password)})
    sender = start_sender([stow("orthanc", orthanc.stow_url, headers=header)])
    before = orthanc.instance_count()
    sender.send("orthanc", study.paths)
    expected = uids_of(study.paths)
    wait_until(lambda: len(sender.events.of("sent", "orthanc")) >= len(expected), 60, "sent events")
    assert orthanc.instance_count() == before + len(expected)
    assert expected <= orthanc.sop_instance_uids()
    for path in study.paths[:3] + study.paths[-3:]:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes_of(orthanc.file_bytes(uid)) == dataset_bytes(path)
    assert {e["sop_instance_uid"] for e in sender.events.of("sent", "orthanc")} == expected
    assert sender.events.of("failed", "orthanc") == []
    metrics = _metrics()
    requests = metric_value(metrics, "karnak_stow_batch_instances_count", destination="orthanc")
    instances = metric_value(metrics, "karnak_stow_batch_instances_sum", destination="orthanc")
    assert instances == len(expected) and requests < len(expected) / 2, "instances were not batched"
    assert sender.parked() == []
    # Every blob of a delivered instance is gone.
    wait_until(lambda: not any(sender.blobs.root.rglob("*.dcm")), 10, "blobs deleted")


def dataset_bytes_of(part10: bytes) -> bytes:
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


def _metrics() -> str:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY).decode()


def test_a_wrong_password_is_refused_by_orthanc_and_parked_with_the_status(
    start_sender: Callable[..., RunningSender], orthanc: Orthanc, study: StudyFiles
) -> None:
    header = karnak_form({"Authorization": basic_authorization(orthanc.user, "wrong-password")})
    sender = start_sender([stow("orthanc-bad", orthanc.stow_url, headers=header)])
    sender.send("orthanc-bad", study.paths[:2])
    wait_until(lambda: len(sender.events.of("failed", "orthanc-bad")) >= 2, 30, "failed events")
    parked = [p for p in sender.parked() if p.destination == "orthanc-bad"]
    assert len(parked) == 2
    assert all(p.reason.endswith("answered HTTP 401 Unauthorized") for p in parked)
    assert all("wrong-password" not in p.reason and "Basic" not in p.reason for p in parked)


def test_orthanc_stores_the_readable_instances_of_a_batch_and_the_unreadable_one_is_parked(
    start_sender: Callable[..., RunningSender], orthanc: Orthanc, tmp_path: Path
) -> None:
    header = {"Authorization": basic_authorization(orthanc.user, orthanc.password)}
    sender = start_sender([stow("orthanc-mixed", orthanc.stow_url, headers=header)], max_wait=1.0)
    study = make_study(tmp_path / "mixed", ct=3, mr=0, multiframe=0, large=0, compressed=0)
    garbage = Envelope(
        forward_node="KARNAK-GW",
        destination="orthanc-mixed",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="2.25.404",
        study_instance_uid=study.study_uid,
        series_instance_uid="2.25.405",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=9,
    )
    queue = sender.topology.send_queue("stow", "orthanc-mixed")
    sender.publisher.publish(sender.topology.send_exchange, queue, b"not DICOM", garbage.to_headers())
    sender.send("orthanc-mixed", study.paths)
    wait_until(lambda: len(sender.events.of("sent", "orthanc-mixed")) >= 3, 30, "the readable ones sent")
    wait_until(lambda: len(sender.events.of("failed", "orthanc-mixed")) >= 1, 30, "the unreadable one failed")
    assert uids_of(study.paths) <= orthanc.sop_instance_uids()
    (parked,) = [p for p in sender.parked() if p.destination == "orthanc-mixed"]
    assert parked.sop_instance_uid == "2.25.404"
    assert parked.reason.endswith("answered HTTP 400 Bad Request")
    requests = metric_value(_metrics(), "karnak_stow_requests_total", destination="orthanc-mixed", status="400")
    assert requests == 1, "the four instances did not go in one request"


# --- scripted servers ------------------------------------------------------------------------------------


def test_a_503_is_retried_through_the_delay_queues_until_the_server_stores_it(
    start_sender: Callable[..., RunningSender], study: StudyFiles
) -> None:
    server = ScriptedStow([lambda uids: (503, b"")])
    try:
        sender = start_sender([stow("busy", server.url)])
        paths = study.paths[:5]
        sender.send("busy", paths)
        wait_until(lambda: len(sender.events.of("sent", "busy")) >= 5, 30, "sent after the retry")
        assert len(server.requests) == 2
        assert sorted(server.requests[0].uids) == sorted(server.requests[1].uids) == sorted(uids_of(paths))
        assert sender.events.of("failed", "busy") == []
        assert sender.parked() == []
    finally:
        server.stop()


def test_a_400_is_parked_with_its_reason_and_a_failed_event(
    start_sender: Callable[..., RunningSender], study: StudyFiles
) -> None:
    server = ScriptedStow([lambda uids: (400, b"")] * 3)
    try:
        sender = start_sender([stow("strict", server.url)])
        sender.send("strict", study.paths[:3])
        wait_until(lambda: len(sender.events.of("failed", "strict")) >= 3, 30, "failed events")
        parked = sender.parked()
        assert {p.sop_instance_uid for p in parked} == uids_of(study.paths[:3])
        assert all(p.reason == f"strict ({server.url}) answered HTTP 400 Bad Request" for p in parked)
        assert all(p.origin_routing_key == sender.topology.send_queue("stow", "strict") for p in parked)
        assert len(server.requests) == 1  # never retried
    finally:
        server.stop()


def test_a_server_that_does_not_answer_in_time_is_retried_then_parked(
    start_sender: Callable[..., RunningSender], study: StudyFiles
) -> None:
    server = ScriptedStow(["hang"] * 3, hang_seconds=2.5)
    try:
        sender = start_sender([stow("slow", server.url)], read_timeout=1.0)
        sender.send("slow", study.paths[:1])
        wait_until(lambda: len(sender.events.of("failed", "slow")) >= 1, 40, "parked after the last tier")
        assert len(server.requests) == 3  # the first attempt and one per delay tier
        (parked,) = sender.parked()
        assert parked.reason.startswith("gave up after 3 attempts: ")
        assert "did not answer within 10 s (connect) / 1 s (read)" in parked.reason
    finally:
        server.stop()


def test_a_partial_failure_parks_only_the_instance_in_the_failed_sop_sequence(
    start_sender: Callable[..., RunningSender], study: StudyFiles
) -> None:
    paths = study.paths[:4]
    refused = str(dcmread(paths[1], stop_before_pixels=True).SOPInstanceUID)
    server = ScriptedStow([lambda uids: (202, referenced(uids, {refused: 0xA900}))])
    try:
        sender = start_sender([stow("picky", server.url)])
        sender.send("picky", paths)
        wait_until(lambda: len(sender.events.of("sent", "picky")) >= 3, 30, "sent events")
        wait_until(lambda: len(sender.events.of("failed", "picky")) >= 1, 30, "the failed event")
        assert len(server.requests) == 1 and len(server.requests[0].uids) == 4
        assert {e["sop_instance_uid"] for e in sender.events.of("sent", "picky")} == uids_of(paths) - {refused}
        (failed,) = sender.events.of("failed", "picky")
        assert failed["sop_instance_uid"] == refused
        assert failed["reason"].endswith("refused it: 0xA900 (Data set does not match SOP Class)")
        assert [p.sop_instance_uid for p in sender.parked()] == [refused]
    finally:
        server.stop()


def test_configured_headers_go_with_every_request(
    start_sender: Callable[..., RunningSender], study: StudyFiles
) -> None:
    server = ScriptedStow()
    try:
        headers = "<key>Authorization</key>\n<value>Bearer tok-123</value>\n<key>X-Tenant</key><value>lab</value>"
        sender = start_sender([stow("with-headers", server.url, headers=headers)])
        sender.send("with-headers", study.paths[:2])
        wait_until(lambda: len(sender.events.of("sent", "with-headers")) >= 2, 30, "sent events")
        request = server.requests[0]
        assert request.headers["Authorization"] == "Bearer tok-123"
        assert request.headers["X-Tenant"] == "lab"
        assert request.headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    finally:
        server.stop()


# --- the HTTP client on its own --------------------------------------------------------------------------


def test_the_client_reuses_one_connection_with_nagle_turned_off(study: StudyFiles) -> None:
    server = ScriptedStow()
    client = StowClient("dest", server.url, {}, StowSenderSettings())
    try:
        for path in study.paths[:3]:
            assert client.post([path.read_bytes()]).status == 200
        manager = client.session.get_adapter(server.url).poolmanager
        pools = [manager.pools[key] for key in manager.pools.keys()]
        assert len(pools) == 1 and pools[0].num_connections == 1  # three requests, one connection
        connections = [c for c in list(pools[0].pool.queue) if c is not None and c.sock is not None]
        assert len(connections) == 1
        assert connections[0].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert connections[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with openssl."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default_and_a_ca_bundle_makes_a_private_ca_trusted(
    certificate: tuple[Path, Path], study: StudyFiles
) -> None:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ScriptedStow(tls=context)
    try:
        default = StowClient("dest", server.url, {}, StowSenderSettings(connect_timeout=5, read_timeout=5))
        with pytest.raises(
            TransientDeliveryError, match=r"^TLS with dest \(https://127\.0\.0\.1:\d+/dicom-web/studies\)"
        ):
            default.post([study.paths[0].read_bytes()])
        trusting = StowClient("dest", server.url, {}, StowSenderSettings(ca_bundle=str(cert)))
        assert trusting.post([study.paths[0].read_bytes()]).status == 200
        assert server.received() == [str(dcmread(study.paths[0], stop_before_pixels=True).SOPInstanceUID)]
        unverified = StowClient("dest", server.url, {}, StowSenderSettings(verify_tls=False))
        assert unverified.post([study.paths[0].read_bytes()]).status == 200
    finally:
        server.stop()


def test_a_refused_connection_is_transient_and_names_the_destination(study: StudyFiles) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web/studies"
    client = StowClient("down", url, {}, StowSenderSettings(connect_timeout=2))
    with pytest.raises(
        TransientDeliveryError, match=r"^request to down \(http://127\.0\.0\.1:\d+/dicom-web/studies\) failed"
    ):
        client.post([study.paths[0].read_bytes()])
