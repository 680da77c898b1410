"""Every use of pydicom's and pynetdicom's internals, in one place, with the versions it was checked against.

The gateway reaches below the two libraries' public APIs where speed or control needs it: the engine and
the Part 10 writer read and write a dataset's element dictionary directly (tens of thousands of elements a
second, without pydicom converting each one), the writer encodes elements with pydicom's own element
writer, the reader walks element headers without reading values, and the dicom-sender streams datasets
from their files. Nothing else in the gateway touches a private name of either library:
`tests/dicom/test_internals.py` checks that every name below still exists and behaves as used, that the
installed versions are the checked ones, and that no other module uses a private name of either.

To move to a new pydicom or pynetdicom: run that test with the new version, adapt this module, then raise
the `CHECKED_*` versions and the upper bounds in libs/dicom/pyproject.toml together.

H4 (receiver hardening) adds pynetdicom transport wrappers here: keep one section per library.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

import pydicom
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag, tag_in_exception
from pynetdicom import AE, evt
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "CHECKED_PYDICOM",
    "CHECKED_PYNETDICOM",
    "DicomBytesIO",
    "Elements",
    "convert_raw_data_element",
    "copy_element_dictionary",
    "data_element_generator",
    "decoded_character_set",
    "element_dictionary",
    "forget_private_blocks",
    "pydicom_version",
    "send_datasets_from_files",
    "send_dimse_from_caller",
    "tag_in_exception",
    "version_problems",
    "write_data_element",
]

# (major, minor) of each library this module was written and tested against.
CHECKED_PYDICOM: Final = (3, 0)
CHECKED_PYNETDICOM: Final = (3, 0)


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def pydicom_version() -> tuple[int, int]:
    """(major, minor) of the installed pydicom."""
    return _major_minor(pydicom.__version__)


def version_problems() -> list[str]:
    """What differs between the installed libraries and the versions this module was checked against."""
    problems = []
    for name, installed, checked in (
        ("pydicom", pydicom.__version__, CHECKED_PYDICOM),
        ("pynetdicom", metadata.version("pynetdicom"), CHECKED_PYNETDICOM),  # not imported: no transport here
    ):
        if _major_minor(installed) != checked:
            problems.append(f"{name} {installed} is installed; karnak_dicom._internals was checked against {checked}")
    return problems


# --- pydicom: a dataset's element dictionary -------------------------------------------------------------

Elements = MutableMapping[BaseTag, "DataElement | RawDataElement"]
"""A dataset's element dictionary (``Dataset._dict``): tag -> element, raw (undecoded) or converted."""


def element_dictionary(dataset: Dataset) -> Elements:
    """The dataset's own element dictionary, read and written directly for speed (no conversion)."""
    elements: Elements = dataset._dict
    return elements


def copy_element_dictionary(source: Dataset, target: Dataset) -> None:
    """Give `target` (a shallow copy of `source`) an element dictionary of its own and no private blocks."""
    target._dict = dict(source._dict)
    target._private_blocks = {}


def forget_private_blocks(dataset: Dataset) -> None:
    """Drop pydicom's cache of private blocks: it goes stale when a private creator is deleted directly."""
    dataset._private_blocks.clear()


def decoded_character_set(dataset: Dataset) -> Any:
    """The character set pydicom decoded the dataset's text with (``Dataset._character_set``)."""
    return dataset._character_set


# --- pynetdicom ---------------------------------------------------------------------------------------------


def send_datasets_from_files() -> None:
    """Make C-STORE send a dataset given as a file path in chunks from the file, never whole in memory."""
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True


# === pynetdicom: DIMSE messages written by the thread that sends them ======================================
#
# pynetdicom 3.0's `DIMSEServiceProvider.send_msg` splits a message into P-DATA primitives and queues each
# one for the DUL thread, which wakes up (it polls every millisecond), runs the state machine's DT-1 action
# and encodes the PDU with its generic item machinery: ~40 µs of Python per PDU, 33 PDUs for a 0.5 MB
# instance to a PACS that takes 16 KB PDUs (DCMTK's default), and a thread hand-off for every one. In the
# established state (Sta6) DT-1 only encodes and sends the PDU, so the sending thread writes the same bytes
# itself here. Anything else (another state, primitives still queued for the DUL) goes pynetdicom's way, so
# the order of PDUs on the wire is kept. The DUL thread sends nothing of its own in Sta6 (it reads), and a
# failed send tells the DUL the connection is gone (Evt17) as its own send does.

_P_DATA_HEADER: Final = struct.Struct(">BxLLB")  # PDU type and length, then the one PDV's length and context


def send_dimse_from_caller(assoc: Any) -> None:
    """Make `assoc` write its DIMSE messages' P-DATA-TF PDUs from the calling thread (see above)."""
    dimse = assoc.dimse
    queued = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        dul = assoc.dul
        sock = dul.socket
        if sock is None or dul.state_machine.current_state != "Sta6" or not dul.to_provider_queue.empty():
            queued(primitive, context_id)
            return
        if primitive.MessageIDBeingRespondedTo is None:
            message = _RQ_TO_MESSAGE[primitive.__class__]()
        else:
            message = _RSP_TO_MESSAGE[primitive.__class__]()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})
        for pdata in message.encode_msg(context_id, dimse.maximum_pdu_size):
            for pdv_context, pdv in pdata.presentation_data_value_list:
                sock.send(_P_DATA_HEADER.pack(PDU_P_DATA_TF, 5 + len(pdv), 1 + len(pdv), pdv_context) + pdv)

    dimse.send_msg = send_msg


