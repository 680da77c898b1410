"""Per-destination routing decisions: pure logic over the configuration and an instance.

A destination's route is a chain of gates (each may reject the instance with a reason: the destination's
condition, its authorized SOP classes) followed by the transformation that makes the destination's copy
(de-identification or tag morphing, transfer syntax). Conditions and album conditions see the original
attributes; the copy is made only for destinations the instance passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from karnak_dicom.deid import InstanceExcluded
from karnak_dicom.instance import Instance, describe_error, hide_quoted
from karnak_processor.albums import matching_albums
from karnak_processor.pseudonyms import PseudonymMissing, SessionFactory
from karnak_processor.transformation import Transformation, build_transformation
from karnak_shared.config import DicomDestination, ForwardNode, GatewayConfig, StowDestination
from karnak_shared.envelope import TransferOrigin
from karnak_shared.errors import BlobStoreError, ConfigError, KarnakError

AnyDestination = DicomDestination | StowDestination
Gate = Callable[[Instance], str | None]


@dataclass(frozen=True)
class Deliver:
    """Send `part10` to the destination; the identifiers are those of the copy as sent.

    An unchanged instance from the blob store has empty `part10`: its blob is linked, not read.
    """

    destination: AnyDestination
    part10: bytes
    unchanged: bool
    size: int
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax: str
    display: dict[str, str]
    kheops_albums: list[int] = field(default_factory=list)
    origin: TransferOrigin = field(default_factory=TransferOrigin)
    # Why the copy is in Explicit VR Little Endian rather than the destination's syntax (its events say it).
    syntax_fallback: str | None = None


@dataclass(frozen=True)
class Reject:
    """The instance does not go to the destination, for `reason` (a `transfer.rejected` event)."""

    destination: AnyDestination
    reason: str


@dataclass(frozen=True)
class Fail:
    """The destination's copy could not be made (`reason`): it is parked, the original is never sent."""

    destination: AnyDestination
    reason: str


@dataclass(frozen=True)
class Skip:
    """The destination is disabled: nothing is sent and nothing is reported."""

    destination: AnyDestination


@dataclass(frozen=True)
class Later:
    """The copy needs a service that cannot answer now (e.g. the pseudonym API): retry for this destination."""

    destination: AnyDestination
    reason: str


Decision = Deliver | Reject | Fail | Later | Skip


def condition_gate(destination: AnyDestination) -> Gate | None:
    """Reject instances for which the destination's condition is false."""
    if destination.condition.always_true:
        return None
    condition = destination.condition  # compiled with the configuration

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
    """The gates and the transformation of one destination, built once per configuration."""

    destination: AnyDestination
    gates: tuple[Gate, ...]
    transformation: Transformation
    # monitoring.original_identifiers: whether the original PatientID/AccessionNumber travel to the monitor.
    original_identifiers: bool = True

    def origin(self, instance: Instance, display_sent: dict[str, str]) -> TransferOrigin:
        """What the monitor keeps of `instance` for this destination."""
        return self.transformation.origin(instance, display_sent, self.original_identifiers)

    def decide(self, instance: Instance) -> Decision:
        if not self.destination.enabled:
            return Skip(self.destination)
        try:
            for gate in self.gates:
                reason = gate(instance)
                if reason is not None:
                    return Reject(self.destination, reason)
            albums = matching_albums(self.destination, instance.dataset)
        except Exception as exc:  # noqa: BLE001 - a condition reading a malformed attribute: park, never guess
            return Fail(
                self.destination,
                f"cannot evaluate the conditions of destination {self.destination.id}: {describe_error(exc)}",
            )
        if not self.transformation.changes(instance):
            return Deliver(
                self.destination,
                instance.part10,
                unchanged=True,
                size=instance.size,
                sop_instance_uid=instance.sop_instance_uid,
                study_instance_uid=instance.study_instance_uid,
                series_instance_uid=instance.series_instance_uid,
                transfer_syntax=instance.transfer_syntax,
                display=instance.display_values(),
                kheops_albums=albums,
                origin=self.origin(instance, instance.display_values()),
            )
        try:
            copy = self.transformation.apply(instance)
        except (PseudonymMissing, InstanceExcluded) as exc:
            return Reject(self.destination, exc.reason)
        except BlobStoreError:
            raise  # the received blob could not be read (again): the processor requeues the message
        except KarnakError as exc:
            if getattr(exc, "transient", False):
                return Later(self.destination, str(exc))
            # Our messages may carry a codec's or pydicom's, which quote values: hide what is quoted.
            return Fail(
                self.destination,
                f"cannot make the copy for destination {self.destination.id}: {hide_quoted(str(exc))}"[:1000],
            )
        except Exception as exc:  # noqa: BLE001 - a failing transformation must never let the original through
            return Fail(
                self.destination,
                f"cannot make the copy for destination {self.destination.id}: {describe_error(exc, limit=1000)}",
            )
        return Deliver(
            self.destination,
            copy.part10,
            unchanged=False,
            size=len(copy.part10),
            sop_instance_uid=copy.sop_instance_uid,
            study_instance_uid=copy.study_instance_uid,
            series_instance_uid=copy.series_instance_uid,
            transfer_syntax=copy.transfer_syntax,
            display=copy.display,
            kheops_albums=albums,
            origin=self.origin(instance, copy.display),
            syntax_fallback=copy.syntax_fallback,
        )


class Router:
    """The routes of every forward node of a configuration.

    Building it loads every profile and opens every pseudonym source, so a destination that cannot work
    is a configuration error at start-up, named by its field.
    """

    def __init__(
        self, config: GatewayConfig, base_dir: Path | None = None, session_factory: SessionFactory | None = None
    ) -> None:
        base = base_dir or Path.cwd()
        problems: list[str] = []
        routes: dict[str, tuple[Route, ...]] = {}
        for n, node in enumerate(config.forward_nodes):
            node_routes = []
            for d, dest in enumerate(node.destinations):
                where = f"forward_nodes[{n}].destinations[{d}]"
                try:
                    transformation = build_transformation(config, dest, where, base, session_factory)
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
                gates = (condition_gate(dest), sop_class_gate(dest))
                node_routes.append(
                    Route(
                        dest,
                        tuple(g for g in gates if g is not None),
                        transformation,
                        config.monitoring.original_identifiers,
                    )
                )
            routes[node.ae_title] = tuple(node_routes)
        if problems:
            raise ConfigError(problems)
        self._routes = routes

    def knows(self, forward_node: str) -> bool:
        return forward_node in self._routes

    def route(self, forward_node: str, destination_id: str) -> Route | None:
        return next((r for r in self._routes.get(forward_node, ()) if r.destination.id == destination_id), None)

    def decide(self, node: ForwardNode | str, instance: Instance, only: str | None = None) -> Iterator[Decision]:
        """One decision per destination of the forward node (or only destination `only`), in order."""
        key = node if isinstance(node, str) else node.ae_title
        for route in self._routes.get(key, ()):
            if only is None or route.destination.id == only:
                yield route.decide(instance)
