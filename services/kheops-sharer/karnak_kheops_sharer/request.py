"""The `kheops.share` message the stow-sender publishes after a series reached a STOW destination.

Its JSON body (schema ``karnak.kheops-share/1``) names the destination, the album by its index in the
destination's `kheops_albums`, and the study and series UIDs as sent. Tokens never travel in it: the
sharer takes them from the configuration.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from karnak_shared.errors import EnvelopeError

SHARE_SCHEMA = "karnak.kheops-share/1"
ATTEMPT_HEADER = "karnak-attempt"


class ShareRequest(BaseModel):
    """Share one series into one album of a destination."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: str = Field(alias="schema")
    destination: str
    album: Annotated[int, Field(ge=0)]
    study_instance_uid: Annotated[str, Field(min_length=1, max_length=64)]
    series_instance_uid: Annotated[str, Field(min_length=1, max_length=64)]
    forward_node: str = ""
    requested_at: float = 0.0

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
    """How many times this share was tried before (0 for a new request)."""
    value = headers.get(ATTEMPT_HEADER, 0)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
