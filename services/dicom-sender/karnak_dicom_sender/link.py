"""A reusable association with one DICOM destination.

The association stays open while the destination's queue is busy and is released when idle. It proposes
one presentation context per (SOP class, transfer syntax) pair seen for the destination, so each
instance goes in its own transfer syntax (an SCP picks one syntax per context). A pair the SCP rejects is
a permanent failure for that instance; a pair not yet proposed makes the link re-associate.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from karnak_dicom._internals import send_datasets_from_files, send_dimse_from_caller
from karnak_dicom_sender.status import Outcome, Stored, classify, describe
from karnak_shared.errors import PermanentDeliveryError, TransientDeliveryError
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.dicom-sender")

# Send files in chunks straight from disk: the bytes go out as received, nothing is decoded or re-encoded.
send_datasets_from_files()
# PS3.8: at most 128 presentation contexts per association (odd ids 1..255).
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Peer:
    """Where and as whom to associate."""

    destination_id: str
    host: str
    port: int
    called_ae: str
    calling_ae: str
    max_pdu: int = 131072
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 30.0
    # DICOM TLS: the context verifies the destination's certificate against `host`.
    tls: ssl.SSLContext | None = None


def _let_reactor_resume(assoc: Association) -> None:
    """Wait (a fraction of a millisecond) until the association's reactor has resumed after the last exchange.

    pynetdicom pauses its reactor thread during `send_c_store` by clearing an event and waiting for
    `_is_paused`, a flag the reactor sets before it blocks and clears once it wakes. Right after an exchange
    the flag is still set while the reactor is waking up: a C-STORE sent at once believes the reactor
    paused, the reactor wakes and may take the response off the queue ("Received unexpected C-STORE
    service message"), and the C-STORE waits out the DIMSE timeout. Back-to-back C-STOREs hit this about
    once in a few hundred; waiting for the flag to clear closes the window.
    """
    deadline = time.monotonic() + 0.05
    while getattr(assoc, "_is_paused", False) and time.monotonic() < deadline:
        time.sleep(0.0002)


def _set_nodelay(event: evt.Event) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class DestinationLink:
    """C-STORE to one destination over an association kept open while there is work."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self._contexts: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._assoc: Association | None = None
        self._last_used = 0.0
        self.associations_opened = 0

    @property
    def is_open(self) -> bool:
        return self._assoc is not None and self._assoc.is_established

    def store(self, path: Path, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> Stored:
        """Send one Part 10 file; return SUCCESS or WARNING with the status, raise a `DeliveryError` otherwise."""
        pair = (sop_class_uid, transfer_syntax)
        for attempt in (1, 2):
            assoc = self._association_for(pair)
            context_ok = any(
                cx.abstract_syntax == sop_class_uid and cx.transfer_syntax[0] == transfer_syntax
                for cx in assoc.accepted_contexts
            )
            if not context_ok:
                # Stop proposing a pair the destination refuses, so it does not burden later associations.
                self._contexts.pop(pair, None)
                raise self._refused(pair)
            try:
                _let_reactor_resume(assoc)
                status = assoc.send_c_store(path)
            except (OSError, RuntimeError) as exc:
                self.abort()
                raise TransientDeliveryError(f"connection to {self._where()} failed during C-STORE: {exc}") from None
            self._last_used = time.monotonic()
            if "Status" in status:
                value = int(status.Status)
                outcome = classify(value)
                if outcome is Outcome.TRANSIENT:
                    raise TransientDeliveryError(f"{self._where()} answered {describe(value)}")
                if outcome is Outcome.PERMANENT:
                    raise PermanentDeliveryError(f"{self._where()} answered {describe(value)}")
                return Stored(outcome, value)
            # No response: pynetdicom occasionally never sees one (or the peer went away). Abort and try
            # the instance once more on a fresh association before handing it to the delay queues.
            self.abort()
            log.warning(
                "c-store.no-response",
                destination=self.peer.destination_id,
                sop_instance_uid=sop_instance_uid,
                attempt=attempt,
            )
        raise TransientDeliveryError(f"no C-STORE response from {self._where()} (timeout or connection lost)")

    def release_if_idle(self, idle_seconds: float) -> None:
        if self._assoc is not None and time.monotonic() - self._last_used >= idle_seconds:
            self.release()

    def release(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()
            log.debug("association.released", destination=self.peer.destination_id)

    def abort(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.abort()

    def _refused(self, pair: tuple[str, str]) -> PermanentDeliveryError:
        return PermanentDeliveryError(
            f"destination {self.peer.destination_id} ({self.peer.called_ae}) does not accept SOP Class "
            f"{pair[0]} in transfer syntax {pair[1]}"
        )

    def _where(self) -> str:
        return f"{self.peer.destination_id} ({self.peer.called_ae}@{self.peer.host}:{self.peer.port})"

    def _association_for(self, pair: tuple[str, str]) -> Association:
        if self._assoc is not None and self._assoc.is_established and pair in self._contexts:
            return self._assoc
        if pair not in self._contexts:
            self._contexts[pair] = None
            while len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
        self.release()
        self._assoc = self._associate()
        return self._assoc

    def _associate(self) -> Association:
        ae = AE(ae_title=self.peer.calling_ae)
        ae.acse_timeout = self.peer.acse_timeout
        ae.dimse_timeout = self.peer.dimse_timeout
        ae.network_timeout = self.peer.network_timeout
        ae.maximum_pdu_size = self.peer.max_pdu
        for sop_class, syntax in self._contexts:
            ae.add_requested_context(sop_class, syntax)
        handlers: list[Any] = [(evt.EVT_CONN_OPEN, _set_nodelay)]
        assoc = ae.associate(
            self.peer.host,
            self.peer.port,
            ae_title=self.peer.called_ae,
            max_pdu=self.peer.max_pdu,
            evt_handlers=handlers,
            tls_args=(self.peer.tls, self.peer.host) if self.peer.tls is not None else None,
        )
        if assoc.is_established:
            # The PDUs of each C-STORE go out from this thread, not one by one through the DUL's queue.
            send_dimse_from_caller(assoc)
            self.associations_opened += 1
            self._last_used = time.monotonic()
            log.debug("association.opened", destination=self.peer.destination_id, contexts=len(self._contexts))
            return assoc
        if assoc.is_rejected:
            primitive = assoc.acceptor.primitive
            result = getattr(primitive, "result", None)
            diagnostic = getattr(primitive, "diagnostic", None)
            reason = f"{self._where()} rejected the association (result {result}, diagnostic {diagnostic})"
            if result == 0x01:
                raise PermanentDeliveryError(reason + ": check the AE titles")
            raise TransientDeliveryError(reason)
        if assoc.is_aborted and assoc.rejected_contexts and len(self._contexts) == 1:
            # pynetdicom aborts when the SCP accepted none of the contexts: here, the only one proposed.
            (pair,) = self._contexts
            self._contexts.clear()
            raise self._refused(pair)
        refusal = self._certificate_refusal()
        if refusal is not None:
            # The destination is not the peer we are configured to trust: retrying cannot change that, and
            # parking at once puts the reason in front of the operator (replay once the trust is fixed).
            raise PermanentDeliveryError(
                f"TLS with {self._where()} failed: its certificate is not trusted ({refusal}); "
                "check the destination's tls.ca_certificates and tls.verify_hostname"
            )
        raise TransientDeliveryError(f"cannot associate with {self._where()}: connection refused, aborted or timed out")

    def _certificate_refusal(self) -> str | None:
        """Why the destination's certificate fails verification, when that is why the association failed.

        pynetdicom logs the TLS error and reports only a failed association: a separate handshake tells a
        certificate we refuse (permanent) from a network failure (transient).
        """
        if self.peer.tls is None:
            return None
        try:
            with socket.create_connection((self.peer.host, self.peer.port), timeout=self.peer.acse_timeout) as raw:
                with self.peer.tls.wrap_socket(raw, server_hostname=self.peer.host):
                    return None
        except ssl.SSLCertVerificationError as exc:
            return str(exc.verify_message or exc)
        except OSError:
            return None