# === pynetdicom: the DICOM port's transport, PDU reads bounded in size and time (H4) ======================
#
# PDU reads bounded in size and in time under pynetdicom, and pending connections capped.
#
# pynetdicom 3.0's DUL (`DULServiceProvider._read_pdu_data`) reads each PDU as `recv(6)` for its header, then
# `recv(length)` for its body, and buffers whatever length the header claims: 4 GB for an A-ASSOCIATE-RQ
# sent before any AE title is looked at, or a P-DATA-TF far beyond the maximum length we advertised. Its
# `AssociationSocket.recv` loops until that many bytes came, so a peer sending one byte a second holds the
# association thread forever (no timer runs while it reads). This section changes the socket under the DUL:
#
# - the header of every PDU is checked before its body is read: a P-DATA-TF longer than the maximum we
#   advertise is answered with an A-ABORT, any other PDU longer than `max_request_bytes` with an
#   A-ASSOCIATE-RJ (during the request) or an A-ABORT; then the connection is closed, the body never read;
# - every read has a deadline: the whole A-ASSOCIATE-RQ must arrive within `request_timeout` of the TCP
#   connection, and each later PDU within `pdu_timeout` of its first byte; a late peer is closed;
# - the server refuses TCP connections beyond `max_pending` that are still waiting for their request.
#
# To the DUL a refused or late PDU looks like a connection closed while its header was read, which its state
# machine handles in every state (an A-P-ABORT once the association is established). The upstream fix is to
# check the length in `_read_pdu_data` against `assoc.acceptor.maximum_length` (P-DATA-TF) and a request
# maximum, and to read with the ARTIM / network timeout as a deadline (see the README's deviation notes).

PDU_ASSOCIATE_RQ = 0x01
PDU_P_DATA_TF = 0x04
_HEADER = struct.Struct(">BxL")

# A-ASSOCIATE-RJ: rejected-permanent, source "DICOM UL service-provider (ACSE)", reason "no-reason-given".
ASSOCIATE_RJ_TOO_LONG = bytes([0x03, 0x00, 0, 0, 0, 4, 0x00, 0x01, 0x02, 0x01])
# A-ABORT: source "DICOM UL service-provider", reason "invalid-PDU-parameter value".
ABORT_INVALID_PARAMETER = bytes([0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x06])


@dataclass(frozen=True)
class PduLimits:
    """How long a PDU may be, and how long reading it may take."""

    max_pdata_bytes: int  # the Maximum Length we advertise: the variable field of a P-DATA-TF PDU
    max_request_bytes: int  # an A-ASSOCIATE-RQ, and every PDU other than P-DATA-TF
    request_timeout: float  # seconds from the TCP connection to the whole A-ASSOCIATE-RQ
    pdu_timeout: float  # seconds from a later PDU's first byte to its last

    def refusal(self, header: bytes, requested: bool) -> tuple[bytes, str] | None:
        """(the PDU to answer, the reason) when a PDU with this 6-byte header must not be read; else None."""
        pdu_type, length = _HEADER.unpack(header)
        if pdu_type == PDU_P_DATA_TF:
            if length <= self.max_pdata_bytes:
                return None
            return ABORT_INVALID_PARAMETER, (
                f"P-DATA-TF PDU of {length} bytes, longer than the {self.max_pdata_bytes} we advertised"
            )
        if length <= self.max_request_bytes:
            return None
        reason = f"PDU of type 0x{pdu_type:02X} of {length} bytes, longer than the {self.max_request_bytes} allowed"
        if pdu_type == PDU_ASSOCIATE_RQ and not requested:
            return ASSOCIATE_RJ_TOO_LONG, reason
        return ABORT_INVALID_PARAMETER, reason


# Called with (peer address, reason) when a connection is refused or closed by a limit of this module.
RefusalReport = Callable[[str, str], None]


