"""PDUs written byte by byte (PS3.8 9.3), for a raw socket client that does what no SCU library would."""

from __future__ import annotations

import socket
import struct

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = b"1.2.840.10008.1.2"


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode().ljust(16)


def associate_rq(called: str = "KARNAK-GW", calling: str = "CT01") -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing Verification in Implicit VR Little Endian."""
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_VR_LITTLE_ENDIAN))
    user = _item(0x50, _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.3.4"))
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT) + context + user
    return pdu_header(0x01, len(body)) + body


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BxL", pdu_type, length)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(type, body) of the next PDU from the peer; raise ConnectionError when it closes first."""
    header = _read_exactly(sock, 6)
    pdu_type, length = struct.unpack(">BxL", header)
    return pdu_type, _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes the connection (EOF or reset) within `timeout` seconds, reading what comes."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True
