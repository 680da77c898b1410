"""Who may open an association: the called AE title selects the forward node, its sources the callers."""

from __future__ import annotations

from dataclasses import dataclass

from karnak_shared.config import ForwardNode, GatewayConfig

# A-ASSOCIATE-RJ diagnostics (PS3.8 9.3.4): service-user, permanent.
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass(frozen=True)
class Admission:
    """The outcome of an association request: the forward node, or why it is rejected."""

    node: ForwardNode | None
    diagnostic: int = 0
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.node is not None


def admit(config: GatewayConfig, called_ae: str, calling_ae: str, peer_host: str | None) -> Admission:
    """Decide whether `calling_ae` at `peer_host` may send to the forward node `called_ae`."""
    node = config.forward_node(called_ae)
    if node is None:
        return Admission(None, CALLED_AE_NOT_RECOGNISED, f"no forward node has the AE title {called_ae.strip()!r}")
    if not node.accepts(calling_ae, peer_host):
        return Admission(
            None,
            CALLING_AE_NOT_RECOGNISED,
            f"{calling_ae.strip()!r} at {peer_host} is not a source of forward node {node.ae_title!r}",
        )
    return Admission(node)
