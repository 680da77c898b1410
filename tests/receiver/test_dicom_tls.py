"""DICOM TLS, optional per node: the listener (`listener.tls`) against DCMTK's and pynetdicom's TLS SCUs, and
the dicom-sender's link (`destinations[].tls`) against DCMTK's TLS storescp.

Certificates are made for the module with the `openssl` command (tests/support/tls.py): a CA signing a
server certificate (localhost, 127.0.0.1) and a client certificate, and a stranger CA with a server of its
own. Unusable files are configuration errors naming their field at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from karnak_dicom.testing import StudyFiles, dataset_bytes, make_study
from karnak_dicom_sender.link import DestinationLink
from karnak_dicom_sender.sender import peers
from karnak_dicom_sender.status import Outcome
from karnak_receiver.listener import tls_context
from karnak_receiver.main import ReceiverService
from karnak_shared.config import DestinationTls, GatewayConfig, parse_config
from karnak_shared.envelope import Envelope
from karnak_shared.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from karnak_shared.service import ServiceRunner
from tests.conftest import gateway_config, register_topology
from tests.support.servers import Gateway, dcmtk_env, dcmtk_tool, free_port, storescu, wait_for_port, wait_until
from tests.support.tls import Pki, make_pki

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    try:
        return make_pki(tmp_path_factory.mktemp("pki"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    return make_study(tmp_path_factory.mktemp("tls-study"), ct=2, mr=2, multiframe=0, large=0, compressed=0)


def _listener_tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"certificate": str(pki.server.certificate), "private_key": str(pki.server.private_key), **extra}


def _received(amqp_url: str, config: GatewayConfig) -> list[Envelope]:
    topology = register_topology(amqp_url, config)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    topology.declare(channel)  # nothing may have been published yet
    envelopes = []
    while True:
        method, properties, _ = channel.basic_get(topology.received_queue, auto_ack=True)
        if method is None:
            break
        envelopes.append(Envelope.from_headers(dict(properties.headers)))
    connection.close()
    return envelopes


class TlsReceiver:
    """The receiver's listener and intake in-process, with the listener's TLS from the configuration."""

    def __init__(self, config: GatewayConfig, amqp_url: str) -> None:
        self.config = config
        register_topology(amqp_url, config)
        self.service = ReceiverService()
        self.runner = ServiceRunner(self.service, config, metrics_port=0).start()
        assert self.service.listener is not None
        self.listener = self.service.listener

    @property
    def port(self) -> int:
        return self.listener.port

    def stop(self) -> None:
        self.runner.stop()


def _receiver(amqp_url: str, prefix: str, workdir: Path, tls: dict[str, Any]) -> TlsReceiver:
    raw = gateway_config(amqp_url, prefix, workdir, destinations=[])
    raw["listener"]["tls"] = tls
    return TlsReceiver(parse_config(json.dumps(raw)), amqp_url)


@pytest.fixture
def receiver(amqp_url: str, prefix: str, tmp_path: Path, pki: Pki) -> Iterator[TlsReceiver]:
    running = _receiver(
        amqp_url, prefix, tmp_path, _listener_tls(pki, ca_certificates=str(pki.ca), require_client_certificate=True)
    )
    yield running
    running.stop()


def _client_context(pki: Pki, certificate: bool = True, ca: Path | None = None) -> Any:
    return DestinationTls(
        ca_certificates=str(ca or pki.ca),
        certificate=str(pki.client.certificate) if certificate else None,
        private_key=str(pki.client.private_key) if certificate else None,
    ).client_context("test")


def _echo(port: int, tls_args: Any, timeout: float = 10) -> bool:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title="KARNAK-GW", tls_args=tls_args)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status.Status == 0x0000)


# --- the listener ----------------------------------------------------------------------------------


def test_a_dcmtk_storescu_with_a_client_certificate_stores_over_tls(
    receiver: TlsReceiver, pki: Pki, study: StudyFiles, amqp_url: str
) -> None:
    result = storescu(receiver.port, "KARNAK-GW", "CT01", study.paths, *pki.chain_for_storescu)
    assert result.returncode == 0, result.stderr
    stored = {e.sop_instance_uid for e in _received(amqp_url, receiver.config)}
    assert stored == set(study.by_sop_instance())


def test_a_pynetdicom_scu_with_a_client_certificate_echoes_over_tls(receiver: TlsReceiver, pki: Pki) -> None:
    assert _echo(receiver.port, (_client_context(pki), "localhost"))


def test_a_plain_client_is_refused_by_the_tls_listener(receiver: TlsReceiver, study: StudyFiles, amqp_url: str) -> None:
    assert not _echo(receiver.port, None, timeout=5)
    result = storescu(receiver.port, "KARNAK-GW", "CT01", study.paths[:1], timeout=30)
    assert result.returncode != 0
    assert _received(amqp_url, receiver.config) == []


def test_a_client_without_a_certificate_is_refused_when_the_listener_requires_one(
    receiver: TlsReceiver, pki: Pki
) -> None:
    assert not _echo(receiver.port, (_client_context(pki, certificate=False), "localhost"), timeout=5)
    # The listener is unharmed: a client with its certificate still gets in.
    assert _echo(receiver.port, (_client_context(pki), "localhost"))


def test_a_client_certificate_the_listener_does_not_trust_is_refused(
    amqp_url: str, prefix: str, tmp_path: Path, pki: Pki
) -> None:
    # The listener trusts only the stranger CA, which did not sign the modality's certificate.
    running = _receiver(
        amqp_url,
        prefix,
        tmp_path,
        _listener_tls(pki, ca_certificates=str(pki.stranger_ca), require_client_certificate=True),
    )
    try:
        assert not _echo(running.port, (_client_context(pki), "localhost"), timeout=5)
    finally:
        running.stop()


def test_without_a_ca_the_listener_takes_tls_clients_without_certificates(
    amqp_url: str, prefix: str, tmp_path: Path, pki: Pki
) -> None:
    running = _receiver(amqp_url, prefix, tmp_path, _listener_tls(pki))
    try:
        assert _echo(running.port, (_client_context(pki, certificate=False), "localhost"))
    finally:
        running.stop()


def test_a_connection_that_never_starts_its_handshake_does_not_block_other_associations(
    receiver: TlsReceiver, pki: Pki
) -> None:
    idle = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(3)]
    try:
        started = time.monotonic()
        assert _echo(receiver.port, (_client_context(pki), "localhost"), timeout=10)
        assert time.monotonic() - started < 5
    finally:
        for sock in idle:
            sock.close()


def _karnak(*args: str) -> subprocess.CompletedProcess[str]:
    karnak = str(Path(sys.executable).with_name("karnak"))
    return subprocess.run([karnak, *args], capture_output=True, text=True, timeout=60)


def test_the_receiver_service_refuses_to_start_with_a_missing_certificate_naming_the_field(
    amqp_url: str, prefix: str, tmp_path: Path, pki: Pki
) -> None:
    raw = gateway_config(amqp_url, prefix, tmp_path, destinations=[])
    raw["listener"]["tls"] = _listener_tls(pki) | {"certificate": str(tmp_path / "missing.crt")}
    path = tmp_path / "karnak.yml"
    path.write_text(json.dumps(raw))
    result = _karnak("run", "receiver", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert (
        f"listener.tls.certificate: cannot read '{tmp_path / 'missing.crt'}': No such file or directory"
        in result.stderr
    )


@pytest.mark.parametrize(
    "field,replacement,message",
    [
        ("certificate", "server.key", "listener.tls.certificate: {path} holds no PEM certificate"),
        ("private_key", "client.key", "listener.tls.private_key: {path} is not the unencrypted PEM key of"),
        ("private_key", "server-encrypted.key", "listener.tls.private_key: {path} is not the unencrypted PEM key"),
        ("ca_certificates", "server.key", "listener.tls.ca_certificates: {path} holds no PEM certificate"),
    ],
)
def test_an_unusable_listener_file_is_a_configuration_error_naming_its_field(
    pki: Pki, field: str, replacement: str, message: str
) -> None:
    path = pki.directory / replacement
    raw = {"listener": {"tls": _listener_tls(pki, ca_certificates=str(pki.ca)) | {field: str(path)}}}
    raw["forward_nodes"] = [{"ae_title": "KARNAK-GW"}]
    config = parse_config(json.dumps(raw))
    with pytest.raises(ConfigError) as caught:
        tls_context(config.listener)
    assert str(caught.value).startswith(message.format(path=path)), caught.value


def test_a_key_given_through_a_secret_file_reference_is_used_and_never_shown(
    amqp_url: str, prefix: str, tmp_path: Path, pki: Pki
) -> None:
    # `${file:...}` puts the PEM text itself in the setting (a Kubernetes secret, say), not a path.
    tls = _listener_tls(pki) | {"private_key": f"${{file:{pki.server.private_key}}}"}
    running = _receiver(amqp_url, prefix, tmp_path, tls)
    try:
        assert _echo(running.port, (_client_context(pki, certificate=False), "localhost"))
        assert "PRIVATE KEY" not in repr(running.config)
    finally:
        running.stop()
    wrong = {"certificate": str(pki.server.certificate), "private_key": f"${{file:{pki.client.private_key}}}"}
    config = parse_config(json.dumps({"listener": {"tls": wrong}, "forward_nodes": [{"ae_title": "KARNAK-GW"}]}))
    with pytest.raises(ConfigError) as caught:
        tls_context(config.listener)
    assert str(caught.value).startswith("listener.tls.private_key: the key given as PEM text is not the unencrypted")
    assert pki.client.private_key.read_text().splitlines()[1] not in str(caught.value)


def test_the_receiver_started_by_karnak_up_takes_tls_associations(
    amqp_url: str, prefix: str, tmp_path: Path, pki: Pki, study: StudyFiles
) -> None:
    raw = gateway_config(amqp_url, prefix, tmp_path, destinations=[])
    raw["listener"]["tls"] = _listener_tls(pki, ca_certificates=str(pki.ca), require_client_certificate=True)
    raw["metrics"]["ports"] = {"receiver": raw["metrics"]["ports"]["receiver"]}
    config = parse_config(json.dumps(raw))
    register_topology(amqp_url, config)
    gateway = Gateway(raw, tmp_path).start("--only", "receiver")
    try:
        result = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths, *pki.chain_for_storescu)
        assert result.returncode == 0, result.stderr
        plain = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths[:1], timeout=30)
        assert plain.returncode != 0
    finally:
        gateway.stop()
    assert {e.sop_instance_uid for e in _received(amqp_url, config)} == set(study.by_sop_instance())


# --- the dicom-sender's link -----------------------------------------------------------------------


class TlsStoreSCP:
    """DCMTK's storescp speaking TLS only (it requires our client certificate, signed by `ca`)."""

    def __init__(self, directory: Path, key: Path, certificate: Path, ca: Path) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        log = open(directory.parent / f"storescp-tls-{self.port}.log", "ab")
        command = [dcmtk_tool("storescp"), "+tls", str(key), str(certificate), "+cf", str(ca), "-aet", "PACS"]
        self.process = subprocess.Popen(
            [*command, "+xa", "--bit-preserving", "-od", str(directory), str(self.port)],
            env=dcmtk_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def tls_storescp(tmp_path: Path, pki: Pki) -> Iterator[TlsStoreSCP]:
    scp = TlsStoreSCP(tmp_path / "received", pki.server.private_key, pki.server.certificate, pki.ca)
    yield scp
    scp.stop()


def _destination(port: int, tls: dict[str, Any], host: str = "127.0.0.1") -> dict[str, Any]:
    return {"id": "secure-pacs", "type": "dicom", "ae_title": "PACS", "hostname": host, "port": port, "tls": tls}


def _link(pki: Pki, port: int, host: str = "127.0.0.1", **tls: Any) -> DestinationLink:
    settings = {
        "ca_certificates": str(pki.ca),
        "certificate": str(pki.client.certificate),
        "private_key": str(pki.client.private_key),
        **tls,
    }
    raw = {"forward_nodes": [{"ae_title": "KARNAK-GW", "destinations": [_destination(port, settings, host)]}]}
    [peer] = peers(parse_config(json.dumps(raw)))
    return DestinationLink(dataclasses.replace(peer, acse_timeout=5.0, dimse_timeout=10.0, network_timeout=10.0))


def _send(link: DestinationLink, path: Path) -> Outcome:
    meta = dcmread(path, stop_before_pixels=True)
    return link.store(path, meta.SOPClassUID, meta.SOPInstanceUID, meta.file_meta.TransferSyntaxUID).outcome


def test_the_dicom_sender_delivers_over_tls_to_a_dcmtk_storescp(
    tls_storescp: TlsStoreSCP, pki: Pki, study: StudyFiles
) -> None:
    link = _link(pki, tls_storescp.port)
    for path in study.paths:
        assert _send(link, path) is Outcome.SUCCESS
    link.release()
    wait_until(lambda: len(tls_storescp.files()) == len(study.paths), 10, "the study at the TLS storescp")
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in tls_storescp.files()}
    for uid, path in study.by_sop_instance().items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


