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
from karnak_shared.envelope import ShareRequest
from karnak_shared.errors import PermanentDeliveryError, TransientDeliveryError
from karnak_shared.logs import EventLogger
from karnak_shared.service import Ack, Outcome, Park, Retry, ShareMessage
from karnak_shared.service.redelivery import MAX_REASON_LENGTH, RetryPolicy

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
    """Shares series into albums as `kheops.share` messages ask, and says what became of each message."""

    def __init__(
        self,
        albums: dict[tuple[str, int], AlbumTarget],
        records: ShareRecords,
        tokens: TokenCheck,
        policy: RetryPolicy,
    ) -> None:
        self._albums = albums
        self._records = records
        self._tokens = tokens
        self._policy = policy
        # One share of a series at a time per (album, series) in this process, so concurrent duplicates of a
        # request do not both reach Kheops; striped, so the locks do not grow with the series seen.
        self._stripes = [threading.Lock() for _ in range(64)]

    def handle(self, message: ShareMessage) -> Outcome:
        """Act on one message: `Ack` once shared (or already), `Retry` while Kheops is down, `Park` otherwise."""
        request = message.request
        target = self._albums.get((request.destination, request.album))
        if target is None:
            return self._park(
                request,
                f"destination {request.destination} has no Kheops album {request.album} "
                "(did the configuration change since the transfer?)",
                "unknown-album",
            )
        stripe = self._stripes[hash((target.destination, target.key, request.series_instance_uid)) % len(self._stripes)]
        with stripe:
            return self._share(message, target)

    def _share(self, message: ShareMessage, target: AlbumTarget) -> Outcome:
        request = message.request
        try:
            if self._records.shared(target.destination, target.key, request.series_instance_uid):
                SHARES.labels(target.destination, "duplicate").inc()
                log.debug("kheops.already-shared", **request.log_fields())
                return Ack()
            verdict = self._tokens.check(
                target.key,
                lambda: target.api.introspect(target.source_token.get_secret_value()),
                lambda: target.api.introspect(target.destination_token.get_secret_value()),
            )
            if verdict.problem is not None:
                return self._refused(request, target, verdict.problem, verdict.first_report)
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
            return self._retry(message, exc.reason)
        except PermanentDeliveryError as exc:
            return self._park(request, f"album {target.index} of {target.destination}: {exc.reason}", "refused")
        except SQLAlchemyError as exc:
            # The driver's message may name the database with its password: only its kind is kept.
            return self._retry(message, f"database unavailable ({type(exc).__name__})")
        SHARES.labels(target.destination, "shared").inc()
        log.info("kheops.series-shared", url_api=target.api.url_api, **request.log_fields())
        return Ack()

    def _refused(self, request: ShareRequest, target: AlbumTarget, problem: str, first_report: bool) -> Outcome:
        reason = f"album {target.index} of {target.destination} ({target.api.url_api}): {problem}"
        if first_report:
            TOKENS_REFUSED.labels(target.destination).inc()
            log.error("kheops.token-refused", destination=target.destination, album=target.index, reason=reason)
        SHARES.labels(target.destination, "refused").inc()
        return Park(reason, "token-refused")

    def _retry(self, message: ShareMessage, reason: str) -> Outcome:
        # The runner sends it through the delay queues, or parks it once the tiers are used up.
        request = message.request
        exhausted = self._policy.delay_for(message.attempt) is None
        SHARES.labels(request.destination, "failed" if exhausted else "retried").inc()
        log.warning(
            "kheops.share-failed", reason=reason[:MAX_REASON_LENGTH], attempt=message.attempt, **request.log_fields()
        )
        return Retry(reason)

    def _park(self, request: ShareRequest, reason: str, cause: str) -> Outcome:
        SHARES.labels(request.destination, "failed").inc()
        log.error("kheops.share-parked", reason=reason, **request.log_fields())
        return Park(reason, cause)
