"""The names of every AMQP header the gateway sets or reads, in one place.

`karnak-*` headers are the message's own (its envelope, attempt, signature): the signature covers them.
`x-karnak-*` headers are added when a message is parked (its reason and where to replay it): they are
not signed, so a parked message keeps its original signature and is checked again when replayed.
"""

from __future__ import annotations

PREFIX = "karnak-"

SCHEMA = "karnak-schema"
ATTEMPT = "karnak-attempt"
DESTINATION = "karnak-destination"
BLOB = "karnak-blob"
# SHA-256 of the blob's bytes, set on a message whose instance travels as a blob: the signature covers
# the headers and the body, so a blob is covered through its digest.
DIGEST = "karnak-digest"
# HMAC-SHA256 (hex) over the other `karnak-*` headers and the body, keyed by `secrets.key`.
SIGNATURE = "karnak-signature"
# Not "x-retry-tier" as first sketched: RabbitMQ's headers exchange ignores headers starting with "x-"
# when matching, so such a binding matches every message and each retry landed in every delay queue.
RETRY_TIER = "karnak-retry-tier"

REASON = "x-karnak-reason"
# The short, stable name of why a message was parked (`missing-blob`, `unauthenticated`...), for
# `karnak dead list` filters and the parked-messages metric; REASON says it in words.
CAUSE = "x-karnak-cause"
ORIGIN_EXCHANGE = "x-karnak-origin-exchange"
ORIGIN_ROUTING_KEY = "x-karnak-origin-routing-key"
PARKED_AT = "x-karnak-parked-at"

# Set by RabbitMQ on a message a quorum queue delivers again: how many times it was returned before.
DELIVERY_COUNT = "x-delivery-count"
DEATH = "x-death"