def test_a_destination_certificate_from_another_ca_is_a_permanent_failure_saying_why(
    tmp_path: Path, pki: Pki, study: StudyFiles
) -> None:
    scp = TlsStoreSCP(tmp_path / "stranger", pki.stranger_server.private_key, pki.stranger_server.certificate, pki.ca)
    try:
        link = _link(pki, scp.port)
        with pytest.raises(PermanentDeliveryError) as caught:
            _send(link, study.paths[0])
    finally:
        scp.stop()
    # Retrying cannot make an untrusted peer trusted: the message is parked at once, the reason in front of
    # the operator, and `karnak dead replay --destination` resends once the trust is fixed.
    assert "its certificate is not trusted (unable to get local issuer certificate)" in caught.value.reason
    assert "secure-pacs (PACS@127.0.0.1:" in caught.value.reason
    assert "tls.ca_certificates" in caught.value.reason
    assert scp.files() == []


def test_a_destination_reached_by_a_name_its_certificate_does_not_carry_is_refused_unless_verify_hostname_is_off(
    tls_storescp: TlsStoreSCP, pki: Pki, study: StudyFiles
) -> None:
    # The server certificate names localhost and 127.0.0.1; 127.0.0.2 is the same machine by another address.
    with pytest.raises(PermanentDeliveryError, match="IP address mismatch"):
        _send(_link(pki, tls_storescp.port, host="127.0.0.2"), study.paths[0])
    link = _link(pki, tls_storescp.port, host="127.0.0.2", verify_hostname=False)
    assert _send(link, study.paths[0]) is Outcome.SUCCESS
    link.release()


