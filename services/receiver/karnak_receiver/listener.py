"""The DICOM listener: pynetdicom wiring of association admission, C-ECHO and C-STORE to the intake."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from pydicom import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from karnak_dicom._internals import BoundedAssociationServer, PduLimits, start_bounded_server
from karnak_receiver.admission import AssociationSlots, admit
from karnak_receiver.checks import STATUS_CANNOT_UNDERSTAND, Refusal, check_dataset
from karnak_receiver.intake import Intake, ReceivedInstance
from karnak_shared.config import GatewayConfig, ListenerConfig
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.receiver")

ASSOCIATIONS = Counter(
    "karnak_associations_total",
    "Association requests and connections by outcome (accepted, rejected, refused, released, aborted)",
    ["outcome"],
)

# The syntaxes we accept. Per presentation context the one accepted is the first of these that the
# modality listed (`_prefer_requestors_order`): it proposed its compressed syntax first because it has
# the image so, and the gateway forwards the bytes as received. This order only serves when a
# modality's several contexts for one SOP class list their syntaxes in different orders.
PREFERRED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    *(ts for ts in AllTransferSyntaxes if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ImplicitVRLittleEndian,
]
# pynetdicom counts every connection as an association, silent ones included, and refuses the next
# "Local Limit Exceeded": its limit is set out of the way, ours (`AssociationSlots`) counts admitted ones.
_NO_PYNETDICOM_LIMIT = 1_000_000


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


def _prefer_requestors_order(assoc: Any) -> None:
    """Make each supported context list its syntaxes in the order the requestor proposed them.

    pynetdicom accepts, per context, the first of the acceptor's syntaxes that the requestor proposed;
    with the acceptor's list put in the requestor's order, that is the requestor's first supported one.
    Only the contexts of proposed SOP classes are rebuilt (a few): building all ~170, each with its ~30
    syntaxes validated, cost 36 ms of CPU per association.
    """
    proposed: dict[str, list[str]] = {}
    for context in assoc.requestor.primitive.presentation_context_definition_list:
        order = proposed.setdefault(str(context.abstract_syntax), [])
        order.extend(str(ts) for ts in context.transfer_syntax if str(ts) not in order)
    contexts: list[PresentationContext] = []
    for context in assoc.acceptor.supported_contexts:
        wanted = proposed.get(str(context.abstract_syntax))
        if not wanted:
            contexts.append(context)  # not proposed: never negotiated, kept as it is
            continue
        supported = [str(ts) for ts in context.transfer_syntax]
        order = [ts for ts in wanted if ts in supported]
        contexts.append(build_context(context.abstract_syntax, order + [ts for ts in supported if ts not in order]))
    assoc.acceptor.supported_contexts = contexts


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
        self._server: BoundedAssociationServer | None = None
        self._slots = AssociationSlots(config.listener)
        self.ae = self._build_ae(config.listener)

    @staticmethod
    def _build_ae(listener: ListenerConfig) -> AE:
        ae = AE(ae_title="KARNAK")
        # The forward node is chosen from the called AE title in `_on_requested`, not by pynetdicom.
        ae.require_called_aet = False
        ae.maximum_pdu_size = listener.max_pdu_bytes
        ae.maximum_associations = _NO_PYNETDICOM_LIMIT
        # The ARTIM timer (acse_timeout) closes a connection that sends nothing; one that sends slowly is
        # closed by the transport's deadline for its request.
        ae.acse_timeout = listener.association_request_timeout
        ae.network_timeout = listener.idle_timeout
        ae.dimse_timeout = 60
        # pynetdicom's default storage contexts list only uncompressed syntaxes: accept every syntax,
        # the gateway forwards the bytes as they came and decodes no pixel data.
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), PREFERRED_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, PREFERRED_TRANSFER_SYNTAXES)
        return ae

    @property
    def associations(self) -> int:
        """Admitted associations in progress."""
        return self._slots.in_use

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
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected_by_pynetdicom),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        listener = self._config.listener
        limits = PduLimits(
            max_pdata_bytes=listener.max_pdu_bytes,
            max_request_bytes=listener.max_associate_request_bytes,
            request_timeout=listener.association_request_timeout,
            pdu_timeout=listener.idle_timeout,
        )
        self._server = start_bounded_server(
            self.ae,
            (listener.host, listener.port),
            limits,
            self._on_refused,
            listener.max_pending_connections,
            handlers,
            self._ssl_context,
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

    def _on_refused(self, peer: str, reason: str) -> None:
        """A connection refused or closed by a limit of the transport (too long a PDU, a deadline, too many)."""
        ASSOCIATIONS.labels("refused").inc()
        log.warning("connection.refused", peer=peer, reason=reason)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        called = _called_ae(assoc)
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        peer = assoc.requestor.address
        admission = admit(self._routing(), called, calling, peer)
        reason = admission.reason
        if admission.accepted:
            refused = self._slots.claim(assoc, str(peer), admission.source, assoc.is_alive)
            if refused is None:
                # Answer with the AE title that was called, as a modality expects.
                assoc.acceptor.ae_title = called
                _prefer_requestors_order(assoc)
                return
            reason = refused
            # Transient, presentation-related: local limit exceeded (the modality tries again later).
            result, source, diagnostic = 0x02, 0x03, 0x02
        else:
            result, source, diagnostic = 0x01, 0x01, admission.diagnostic
        ASSOCIATIONS.labels("rejected").inc()
        log.warning("association.rejected", called_ae=called, calling_ae=calling, peer=peer, reason=reason)
        assoc.acse.send_reject(result, source, diagnostic)
        # As pynetdicom's own rejection path does: wait for the DUL to send the A-ASSOCIATE-RJ and the
        # peer to close, otherwise the socket is shut first and the peer sees an abort, not the reason.
        assoc.kill()

    def _on_accepted(self, event: Any) -> None:
        assoc = event.assoc
        ASSOCIATIONS.labels("accepted").inc()
        log.info(
            "association.accepted",
            called_ae=_called_ae(assoc),
            calling_ae=str(assoc.requestor.ae_title).strip(),
            peer=assoc.requestor.address,
            contexts=len(assoc.accepted_contexts),
        )

    def _on_rejected_by_pynetdicom(self, event: Any) -> None:
        # Our own rejections are logged where they are made; this is pynetdicom's (e.g. a user identity).
        self._slots.release(event.assoc)
        ASSOCIATIONS.labels("rejected").inc()
        log.warning("association.rejected", peer=event.assoc.requestor.address, reason="refused by the DICOM stack")

    def _on_released(self, event: Any) -> None:
        self._slots.release(event.assoc)
        ASSOCIATIONS.labels("released").inc()
        log.info("association.released", peer=event.assoc.requestor.address)

    def _on_aborted(self, event: Any) -> None:
        assoc = event.assoc
        self._slots.release(assoc)
        ASSOCIATIONS.labels("aborted").inc()
        idle = assoc.dul.idle_timer_expired()
        reason = f"idle for {self._config.listener.idle_timeout:g} s" if idle else "aborted by the peer or the network"
        log.warning("association.aborted", peer=assoc.requestor.address, reason=reason)

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> int | Dataset:
        request = event.request
        try:
            # Without the meta, pynetdicom hands over its receive buffer itself; with it, a joined copy.
            dataset = event.encoded_dataset(False)
            part10 = (b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta), dataset)
        except Exception as exc:  # noqa: BLE001 - any failure to read the request is answered, never raised
            log.error("c-store.unreadable", reason=repr(exc))
            return _answer(Refusal(STATUS_CANNOT_UNDERSTAND, "unreadable C-STORE request"))
        sop_class_uid = str(request.AffectedSOPClassUID)
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        transfer_syntax = str(event.context.transfer_syntax)
        refusal = check_dataset(dataset, transfer_syntax, sop_class_uid, sop_instance_uid)
        if refusal is not None:
            log.warning(
                "c-store.refused",
                forward_node=_called_ae(event.assoc),
                sop_instance_uid=sop_instance_uid,
                status=f"0x{refusal.status:04X}",
                reason=refusal.reason,
                detail=refusal.detail or None,
            )
            return _answer(refusal)
        instance = ReceivedInstance(
            forward_node=_called_ae(event.assoc),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax=transfer_syntax,
            part10=part10,
        )
        return self._intake.take(instance)


def _answer(refusal: Refusal) -> Dataset:
    """A C-STORE response's status with its Error Comment (the modality's log shows why)."""
    status = Dataset()
    status.Status = refusal.status
    status.ErrorComment = refusal.error_comment
    return status
