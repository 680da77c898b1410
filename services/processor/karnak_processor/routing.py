"""Per-destination routing decisions: pure logic over the configuration and an instance.

A destination's route is a chain of gates (each may reject the instance with a reason) followed by the
transformation of the instance for that destination. Conditions are a gate; SOP class authorization is
a gate. De-identification, tag morphing and transcoding plug in as transformations: until they exist,
`check_supported` refuses a configuration that asks for them, so nothing identifying ever leaves
untransformed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from karnak_processor.instance import Instance
from karnak_shared.conditions import Condition
from karnak_shared.config import DicomDestination, ForwardNode, GatewayConfig, StowDestination
from karnak_shared.errors import ConfigError

AnyDestination = DicomDestination | StowDestination
Gate = Callable[[Instance], str | None]


@dataclass(frozen=True)
class Deliver:
    """Send `part10` to the destination."""

    destination: AnyDestination
    part10: bytes
    unchanged: bool


@dataclass(frozen=True)
class Reject:
    """The instance does not go to the destination, for `reason` (a `transfer.rejected` event)."""

    destination: AnyDestination
    reason: str


@dataclass(frozen=True)
class Skip:
    """The destination is disabled: nothing is sent and nothing is reported."""

    destination: AnyDestination


Decision = Deliver | Reject | Skip


def condition_gate(destination: AnyDestination) -> Gate | None:
    """Reject instances for which the destination's condition is false."""
    if not destination.condition.strip():
        return None
    condition = Condition.parse(destination.condition)

    def gate(instance: Instance) -> str | None:
        if condition.evaluate(instance.dataset):
            return None
        return f"Condition of destination {destination.id} is not met: {destination.condition}"

    return gate


def sop_class_gate(destination: AnyDestination) -> Gate | None:
    """Reject instances whose SOP class the destination does not authorize (empty list: all)."""
    authorized = frozenset(destination.authorized_sop_classes)
    if not authorized:
        return None

    def gate(instance: Instance) -> str | None:
        if instance.sop_class_uid in authorized:
            return None
        return f"SOP Class {instance.sop_class_uid} is not authorized for destination {destination.id}"

    return gate


@dataclass(frozen=True)
class Route:
    """The gates of one destination, built once per configuration."""

    destination: AnyDestination
    gates: tuple[Gate, ...]

    def decide(self, instance: Instance) -> Decision:
        if not self.destination.enabled:
            return Skip(self.destination)
        for gate in self.gates:
            reason = gate(instance)
            if reason is not None:
                return Reject(self.destination, reason)
        return Deliver(self.destination, instance.part10, unchanged=True)


def check_supported(config: GatewayConfig) -> None:
    """Refuse, at start-up, a configuration asking for transformations this version cannot apply."""
    problems: list[str] = []
    for n, node in enumerate(config.forward_nodes):
        for d, dest in enumerate(node.destinations):
            here = f"forward_nodes[{n}].destinations[{d}]"
            if dest.deidentification is not None:
                problems.append(
                    f"{here}.deidentification: de-identification is not available in this version of the "
                    "gateway; refusing to start rather than send identifiable data"
                )
            if dest.tag_morphing is not None:
                problems.append(f"{here}.tag_morphing: tag morphing is not available in this version of the gateway")
            if dest.transfer_syntax != "keep":
                problems.append(
                    f"{here}.transfer_syntax: only 'keep' is available in this version of the gateway "
                    f"(got {dest.transfer_syntax})"
                )
    if problems:
        raise ConfigError(problems)


class Router:
    """The routes of every forward node of a configuration."""

    def __init__(self, config: GatewayConfig) -> None:
        check_supported(config)
        self._routes: dict[str, tuple[Route, ...]] = {
            node.ae_title: tuple(self._route(dest) for dest in node.destinations) for node in config.forward_nodes
        }

    @staticmethod
    def _route(destination: AnyDestination) -> Route:
        gates = (condition_gate(destination), sop_class_gate(destination))
        return Route(destination, tuple(g for g in gates if g is not None))

    def knows(self, forward_node: str) -> bool:
        return forward_node in self._routes

    def decide(self, node: ForwardNode | str, instance: Instance) -> Iterator[Decision]:
        """One decision per destination of the forward node, in configuration order."""
        key = node if isinstance(node, str) else node.ae_title
        for route in self._routes.get(key, ()):
            yield route.decide(instance)
