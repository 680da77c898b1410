"""The one exception hierarchy of the gateway.

Services raise these inside their logic and translate them at their boundary: a DICOM status in the
receiver, a parked message with its reason in the processor and the senders, an exit code in the CLI.
"""

from __future__ import annotations

# The root and the DICOM-level errors live in the DICOM library, which cannot import this package.
from karnak_dicom.errors import ConfigError, InvalidInstance, KarnakError

__all__ = [
    "BlobMissing",
    "BlobStoreError",
    "BrokerUnavailable",
    "ConfigError",
    "DeliveryError",
    "EnvelopeError",
    "InvalidInstance",
    "KarnakError",
    "PermanentDeliveryError",
    "PublishOutcomeUnknown",
    "TransientDeliveryError",
]


class BrokerUnavailable(KarnakError):
    """RabbitMQ could not take a message durably (connection lost, nack, unroutable, timeout)."""


class PublishOutcomeUnknown(BrokerUnavailable):
    """The message went out but its confirm never came: RabbitMQ may have queued it, so its blob must stay."""


class BlobStoreError(KarnakError):
    """The blob store could not write or read an instance (disk full, missing blob, bad reference)."""


class BlobMissing(BlobStoreError):
    """A referenced blob is not in the store: deleted after its delivery, or lost with the volume."""


class InvalidBlobReference(BlobStoreError):
    """A blob reference that is not one of the store's (a path escaping it, say): no file is ever opened."""


class BlobDigestMismatch(BlobStoreError):
    """A blob whose bytes are not those its message was signed with (altered, or cut short by a crash)."""


class EnvelopeError(KarnakError):
    """A message's headers do not form a valid envelope."""


class DeliveryError(KarnakError):
    """Delivering an instance to a destination failed."""

    transient: bool = True

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TransientDeliveryError(DeliveryError):
    """The destination may accept the instance later: retry through the delay queues."""

    transient = True


class PermanentDeliveryError(DeliveryError):
    """The destination will not accept the instance as it is: park it with the reason."""

    transient = False
