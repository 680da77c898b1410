"""The DICOM port under attack: oversized PDUs, silent and slow connections, against a real receiver process.

Memory is the receiver's own resident set, read from /proc while the attack runs; deadlines are checked
with generous margins, never timed to the second.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from karnak_dicom.testing import make_study
from tests.receiver.conftest import ReceiverProcess
from tests.receiver.rawpdus import associate_rq, closed_by_peer, pdu_header, read_pdu
from tests.support.servers import resident_bytes, storescu

MiB = 1024 * 1024
STREAMED = 256 * MiB
GROWTH_LIMIT = 64 * MiB
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ABORT = 0x02, 0x03, 0x07


@contextmanager
def peak_growth(pid: int) -> Iterator[Callable[[], int]]:
    """Sample the resident set of `pid` every 10 ms; yields a function giving the peak growth so far."""
    baseline = resident_bytes(pid)
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], resident_bytes(pid))
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak[0] - baseline
    finally:
        stop.set()
        sampler.join()


def stream_zeros(sock: socket.socket, total: int) -> int:
    """Send up to `total` zero bytes; return how many the receiver took before it closed the connection."""
    chunk = bytes(MiB)
    sent = 0
    sock.settimeout(30)
    try:
        while sent < total:
            sent += sock.send(chunk[: min(MiB, total - sent)])
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def echo(port: int, calling: str = "CT01") -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="KARNAK-GW")
    assert assoc.is_established, "the receiver no longer accepts a known source"
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def test_an_associate_request_claiming_4_gb_is_refused_unread_and_memory_stays_flat(
    start_receiver: Callable[..., ReceiverProcess],
) -> None:
    receiver = start_receiver()
    with peak_growth(receiver.pid) as growth, socket.create_connection(("127.0.0.1", receiver.port)) as sock:
        sock.sendall(pdu_header(0x01, 0xFFFFFFFF))
        # The answer comes from the header alone, before any of the body is read.
        pdu_type, body = read_pdu(sock)
        assert pdu_type == A_ASSOCIATE_RJ
        assert body[1] == 0x01, "rejected permanently"
        taken = stream_zeros(sock, STREAMED)
        assert closed_by_peer(sock, 15)
        peak = growth()
    assert taken < STREAMED, "the receiver read the whole body it was told to refuse"
    assert peak < GROWTH_LIMIT, f"the receiver grew by {peak / MiB:.1f} MiB"
    receiver.wait_for_log("connection.refused")
    assert "longer than the 1048576 allowed" in receiver.log()
    assert echo(receiver.port) == 0x0000


def test_a_p_data_pdu_beyond_the_advertised_maximum_is_aborted_unread_and_memory_stays_flat(
    start_receiver: Callable[..., ReceiverProcess],
) -> None:
    receiver = start_receiver()
    with peak_growth(receiver.pid) as growth, socket.create_connection(("127.0.0.1", receiver.port)) as sock:
        sock.sendall(associate_rq())
        pdu_type, _ = read_pdu(sock)
        assert pdu_type == A_ASSOCIATE_AC
        sock.sendall(pdu_header(0x04, STREAMED))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == A_ABORT
        assert (body[2], body[3]) == (0x02, 0x06), "service-provider abort, invalid PDU parameter value"
        taken = stream_zeros(sock, STREAMED)
        assert closed_by_peer(sock, 15)
        peak = growth()
    assert taken < STREAMED
    assert peak < GROWTH_LIMIT, f"the receiver grew by {peak / MiB:.1f} MiB"
    receiver.wait_for_log("longer than the 131072 we advertised")
    assert echo(receiver.port) == 0x0000


def test_a_slow_associate_request_is_closed_by_its_deadline(start_receiver: Callable[..., ReceiverProcess]) -> None:
    receiver = start_receiver(association_request_timeout=2)
    request = associate_rq()
    with socket.create_connection(("127.0.0.1", receiver.port)) as sock:
        started = time.monotonic()
        closed = False
        # One byte every 0.2 s: the request would take 40 s; the receiver closes long before.
        for byte in request:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_peer(sock, 0.2):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, "the whole request trickled in and was served"
    assert elapsed < 15, f"closed only after {elapsed:.0f} s"
    receiver.wait_for_log("the association request did not arrive within its deadline")


def test_a_silent_connection_is_closed_by_the_request_deadline(start_receiver: Callable[..., ReceiverProcess]) -> None:
    receiver = start_receiver(association_request_timeout=2)
    with socket.create_connection(("127.0.0.1", receiver.port)) as sock:
        assert closed_by_peer(sock, 20), "a connection that sends nothing is still open after 20 s"


def _slow_and_idle(port: int, count: int) -> tuple[list[socket.socket], threading.Event]:
    """`count` connections: half send nothing, half send their request one byte a second."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    slow = sockets[: count // 2]
    stop = threading.Event()
    request = associate_rq()

    def trickle() -> None:
        for byte in request:
            for sock in slow:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    pass
            if stop.wait(1.0):
                return

    threading.Thread(target=trickle, daemon=True).start()
    return sockets, stop