class BoundedAssociationSocket(AssociationSocket):
    """An `AssociationSocket` whose reads check each PDU header first and keep deadlines.

    pynetdicom builds the socket in `RequestHandler._create_association` with no hook for its class; the
    handler below switches the instance to this class right after, and `bound` gives it its limits.
    """

    limits: PduLimits
    report: RefusalReport
    peer: str
    _accepted_at: float
    _pdu_started: float
    _body_of: int | None  # the type of the PDU whose header was read and whose body is read next
    _requested: bool

    def bound(self, limits: PduLimits, report: RefusalReport, peer: str) -> None:
        self.limits = limits
        self.report = report
        self.peer = peer
        self._accepted_at = self._pdu_started = time.monotonic()
        self._body_of = None
        self._requested = False

    @property
    def awaiting_request(self) -> bool:
        """Open, and its A-ASSOCIATE-RQ not read yet."""
        # pynetdicom closes the socket object on a peer's close or its ARTIM timer without forgetting it.
        raw = self.socket
        return raw is not None and self._is_connected and not self._requested and raw.fileno() != -1

    def recv(self, nr_bytes: int) -> bytearray:
        raw = self.socket
        if raw is None or not self._is_connected:
            return bytearray()
        header = self._body_of is None
        if header:
            self._pdu_started = time.monotonic()
        deadline = self._pdu_started + self.limits.pdu_timeout
        if not self._requested:
            deadline = min(deadline, self._accepted_at + self.limits.request_timeout)
        data = _read(raw, nr_bytes, deadline)
        if data is None:
            phase = "association request" if not self._requested else "PDU"
            self._close(None, f"the {phase} did not arrive within its deadline")
            return bytearray()
        if header:
            if len(data) == _HEADER.size:
                refused = self.limits.refusal(bytes(data), self._requested)
                if refused is not None:
                    self._close(*refused)
                    # Less than a header: the DUL takes it as the connection closed (Evt17), as it now is.
                    return bytearray()
                self._body_of = data[0]
        else:
            if self._body_of == PDU_ASSOCIATE_RQ:
                self._requested = True
            self._body_of = None
        return data

    def send(self, bytestream: bytes) -> None:
        # After `_close`, the DUL has been told the connection is gone; a send would tell it twice.
        if self.socket is not None and self._is_connected:
            super().send(bytestream)

    def _close(self, answer: bytes | None, reason: str) -> None:
        raw = self.socket
        assert raw is not None
        if answer is not None:
            try:
                raw.settimeout(1.0)
                raw.sendall(answer)
            except OSError:
                pass
        self._is_connected = False
        # Closed with the body unread: the peer gets a reset and stops sending.
        try:
            raw.close()
        except OSError:
            pass
        self.report(self.peer, reason)


def _read(raw: socket.socket, count: int, deadline: float) -> bytearray | None:
    """Read `count` bytes (fewer when the peer closes); None when the deadline passes first."""
    data = bytearray(count)
    view = memoryview(data)
    got = 0
    try:
        while got < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            raw.settimeout(remaining)
            try:
                n = raw.recv_into(view[got:], min(count - got, 65536))
            except TimeoutError:
                return None
            if n == 0:
                break
            got += n
    except OSError:
        pass  # a reset or a closed socket: what was read is returned, the DUL sees a short PDU
    finally:
        view.release()
    del data[got:]
    return data


class _BoundedRequestHandler(RequestHandler):
    server: BoundedAssociationServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        assert sock is not None
        sock.__class__ = BoundedAssociationSocket
        assert isinstance(sock, BoundedAssociationSocket)
        sock.bound(self.server.limits, self.server.report, str(self.client_address[0]))
        self.server.track(sock)
        send_dimse_from_caller(assoc)  # the C-STORE responses leave without waiting for the DUL's next poll
        return assoc


class BoundedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with bounded PDU reads and at most `max_pending` connections awaiting a request."""

    limits: PduLimits
    report: RefusalReport
    max_pending: int

    def configure(self, limits: PduLimits, report: RefusalReport, max_pending: int) -> None:
        self.limits = limits
        self.report = report
        self.max_pending = max_pending
        self._pending: set[BoundedAssociationSocket] = set()
        self._pending_lock = threading.Lock()

    def track(self, sock: BoundedAssociationSocket) -> None:
        with self._pending_lock:
            self._pending.add(sock)

    def pending_connections(self) -> int:
        """Connections waiting for their A-ASSOCIATE-RQ (forgets the others)."""
        with self._pending_lock:
            self._pending = {s for s in self._pending if s.awaiting_request}
            return len(self._pending)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.pending_connections() < self.max_pending:
            return True
        self.report(str(client_address[0]), f"{self.max_pending} connections are already waiting for their request")
        return False


def start_bounded_server(
    ae: AE,
    address: tuple[str, int],
    limits: PduLimits,
    report: RefusalReport,
    max_pending: int,
    evt_handlers: list[Any],
    ssl_context: Any = None,
) -> BoundedAssociationServer:
    """Start a non-blocking association server of `ae` as `AE.start_server(block=False)` does, bounded."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=BoundedAssociationServer,
        request_handler=_BoundedRequestHandler,
    )
    assert isinstance(server, BoundedAssociationServer)
    server.configure(limits, report, max_pending)
    timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
    thread = threading.Thread(target=make_target(server.serve_forever), name=f"AcceptorServer@{timestamp}")
    thread.daemon = True
    thread.start()
    ae._servers.append(server)  # as start_server does: `shutdown` removes it from there
    return server


def uid_dictionary() -> dict[str, tuple[str, str, str, str, str]]:
    """pydicom's table of known UIDs: UID -> (name, type, info, retired, keyword).

    `pydicom._uid_dict` is private; the console lists the storage SOP classes from it.
    """
    from pydicom._uid_dict import UID_dictionary

    return UID_dictionary
