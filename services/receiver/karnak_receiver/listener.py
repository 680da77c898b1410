"""The DICOM listener: pynetdicom wiring of association admission, C-ECHO and C-STORE to the intake."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from karnak_receiver.admission import admit
from karnak_receiver.intake import Intake, ReceivedInstance
from karnak_shared.config import GatewayConfig, ListenerConfig
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.receiver")

# Processing failure: the request could not be read at all.
STATUS_CANNOT_UNDERSTAND = 0xC000

# pynetdicom accepts, per context, the first syntax of this list that the requestor proposed. Explicit
# VR Little Endian first keeps the VRs (private attributes stay readable downstream) and spares the
# modality a conversion; the compressed syntaxes come before implicit VR so a compressed image is not
# decompressed by the modality for us; implicit VR last (but accepted: some modalities only speak it).
PREFERRED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    *(ts for ts in AllTransferSyntaxes if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ImplicitVRLittleEndian,
]


class HandshakeInAssociationContext(ssl.SSLContext):
    """An SSL context whose server sockets do the TLS handshake on their first read, not when accepted.

    pynetdicom wraps each accepted socket in its accept loop; with the default eager handshake a client
    that connects and sends nothing (or a plain-TCP client that waits) blocks the loop and every
    association after it. Deferred, the handshake runs in the association's own thread, and a failed one
    aborts only that association.
    """

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side, False, suppress_ragged_eofs, server_hostname, session)


def tls_context(listener: ListenerConfig) -> ssl.SSLContext | None:
    """The listener's SSL context from `listener.tls` (None without TLS); `ConfigError` names a bad file."""
    if listener.tls is None:
        return None
    return listener.tls.server_context(HandshakeInAssociationContext)


def _called_ae(assoc: Any) -> str:
    return str(assoc.requestor.primitive.called_ae_title).strip()


def _set_nodelay(assoc: Any) -> None:
    # pynetdicom leaves Nagle on; each small PDU then waits ~40 ms for the peer's delayed ACK.
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Listener:
    """One association server for every forward node of the configuration."""

    def __init__(
        self,
        config: GatewayConfig,
        intake: Intake,
        ssl_context: ssl.SSLContext | None = None,
        routing: Callable[[], GatewayConfig] | None = None,
    ) -> None:
        self._config = config
        # The forward nodes and sources each new association is admitted by: the running revision's.
        self._routing = routing or (lambda: config)
        self._intake = intake
        self._ssl_context = ssl_context
        self._server: ThreadedAssociationServer | None = None
        self.ae = self._build_ae(config.listener)

    @staticmethod
    def _build_ae(listener: ListenerConfig) -> AE:
        ae = AE(ae_title="KARNAK")
        # The forward node is chosen from the called AE title in `_on_requested`, not by pynetdicom.
        ae.require_called_aet = False
        ae.maximum_pdu_size = listener.max_pdu_bytes
        ae.maximum_associations = listener.max_associations
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        # pynetdicom's default storage contexts list only uncompressed syntaxes: accept every syntax,
        # the gateway forwards the bytes as they came and decodes no pixel data.
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), PREFERRED_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, PREFERRED_TRANSFER_SYNTAXES)
        return ae

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> Listener:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        listener = self._config.listener
        self._server = self.ae.start_server(
            (listener.host, listener.port), block=False, evt_handlers=handlers, ssl_context=self._ssl_context
        )
        log.info("listener.started", host=listener.host, port=self.port, tls=self._ssl_context is not None)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # --- event handlers ----------------------------------------------------------------------------

    def _on_connection(self, event: Any) -> None:
        _set_nodelay(event.assoc)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        called = _called_ae(assoc)
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        peer = assoc.requestor.address
        admission = admit(self._routing(), called, calling, peer)
        if not admission.accepted:
            log.warning(
                "association.rejected", called_ae=called, calling_ae=calling, peer=peer, reason=admission.reason
            )
            assoc.acse.send_reject(0x01, 0x01, admission.diagnostic)
            # As pynetdicom's own rejection path does: wait for the DUL to send the A-ASSOCIATE-RJ and the
            # peer to close, otherwise the socket is shut first and the peer sees an abort, not the reason.
            assoc.kill()
            return
        # Answer with the AE title that was called, as a modality expects.
        assoc.acceptor.ae_title = called
        log.info("association.accepted", called_ae=called, calling_ae=calling, peer=peer)

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> int:
        request = event.request
        try:
            # Without the meta, pynetdicom hands over its receive buffer itself; with it, a joined copy.
            part10 = (b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta), event.encoded_dataset(False))
        except Exception as exc:  # noqa: BLE001 - any failure to read the request is answered, never raised
            log.error("c-store.unreadable", reason=repr(exc))
            return STATUS_CANNOT_UNDERSTAND
        instance = ReceivedInstance(
            forward_node=_called_ae(event.assoc),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            part10=part10,
        )
        return self._intake.take(instance)
