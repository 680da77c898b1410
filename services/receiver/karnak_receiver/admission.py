"""Who may open an association: the called AE title selects the forward node, its sources the callers.

Then the association slots: at most `max_associations` at once, `max_associations_per_peer` from one
address (a source bound to a hostname excepted: the address is then who it is), and the last
`reserved_for_sources` slots kept for callers listed in a forward node's sources, so a configured
modality still gets in while unlisted callers hold all they may.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from karnak_shared.config import ForwardNode, GatewayConfig, ListenerConfig, Source

# A-ASSOCIATE-RJ diagnostics (PS3.8 9.3.4): service-user, permanent.
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass(frozen=True)
class Admission:
    """The outcome of an association request: the forward node, or why it is rejected."""

    node: ForwardNode | None
    diagnostic: int = 0
    reason: str = ""
    source: Source | None = None  # the entry of the node's sources the caller matched

    @property
    def accepted(self) -> bool:
        return self.node is not None


def admit(config: GatewayConfig, called_ae: str, calling_ae: str, peer_host: str | None) -> Admission:
    """Decide whether `calling_ae` at `peer_host` may send to the forward node `called_ae`."""
    node = config.forward_node(called_ae)
    if node is None:
        return Admission(None, CALLED_AE_NOT_RECOGNISED, f"no forward node has the AE title {called_ae.strip()!r}")
    source = node.matching_source(calling_ae, peer_host)
    if node.sources and source is None:
        return Admission(
            None,
            CALLING_AE_NOT_RECOGNISED,
            f"{calling_ae.strip()!r} at {peer_host} is not a source of forward node {node.ae_title!r}",
        )
    return Admission(node, source=source)


@dataclass(frozen=True)
class _Held:
    peer: str
    alive: Callable[[], bool]


class AssociationSlots:
    """The associations in progress, and whether one more may start (thread-safe)."""

    def __init__(self, listener: ListenerConfig) -> None:
        self._total = listener.max_associations
        self._per_peer = listener.max_associations_per_peer
        self._unreserved = listener.max_associations - listener.reserved_for_sources
        self._held: dict[object, _Held] = {}
        self._lock = threading.Lock()

    def claim(self, key: object, peer: str, source: Source | None, alive: Callable[[], bool]) -> str | None:
        """Take a slot for the association `key` (held while `alive()`); the reason when none is left."""
        with self._lock:
            self._held = {k: h for k, h in self._held.items() if h.alive()}
            held = len(self._held)
            if held >= self._total:
                return f"all {self._total} associations are in use"
            if source is None and held >= self._unreserved:
                return f"the {self._total - self._unreserved} associations left are kept for configured sources"
            from_peer = sum(1 for h in self._held.values() if h.peer == peer)
            if (source is None or source.hostname is None) and from_peer >= self._per_peer:
                return f"{peer} already has {from_peer} associations, the most one address may have"
            self._held[key] = _Held(peer, alive)
            return None

    def release(self, key: object) -> None:
        with self._lock:
            self._held.pop(key, None)

    @property
    def in_use(self) -> int:
        with self._lock:
            return sum(1 for h in self._held.values() if h.alive())
