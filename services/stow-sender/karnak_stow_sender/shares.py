"""`kheops.share` messages: after a series reached a STOW destination, ask the kheops-sharer to share it.

One message per (series, album). It names the destination and the album by its index in the destination's
`kheops_albums`; the tokens stay in the configuration and never travel through the broker. The body is
JSON of the fields below (schema ``karnak.kheops-share/1``), which the kheops-sharer reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

SHARE_SCHEMA = "karnak.kheops-share/1"
SHARE_ROUTING_KEY = "kheops.share"


@dataclass(frozen=True)
class ShareRequest:
    """Share one series, as sent to the destination, into one album of that destination."""

    destination: str
    album: int
    study_instance_uid: str
    series_instance_uid: str
    forward_node: str

    def to_body(self) -> bytes:
        return json.dumps(
            {
                "schema": SHARE_SCHEMA,
                "destination": self.destination,
                "album": self.album,
                "study_instance_uid": self.study_instance_uid,
                "series_instance_uid": self.series_instance_uid,
                "forward_node": self.forward_node,
                "requested_at": time.time(),
            }
        ).encode()

    def to_headers(self) -> dict[str, object]:
        # `karnak dead list` shows the destination of a parked message from this header.
        return {"karnak-destination": self.destination, "karnak-attempt": 0}
