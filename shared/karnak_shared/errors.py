"""The one exception hierarchy of the gateway.

Services raise these inside their logic and translate them at their boundary: a DICOM status in the
receiver, a parked message with its reason in the processor and the senders, an exit code in the CLI.
"""

from __future__ import annotations


class KarnakError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(KarnakError):
    """The configuration is invalid; the message names the field (and the line when known)."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


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


class InvalidInstance(KarnakError):
    """The bytes of an instance are not a DICOM dataset the gateway can route."""


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
