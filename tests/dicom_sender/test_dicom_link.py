"""DestinationLink against DCMTK's storescp on loopback: association reuse, contexts, failures."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from karnak_dicom.testing import StudyFiles, dataset_bytes, make_study
from karnak_dicom_sender.link import DestinationLink, Peer
from karnak_dicom_sender.status import Outcome, Stored
from karnak_shared.errors import PermanentDeliveryError, TransientDeliveryError
from tests.support.servers import ScriptedSCP, StoreSCP, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    return make_study(tmp_path_factory.mktemp("link-study"), ct=12, mr=4, multiframe=1, large=0, compressed=1)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP("PACS", free_port(), tmp_path / "received").start()
    yield scp
    scp.stop()


def _peer(port: int, called: str = "PACS") -> Peer:
    return Peer("pacs", "127.0.0.1", port, called, "KARNAK-GW", dimse_timeout=10, acse_timeout=5)


def _send(link: DestinationLink, path: Path) -> Outcome:
    return _store(link, path).outcome


def _store(link: DestinationLink, path: Path) -> Stored:
    meta = dcmread(path, stop_before_pixels=True)
    return link.store(path, meta.SOPClassUID, meta.SOPInstanceUID, meta.file_meta.TransferSyntaxUID)


def test_one_association_carries_a_whole_series(storescp: StoreSCP, study: StudyFiles) -> None:
    link = DestinationLink(_peer(storescp.port))
    ct = [p for p in study.paths if p.name.startswith("ct")]
    for path in ct:
        assert _send(link, path) is Outcome.SUCCESS
    link.release()
    assert link.associations_opened == 1
    assert len(storescp.files()) == len(ct)


def test_a_new_sop_class_or_syntax_reassociates_with_every_context_seen(storescp: StoreSCP, study: StudyFiles) -> None:
    link = DestinationLink(_peer(storescp.port))
    for path in study.paths:
        _send(link, path)
    opened = link.associations_opened
    # Four (SOP class, syntax) pairs: CT, MR, multi-frame SC, JPEG SC; the last association proposes
    # them all, so a second round goes over it without associating again.
    assert opened == 4
    for path in study.paths:
        _send(link, path)
    link.release()
    assert link.associations_opened == opened
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in storescp.files()}
    for path in study.paths:
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


def test_the_requestor_socket_has_nagle_turned_off(storescp: StoreSCP, study: StudyFiles) -> None:
    link = DestinationLink(_peer(storescp.port))
    _send(link, study.paths[0])
    assert link._assoc is not None
    sock = link._assoc.dul.socket.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    link.release()


def test_a_syntax_the_destination_does_not_accept_is_a_permanent_failure_naming_it(
    tmp_path: Path, study: StudyFiles
) -> None:
    import subprocess

    from tests.support.servers import dcmtk_env, dcmtk_tool, wait_for_port

    port = free_port()
    (tmp_path / "plain").mkdir()
    # Without +xa, storescp accepts only uncompressed syntaxes.
    process = subprocess.Popen(
        [dcmtk_tool("storescp"), "-aet", "PACS", "-od", str(tmp_path / "plain"), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        link = DestinationLink(_peer(port))
        jpeg = next(p for p in study.paths if p.name.startswith("sc"))
        with pytest.raises(PermanentDeliveryError, match=r"does not accept SOP Class .* in transfer syntax 1\.2\.840"):
            _send(link, jpeg)
        link.release()
    finally:
        process.terminate()
        process.wait()


def test_a_destination_that_is_down_is_a_transient_failure(study: StudyFiles) -> None:
    link = DestinationLink(_peer(free_port()))
    with pytest.raises(TransientDeliveryError, match="cannot associate"):
        _send(link, study.paths[0])


def test_a_wrong_called_ae_title_is_a_permanent_failure(study: StudyFiles) -> None:
    scp = ScriptedSCP("PACS", free_port())
    scp.ae.require_called_aet = True
    scp.start()
    try:
        with pytest.raises(PermanentDeliveryError, match="rejected the association"):
            _send(DestinationLink(_peer(scp.port, called="NOT-PACS")), study.paths[0])
    finally:
        scp.stop()


@pytest.mark.parametrize(
    ("status", "error"),
    [(0xA700, TransientDeliveryError), (0xA900, PermanentDeliveryError), (0xC000, PermanentDeliveryError)],
)
def test_failure_statuses_are_classified(status: int, error: type[Exception], study: StudyFiles) -> None:
    scp = ScriptedSCP("PACS", free_port(), status=status).start()
    try:
        link = DestinationLink(_peer(scp.port))
        with pytest.raises(error, match=f"0x{status:04X}"):
            _send(link, study.paths[0])
        link.release()
    finally:
        scp.stop()


def test_a_warning_status_counts_as_stored(study: StudyFiles) -> None:
    scp = ScriptedSCP("PACS", free_port(), status=0xB000).start()
    try:
        link = DestinationLink(_peer(scp.port))
        stored = _store(link, study.paths[0])
        assert (stored.outcome, stored.status) == (Outcome.WARNING, 0xB000)
        assert stored.warning == "stored with warning status 0xB000 (Coercion of data elements)"
        link.release()
    finally:
        scp.stop()
