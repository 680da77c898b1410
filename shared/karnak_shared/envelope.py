"""The messages that travel between services (DESIGN.md section 4).

An instance message is the Part 10 bytes of the instance as its body (or an empty body and a blob
reference) and an `Envelope` as its AMQP headers. Events (`transfer.sent|failed|rejected`) are JSON
bodies described by `TransferEvent`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from karnak_shared import header_names
from karnak_shared.errors import EnvelopeError

ENVELOPE_SCHEMA = "karnak.instance/1"
EVENT_SCHEMA = "karnak.event/1"
_PREFIX = header_names.PREFIX


class TransferOrigin(BaseModel):
    """What the monitor needs of the instance as it was received, before any de-identification.

    The processor fills it once per instance; it travels in the send message's headers and in every event
    about that instance, and lands only in the monitoring tables (DESIGN.md section 16): never in a log
    line, a metric label, an email or a parked message's reason. `patient_id` and `accession_number` are
    set only when `monitoring.original_identifiers` is true.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    study_instance_uid: str = ""
    series_instance_uid: str = ""
    modality: str = ""
    study_description: str = ""
    series_description: str = ""
    study_date: str = ""
    patient_id: str | None = None
    accession_number: str | None = None
    # As sent: what a viewer may see instead of the original identifiers.
    patient_id_sent: str = ""
    accession_number_sent: str = ""
    deidentified: bool = False
    tag_morphed: bool = False


class Envelope(BaseModel):
    """The versioned headers of an instance message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: str = Field(ENVELOPE_SCHEMA, alias="schema")
    instance_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    forward_node: str
    calling_ae: str = ""
    destination: str | None = None
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    attempt: int = 0
    blob: str | None = None
    digest: str | None = None  # SHA-256 (hex) of the blob's bytes, when the instance travels as a blob
    size: int = 0
    received_at: float = Field(default_factory=time.time)
    kheops_albums: list[int] = []
    display: dict[str, str] = {}
    origin: TransferOrigin | None = None
    # Send messages: why the instance is in Explicit VR Little Endian instead of the destination's syntax.
    syntax_fallback: str | None = None

    def to_headers(self) -> dict[str, Any]:
        """AMQP headers: one `karnak-<field>` header per set field; lists and mappings as JSON."""
        headers: dict[str, Any] = {}
        for name, value in self.model_dump(by_alias=True).items():
            if value is None:
                continue
            if isinstance(value, (list, dict)):
                if not value:
                    continue
                value = json.dumps(value)
            elif isinstance(value, float):
                value = repr(value)  # AMQP field tables have no portable float: send it as text
            headers[_PREFIX + name.replace("_", "-")] = value
        return headers

    @classmethod
    def from_headers(cls, headers: dict[str, Any] | None) -> Envelope:
        """Read an envelope from AMQP headers; raise `EnvelopeError` when it is missing or invalid."""
        fields: dict[str, Any] = {}
        for key, value in (headers or {}).items():
            if not key.startswith(_PREFIX):
                continue
            name = key[len(_PREFIX) :].replace("-", "_")
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if name in ("kheops_albums", "display", "origin") and isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise EnvelopeError(f"header {key} is not JSON: {exc}") from None
            fields[name] = value
        schema = fields.get("schema")
        if schema is None:
            raise EnvelopeError("message has no karnak-schema header: not a gateway instance message")
        if schema != ENVELOPE_SCHEMA:
            raise EnvelopeError(f"unsupported envelope schema {schema!r} (this version reads {ENVELOPE_SCHEMA})")
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise EnvelopeError(f"invalid envelope: {problems}") from None

    def log_fields(self) -> dict[str, Any]:
        """Fields safe to log: identifiers of the message and the instance, never patient data."""
        return {
            "instance_id": self.instance_id,
            "forward_node": self.forward_node,
            "destination": self.destination or "-",
            "sop_instance_uid": self.sop_instance_uid,
            "attempt": self.attempt,
        }


EventKind = Literal["sent", "failed", "rejected", "retried", "duplicate"]


class TransferEvent(BaseModel):
    """A `transfer.<kind>.<destination>` event: sent, failed, rejected (excluded), retried or duplicate."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: str = Field(EVENT_SCHEMA, alias="schema")
    # One per event, so a consumer that sees the same event twice (redelivery) can count it once.
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    kind: EventKind
    destination: str
    forward_node: str
    instance_id: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    reason: str | None = None
    attempt: int = 0
    received_at: float
    at: float = Field(default_factory=time.time)
    display: dict[str, str] = {}
    origin: TransferOrigin = TransferOrigin()
    # Set when the destination's syntax could not carry the pixel data: it went in Explicit VR Little Endian.
    syntax_fallback: str | None = None

    @property
    def routing_key(self) -> str:
        return f"transfer.{self.kind}.{self.destination}"

    def to_body(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_body(cls, body: bytes) -> TransferEvent:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise EnvelopeError(f"invalid transfer event: {exc.errors()[0]['msg']}") from None

    @classmethod
    def for_envelope(cls, envelope: Envelope, kind: EventKind, destination: str, reason: str | None) -> TransferEvent:
        return cls(
            kind=kind,
            destination=destination,
            forward_node=envelope.forward_node,
            instance_id=envelope.instance_id,
            sop_class_uid=envelope.sop_class_uid,
            sop_instance_uid=envelope.sop_instance_uid,
            study_instance_uid=envelope.study_instance_uid,
            series_instance_uid=envelope.series_instance_uid,
            reason=reason,
            attempt=envelope.attempt,
            received_at=envelope.received_at,
            display=envelope.display,
            origin=envelope.origin or TransferOrigin(),
            syntax_fallback=envelope.syntax_fallback,
        )


SHARE_SCHEMA = "karnak.kheops-share/1"
SHARE_ROUTING_KEY = "kheops.share"


class ShareRequest(BaseModel):
    """A `kheops.share` message: share one series, as sent, into one album of a STOW destination.

    The stow-sender publishes one per (series, album) after the transfer; the kheops-sharer reads it. The
    album is named by its index in the destination's `kheops_albums`: tokens never travel through the
    broker, the sharer takes them from the configuration.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_: str = Field(SHARE_SCHEMA, alias="schema")
    destination: str
    album: Annotated[int, Field(ge=0)]
    study_instance_uid: Annotated[str, Field(min_length=1, max_length=64)]
    series_instance_uid: Annotated[str, Field(min_length=1, max_length=64)]
    forward_node: str = ""
    requested_at: float = Field(default_factory=time.time)

    def to_body(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def to_headers(self) -> dict[str, Any]:
        # `karnak dead list` shows the destination of a parked message from this header.
        return {header_names.DESTINATION: self.destination, header_names.ATTEMPT: 0}

    @classmethod
    def from_body(cls, body: bytes) -> ShareRequest:
        """Read a request; raise `EnvelopeError` saying what is wrong with it."""
        try:
            data = json.loads(body)
        except ValueError:
            raise EnvelopeError("kheops.share message is not JSON") from None
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SHARE_SCHEMA:
            raise EnvelopeError(f"unsupported kheops.share schema {schema!r} (this version reads {SHARE_SCHEMA})")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise EnvelopeError(f"invalid kheops.share message: {problems}") from None

    def log_fields(self) -> dict[str, Any]:
        """Identifiers safe to log (UIDs as sent, never patient data)."""
        return {
            "destination": self.destination,
            "album": self.album,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
        }


def attempt_of(headers: dict[str, Any]) -> int:
    """How many times a message was tried before, from its `karnak-attempt` header (0 when absent)."""
    value = headers.get(header_names.ATTEMPT, 0)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
