"""Handling one `kheops.share` message: check the album's tokens, share the series once, remember it.

A series already recorded for the album is acked at once. Kheops unreachable (network, 5xx, 429) sends
the message to the delay queues; a token without the needed scopes, or a share Kheops refuses, parks it
with the reason, so `karnak dead replay` can share it once the token is fixed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError

from karnak_kheops_sharer.kheops import Introspection
from karnak_kheops_sharer.records import ShareRecords
from karnak_kheops_sharer.tokens import TokenCheck
from karnak_shared import header_names
from karnak_shared.broker import ConfirmingPublisher, Delivery, Settlement, Verdict
from karnak_shared.envelope import SHARE_ROUTING_KEY, ShareRequest, attempt_of
from karnak_shared.errors import BrokerUnavailable, EnvelopeError, PermanentDeliveryError, TransientDeliveryError
from karnak_shared.logs import EventLogger
from karnak_shared.retry import park
from karnak_shared.service.redelivery import MAX_REASON_LENGTH, RetryPolicy
from karnak_shared.topology import Topology

log = EventLogger("karnak.kheops-sharer")

SHARES = Counter(
    "karnak_kheops_shares_total",
    "kheops.share requests per destination and outcome: shared, duplicate, retried, refused, failed",
    ["destination", "outcome"],
)
TOKENS_REFUSED = Counter(
    "karnak_kheops_token_refusals_total",
    "Albums whose tokens were found unusable (counted once until they are found valid again)",
    ["destination"],
)


class KheopsCalls(Protocol):
    url_api: str

    def introspect(self, token: str) -> Introspection: ...

    def share_series(self, study_uid: str, series_uid: str, destination_token: str, source_token: str) -> int: ...


@dataclass(frozen=True)
class AlbumTarget:
    """One album of a destination, with its API and tokens."""

    destination: str
    index: int
    key: str
    api: KheopsCalls
    source_token: SecretStr
    destination_token: SecretStr


class Sharer:
    """Shares series into albums as `kheops.share` messages ask."""

    def __init__(
        self,
        albums: dict[tuple[str, int], AlbumTarget],
        records: ShareRecords,
        tokens: TokenCheck,
        publisher: ConfirmingPublisher,
        topology: Topology,
        policy: RetryPolicy,
    ) -> None:
        self._albums = albums
        self._records = records
        self._tokens = tokens
        self._publisher = publisher
        self._topology = topology
        self._policy = policy
        # One share of a series at a time per (album, series) in this process, so concurrent duplicates of a
        # request do not both reach Kheops; striped, so the locks do not grow with the series seen.
        self._stripes = [threading.Lock() for _ in range(64)]

    def handle(self, delivery: Delivery) -> Verdict:
        """Act on one message and say how to settle it."""
        try:
            request = ShareRequest.from_body(delivery.body)
        except EnvelopeError as exc:
            return self._park(delivery, None, str(exc))
        target = self._albums.get((request.destination, request.album))
        if target is None:
            return self._park(
                delivery,
                request,
                f"destination {request.destination} has no Kheops album {request.album} "
                "(did the configuration change since the transfer?)",
            )
        stripe = self._stripes[hash((target.destination, target.key, request.series_instance_uid)) % len(self._stripes)]
        with stripe:
            return self._share(delivery, request, target)

    def _share(self, delivery: Delivery, request: ShareRequest, target: AlbumTarget) -> Verdict:
        try:
            if self._records.shared(target.destination, target.key, request.series_instance_uid):
                SHARES.labels(target.destination, "duplicate").inc()
                log.debug("kheops.already-shared", **request.log_fields())
                return Verdict(Settlement.ACK)
            verdict = self._tokens.check(
                target.key,
                lambda: target.api.introspect(target.source_token.get_secret_value()),
                lambda: target.api.introspect(target.destination_token.get_secret_value()),
            )
            if verdict.problem is not None:
                return self._refused(delivery, request, target, verdict.problem, verdict.first_report)
            target.api.share_series(
                request.study_instance_uid,
                request.series_instance_uid,
                target.destination_token.get_secret_value(),
                target.source_token.get_secret_value(),
            )
            self._records.record(
                target.destination, target.key, request.study_instance_uid, request.series_instance_uid
            )
        except TransientDeliveryError as exc:
            return self._retry(delivery, request, exc.reason)
        except PermanentDeliveryError as exc:
            return self._park(delivery, request, f"album {target.index} of {target.destination}: {exc.reason}")
        except SQLAlchemyError as exc:
            # The driver's message may name the database with its password: only its kind is kept.
            return self._retry(delivery, request, f"database unavailable ({type(exc).__name__})")
        SHARES.labels(target.destination, "shared").inc()
        log.info("kheops.series-shared", url_api=target.api.url_api, **request.log_fields())
        return Verdict(Settlement.ACK)

    def _refused(
        self, delivery: Delivery, request: ShareRequest, target: AlbumTarget, problem: str, first_report: bool
    ) -> Verdict:
        reason = f"album {target.index} of {target.destination} ({target.api.url_api}): {problem}"
        if first_report:
            TOKENS_REFUSED.labels(target.destination).inc()
            log.error("kheops.token-refused", destination=target.destination, album=target.index, reason=reason)
        SHARES.labels(target.destination, "refused").inc()
        return self._park(delivery, request, reason, quiet=True)

    def _retry(self, delivery: Delivery, request: ShareRequest, reason: str) -> Verdict:
        attempt = attempt_of(delivery.headers)
        delay = self._policy.delay_for(attempt)
        if delay is None:
            return self._park(delivery, request, f"gave up after {attempt + 1} attempts: {reason}")
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-")}
        headers[header_names.ATTEMPT] = attempt + 1
        headers[header_names.RETRY_TIER] = str(delay)
        try:
            # Back in the sharer's queue after the delay: the delay queues dead-letter to the send exchange,
            # where that queue is bound under its own name.
            self._publisher.publish(self._topology.retry_exchange, self._topology.kheops_queue, delivery.body, headers)
        except BrokerUnavailable:
            return Verdict(Settlement.REQUEUE)
        SHARES.labels(request.destination, "retried").inc()
        log.warning(
            "kheops.share-retry-scheduled", reason=reason[:MAX_REASON_LENGTH], delay=delay, **request.log_fields()
        )
        return Verdict(Settlement.ACK)

    def _park(self, delivery: Delivery, request: ShareRequest | None, reason: str, quiet: bool = False) -> Verdict:
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-")}
        try:
            # Replayed, it goes the way the stow-sender sent it.
            park(
                self._publisher,
                self._topology,
                exchange=self._topology.events_exchange,
                routing_key=SHARE_ROUTING_KEY,
                headers=headers,
                body=delivery.body,
                reason=reason,
            )
        except BrokerUnavailable:
            return Verdict(Settlement.REQUEUE)
        if request is not None and not quiet:
            SHARES.labels(request.destination, "failed").inc()
        fields = request.log_fields() if request is not None else {"queue": delivery.queue}
        if quiet:
            log.debug("kheops.share-parked", reason=reason, **fields)
        else:
            log.error("kheops.share-parked", reason=reason, **fields)
        return Verdict(Settlement.ACK)
