"""The receiver in-process against the real RabbitMQ, driven by pynetdicom and DCMTK associations."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification  # type: ignore[attr-defined]

from karnak_dicom.testing import make_study
from karnak_receiver.listener import Listener
from karnak_receiver.main import ReceiverService
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.envelope import Envelope
from karnak_shared.service import ServiceRunner
from tests.conftest import gateway_config, register_topology
from tests.support.servers import free_port, storescu

pytestmark = pytest.mark.integration


class RunningReceiver:
    def __init__(self, config: GatewayConfig, amqp_url: str) -> None:
        self.config = config
        self.topology = register_topology(amqp_url, config)
        self.runner = ServiceRunner(ReceiverService(), config, metrics_port=0).start()
        self.blobs = self.runner.providers.blobs
        self._amqp_url = amqp_url

    @property
    def listener(self) -> Listener:
        listener = self.runner.service.listener  # type: ignore[attr-defined]
        assert isinstance(listener, Listener)
        return listener

    @property
    def port(self) -> int:
        return self.listener.port

    def received(self) -> list[tuple[dict[str, Any], bytes]]:
        connection = pika.BlockingConnection(pika.URLParameters(self._amqp_url))
        channel = connection.channel()
        messages = []
        while True:
            method, properties, body = channel.basic_get(self.topology.received_queue, auto_ack=True)
            if method is None:
                break
            messages.append((dict(properties.headers), body))
        connection.close()
        return messages

    def stop(self) -> None:
        self.runner.stop()


def _config(amqp_url: str, prefix: str, tmp_path: Path, **broker: Any) -> GatewayConfig:
    raw = gateway_config(amqp_url, prefix, tmp_path, destinations=[])
    raw["broker"].update({"confirm_timeout": 5, **broker})
    return parse_config(json.dumps(raw))


@pytest.fixture
def receiver(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[RunningReceiver]:
    running = RunningReceiver(_config(amqp_url, prefix, tmp_path), amqp_url)
    yield running
    running.stop()


def _associate(port: int, called: str = "KARNAK-GW", calling: str = "CT01", contexts: Any = None) -> Any:
    ae = AE(ae_title=calling)
    for abstract, syntax in contexts or [(Verification, None)]:
        ae.add_requested_context(abstract, syntax) if syntax else ae.add_requested_context(abstract)
    return ae.associate("127.0.0.1", port, ae_title=called)


def test_c_echo_succeeds_for_a_known_source(receiver: RunningReceiver) -> None:
    assoc = _associate(receiver.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_the_accepted_socket_has_nagle_turned_off(receiver: RunningReceiver) -> None:
    assoc = _associate(receiver.port)
    assert assoc.is_established
    server_side = [a for a in receiver.listener.ae.active_associations if a.is_acceptor]
    assert server_side, "no acceptor association"
    sock = server_side[0].dul.socket.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assoc.release()


def test_an_unknown_called_ae_title_is_rejected_with_called_ae_not_recognised(receiver: RunningReceiver) -> None:
    assoc = _associate(receiver.port, called="NOBODY")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x07


def test_a_calling_ae_title_from_the_wrong_host_is_rejected(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    raw = gateway_config(amqp_url, prefix, tmp_path, destinations=[])
    raw["forward_nodes"][0]["sources"] = [{"ae_title": "MR01", "hostname": "192.0.2.10"}]
    running = RunningReceiver(parse_config(json.dumps(raw)), amqp_url)
    try:
        assoc = _associate(running.port, calling="MR01")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 0x03
    finally:
        running.stop()


def test_a_stored_instance_is_on_the_received_queue_when_c_store_answers_success(
    receiver: RunningReceiver, tmp_path: Path
) -> None:
    study = make_study(tmp_path / "study", ct=1, mr=1, multiframe=0, large=0, compressed=0)
    result = storescu(receiver.port, "KARNAK-GW", "CT01", study.paths)
    assert result.returncode == 0, result.stderr
    messages = receiver.received()
    assert len(messages) == 2
    by_uid = {Envelope.from_headers(h).sop_instance_uid: (Envelope.from_headers(h), body) for h, body in messages}
    for path in study.paths:
        ds = dcmread(path, stop_before_pixels=True)
        envelope, body = by_uid[str(ds.SOPInstanceUID)]
        assert envelope.forward_node == "KARNAK-GW"
        assert envelope.calling_ae == "CT01"
        assert envelope.sop_class_uid == ds.SOPClassUID
        data = receiver.blobs.get(envelope.blob) if envelope.blob else body
        # The CT (0.5 MB) goes through the blob store, the small MR inline.
        assert (envelope.blob is not None) == (path.stat().st_size > 65536)
        assert dcmread(__import__("io").BytesIO(data)).PixelData == dcmread(path).PixelData


def test_a_compressed_instance_is_accepted_in_its_own_transfer_syntax_and_kept_encapsulated(
    receiver: RunningReceiver, tmp_path: Path
) -> None:
    from pydicom.encaps import encapsulate

    from karnak_dicom.testing import make_instance, write_file

    ds = make_instance(str(SecondaryCaptureImageStorage), "1.2.3.4", "1.2.3.4.1", 1, "J2K")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 8, 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    fragment = b"\xff\x4f\xff\x51" + bytes(range(200))  # opaque: the gateway never decodes it
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    path = write_file(ds, tmp_path / "j2k.dcm", JPEG2000Lossless)
    assoc = _associate(receiver.port, contexts=[(SecondaryCaptureImageStorage, [JPEG2000Lossless])])
    assert assoc.is_established
    assert assoc.send_c_store(dcmread(path)).Status == 0x0000
    assoc.release()
    [(headers, body)] = receiver.received()
    envelope = Envelope.from_headers(headers)
    assert envelope.transfer_syntax == JPEG2000Lossless
    stored = dcmread(__import__("io").BytesIO(body))
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert fragment in stored.PixelData


def test_c_store_answers_out_of_resources_when_the_broker_is_unreachable(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    dead_port = free_port()
    config = _config(amqp_url, prefix, tmp_path, url=f"amqp://guest:guest@127.0.0.1:{dead_port}/")
    running = RunningReceiver(config, amqp_url)
    try:
        study = make_study(tmp_path / "study", ct=1, mr=1, multiframe=0, large=0, compressed=0)
        ae = AE(ae_title="CT01")
        for path in study.paths:
            ae.add_requested_context(dcmread(path, stop_before_pixels=True).SOPClassUID)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="KARNAK-GW")
        assert assoc.is_established
        statuses = [assoc.send_c_store(dcmread(p)).Status for p in study.paths]
        assoc.release()
        assert statuses == [0xA700, 0xA700]
        # Nothing half-stored is left behind: a refused instance leaves no blob.
        assert [p for p in Path(config.blob_store.path).rglob("*") if p.is_file()] == []
    finally:
        running.stop()