def test_a_destination_that_requires_a_client_certificate_refuses_a_link_without_one(
    tls_storescp: TlsStoreSCP, pki: Pki, study: StudyFiles
) -> None:
    link = _link(pki, tls_storescp.port, certificate=None, private_key=None)
    # Transient: we trust the destination; it refused us, and may accept once it is given our CA.
    with pytest.raises(TransientDeliveryError) as caught:
        _send(link, study.paths[0])
    assert "cannot associate with secure-pacs" in str(caught.value)
    assert tls_storescp.files() == []


def test_an_unusable_destination_file_is_a_configuration_error_naming_its_field(tmp_path: Path, pki: Pki) -> None:
    tls = {"ca_certificates": str(tmp_path / "missing-ca.crt")}
    raw = {"forward_nodes": [{"ae_title": "KARNAK-GW", "destinations": [_destination(104, tls)]}]}
    with pytest.raises(ConfigError) as caught:
        peers(parse_config(json.dumps(raw)))
    assert str(caught.value) == (
        f"forward_nodes[0].destinations[0].tls.ca_certificates: cannot read '{tmp_path / 'missing-ca.crt'}': "
        "No such file or directory"
    )


def test_the_dicom_sender_service_refuses_to_start_with_an_unusable_client_key(
    amqp_url: str, prefix: str, tmp_path: Path, pki: Pki
) -> None:
    tls = {"certificate": str(pki.client.certificate), "private_key": str(pki.server.private_key)}
    raw = gateway_config(amqp_url, prefix, tmp_path, destinations=[_destination(104, tls)])
    path = tmp_path / "karnak.yml"
    path.write_text(json.dumps(raw))
    result = _karnak("run", "dicom-sender", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "forward_nodes[0].destinations[0].tls.private_key: " in result.stderr
    assert "is not the unencrypted PEM key of" in result.stderr