def test_a_configured_modality_is_served_while_100_idle_and_slow_connections_are_open(
    start_receiver: Callable[..., ReceiverProcess], tmp_path: Path
) -> None:
    receiver = start_receiver(association_request_timeout=20)
    study = make_study(tmp_path / "study", ct=3, mr=0, multiframe=0, large=0, compressed=0)
    sockets, stop = _slow_and_idle(receiver.port, 100)
    try:
        time.sleep(1)  # every one of them accepted and waiting
        result = storescu(receiver.port, "KARNAK-GW", "CT01", study.paths, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Local Limit Exceeded" not in result.stdout + result.stderr
        still_open = [s for s in sockets if not closed_by_peer(s, 0.01)]
        assert len(still_open) == 100, "the attack was not under way while the modality sent"
        # And none of them outlives its deadline.
        assert all(closed_by_peer(s, 40) for s in sockets)
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
    assert receiver.log().count("c-store.accepted") == 3


def test_pending_connections_beyond_the_limit_are_refused_at_once(
    start_receiver: Callable[..., ReceiverProcess],
) -> None:
    receiver = start_receiver(max_pending_connections=5, association_request_timeout=30)
    held = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(5)]
    try:
        time.sleep(2)  # each accepted by the server's loop and handed to its thread
        with socket.create_connection(("127.0.0.1", receiver.port)) as extra:
            assert closed_by_peer(extra, 10)
        receiver.wait_for_log("5 connections are already waiting for their request")
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, a modality gets in again.
    time.sleep(0.5)
    assert echo(receiver.port) == 0x0000


def _hold_associations(port: int, calling: str, count: int) -> list[Any]:
    held = []
    for _ in range(count):
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        held.append(ae.associate("127.0.0.1", port, ae_title="KARNAK-GW"))
    return held


def test_one_address_gets_at_most_its_share_of_associations_but_a_host_bound_source_still_gets_in(
    start_receiver: Callable[..., ReceiverProcess],
) -> None:
    receiver = start_receiver(max_associations_per_peer=2)
    held = _hold_associations(receiver.port, "CT01", 3)
    try:
        assert [a.is_established for a in held] == [True, True, False]
        assert held[2].is_rejected
        receiver.wait_for_log("127.0.0.1 already has 2 associations")
        # MR01 is a source bound to 127.0.0.1: the address is who it is, the per-address share does not apply.
        assert echo(receiver.port, calling="MR01") == 0x0000
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


@pytest.mark.parametrize("outcome", ["released", "rejected"])
def test_the_receiver_logs_the_real_outcome_of_each_association(
    start_receiver: Callable[..., ReceiverProcess], outcome: str
) -> None:
    receiver = start_receiver()
    if outcome == "released":
        assert echo(receiver.port) == 0x0000
        receiver.wait_for_log("association.released")
        assert "association.accepted" in receiver.log()
    else:
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", receiver.port, ae_title="KARNAK-GW")
        assert assoc.is_rejected
        receiver.wait_for_log("association.rejected")
        assert "association.accepted" not in receiver.log()
