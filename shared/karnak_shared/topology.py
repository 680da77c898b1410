"""RabbitMQ topology of the gateway (DESIGN.md section 3), declared idempotently by every service.

All names start with the configured prefix (``karnak`` by default), so the names below read
``karnak.ingest``, ``karnak.received``, ``karnak.send.dicom.<destination>`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from karnak_shared import header_names
from karnak_shared.config import GatewayConfig

# The dead queue is only ever read by operators; listing it returns messages to it, which counts as a
# delivery, so its limit is high enough that listing never discards anything.
DEAD_DELIVERY_LIMIT = 1_000_000


@dataclass(frozen=True)
class Topology:
    """Names and arguments of the exchanges and queues for one prefix and set of destinations."""

    prefix: str
    retry_delays: tuple[int, ...]
    delivery_limit: int
    send_queues: tuple[str, ...]
    # The notifier's queue exists only when some destination has notifications: declared regardless, it
    # would fill up on a gateway that runs no notifier; declared then by every service, no event published
    # before the notifier's first start is lost.
    notifier: bool = False
    # Likewise for the Kheops sharer's queue: declared by the stow-sender (which feeds it) and the sharer.
    kheops: bool = False
    # The monitor's queue (every transfer event, `transfer.#`): declared by the monitor itself and by
    # `karnak broker setup`, never by the other services, so a gateway that runs no monitor keeps no queue
    # filling up; once declared it is durable and keeps the events of a monitor that is down.
    monitor: bool = False
    # Whether `declare` declares (or only checks, passively, what a least-privileged user may not declare).
    declare_topology: bool = True

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Topology:
        return cls(
            prefix=config.broker.prefix,
            retry_delays=tuple(config.broker.retry_delays),
            delivery_limit=config.broker.delivery_limit,
            send_queues=tuple(
                f"{config.broker.prefix}.send.{dest.queue_kind}.{dest.id}" for _, dest in config.destinations()
            ),
            # The notifier's own rule: a destination with notifications but no address is not notified.
            notifier=any(
                d.notifications is not None and d.notifications.emails != [] for _, d in config.destinations()
            ),
            declare_topology=config.broker.declare_topology,
        )

    @property
    def ingest_exchange(self) -> str:
        return f"{self.prefix}.ingest"

    @property
    def received_queue(self) -> str:
        return f"{self.prefix}.received"

    @property
    def send_exchange(self) -> str:
        return f"{self.prefix}.send"

    @property
    def retry_exchange(self) -> str:
        return f"{self.prefix}.retry"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def config_exchange(self) -> str:
        """Fanout of `{"revision": N, "checksum": ...}` notices: a configuration revision was stored."""
        return f"{self.prefix}.config"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def status_exchange(self) -> str:
        """Topic of the instances' status reports (`status.<service>`) and requests for one (`request.status`)."""
        return f"{self.prefix}.status"

    @property
    def notifier_queue(self) -> str:
        return f"{self.prefix}.notifier"

    @property
    def kheops_queue(self) -> str:
        return f"{self.prefix}.kheops"

    @property
    def monitor_queue(self) -> str:
        return f"{self.prefix}.monitor"

    def send_queue(self, kind: str, destination_id: str) -> str:
        """The queue (and routing key) of a destination: ``<prefix>.send.<kind>.<id>``."""
        return f"{self.prefix}.send.{kind}.{destination_id}"

    def origin_of(self, queue: str, exchange: str, routing_key: str) -> tuple[str, str]:
        """Where a message taken from `queue` is replayed to: (exchange, routing key).

        The received queue is fed by the ingest exchange; every other work queue but the notifier's is
        bound on the send exchange under its own name (that is how delay queues return messages).
        """
        if queue == self.received_queue:
            return self.ingest_exchange, queue
        if queue and queue != self.notifier_queue:
            return self.send_exchange, queue
        return exchange, routing_key

    def retry_queue(self, delay_seconds: int) -> str:
        return f"{self.prefix}.retry.{delay_seconds}"

    def all_queues(self) -> list[str]:
        return [
            self.received_queue,
            *self.send_queues,
            *(self.retry_queue(d) for d in self.retry_delays),
            self.dead_queue,
            *([self.notifier_queue] if self.notifier else []),
            *([self.kheops_queue] if self.kheops else []),
            *([self.monitor_queue] if self.monitor else []),
        ]

    def _work_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_exchange,
            # at-least-once dead-lettering: a message moving between queues cannot vanish on the way.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def exchanges(self) -> list[str]:
        return [self.ingest_exchange, self.send_exchange, self.retry_exchange, self.events_exchange, self.dead_exchange]

    def declare(self, channel: Any) -> None:
        """Declare every exchange, queue and binding on a pika channel (idempotent).

        Without `declare_topology`, only check that every exchange and queue exists (a missing one closes
        the channel with 404): a service's own broker user may not declare them (`karnak broker setup` does).
        """
        if not self.declare_topology:
            for exchange in (*self.exchanges(), self.config_exchange, self.status_exchange):
                channel.exchange_declare(exchange, passive=True)
            for queue in self.all_queues():
                channel.queue_declare(queue, passive=True)
            return
        channel.exchange_declare(self.ingest_exchange, exchange_type="direct", durable=True)
        channel.exchange_declare(self.send_exchange, exchange_type="direct", durable=True)
        channel.exchange_declare(self.retry_exchange, exchange_type="headers", durable=True)
        channel.exchange_declare(self.events_exchange, exchange_type="topic", durable=True)
        channel.exchange_declare(self.dead_exchange, exchange_type="fanout", durable=True)
        channel.exchange_declare(self.config_exchange, exchange_type="fanout", durable=True)
        # Every instance's control connection declares it too, but one whose user may not (declare_topology
        # false) only checks it: `karnak broker setup` must have declared it.
        channel.exchange_declare(self.status_exchange, exchange_type="topic", durable=True)

        channel.queue_declare(
            self.dead_queue,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-delivery-limit": DEAD_DELIVERY_LIMIT},
        )
        channel.queue_bind(self.dead_queue, self.dead_exchange)

        channel.queue_declare(self.received_queue, durable=True, arguments=self._work_queue_arguments())
        channel.queue_bind(self.received_queue, self.ingest_exchange, routing_key=self.received_queue)
        # Delay queues dead-letter to the send exchange: this binding brings a retried instance (a copy
        # waiting for one destination, e.g. on the pseudonym API) back to the processor.
        channel.queue_bind(self.received_queue, self.send_exchange, routing_key=self.received_queue)

        for queue in self.send_queues:
            channel.queue_declare(queue, durable=True, arguments=self._work_queue_arguments())
            channel.queue_bind(queue, self.send_exchange, routing_key=queue)

        if self.notifier:
            channel.queue_declare(self.notifier_queue, durable=True, arguments=self._work_queue_arguments())
            channel.queue_bind(self.notifier_queue, self.events_exchange, routing_key="transfer.#")

        if self.kheops:
            channel.queue_declare(self.kheops_queue, durable=True, arguments=self._work_queue_arguments())
            channel.queue_bind(self.kheops_queue, self.events_exchange, routing_key="kheops.share")
            # Retries wait in the delay queues, which dead-letter to the send exchange under the queue's name.
            channel.queue_bind(self.kheops_queue, self.send_exchange, routing_key=self.kheops_queue)

        if self.monitor:
            channel.queue_declare(self.monitor_queue, durable=True, arguments=self._work_queue_arguments())
            channel.queue_bind(self.monitor_queue, self.events_exchange, routing_key="transfer.#")
            # An event the database could not take waits in the delay queues and comes back this way.
            channel.queue_bind(self.monitor_queue, self.send_exchange, routing_key=self.monitor_queue)

        for delay in self.retry_delays:
            queue = self.retry_queue(delay)
            channel.queue_declare(
                queue,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay * 1000,
                    # No dead-letter routing key: an expired message keeps its original routing key, the
                    # name of its destination queue, and so goes back to that queue.
                    "x-dead-letter-exchange": self.send_exchange,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                    "x-delivery-limit": self.delivery_limit,
                },
            )
            channel.queue_bind(
                queue,
                self.retry_exchange,
                arguments={"x-match": "all", header_names.RETRY_TIER: str(delay)},
            )

    def delete(self, channel: Any) -> None:
        """Delete every queue and exchange of this prefix (used by tests to clean up after a run)."""
        for queue in self.all_queues():
            channel.queue_delete(queue)
        for exchange in (
            self.ingest_exchange,
            self.send_exchange,
            self.retry_exchange,
            self.events_exchange,
            self.dead_exchange,
            self.config_exchange,
            self.status_exchange,
        ):
            channel.exchange_delete(exchange)
