"""Per-destination delivery metrics, shared by the dicom-sender and the stow-sender.

Both senders count the same things per destination (instances delivered or not, bytes delivered, time
from reception to delivery), so they report them in one family each with the `destination` label:
destination ids are unique across both kinds, and one query covers every destination. They are defined
here, once, because prometheus_client's global registry refuses a second definition of a name, and every
service's modules are imported into one process by `karnak` (entry points) and by the tests.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

SENT = Counter(
    "karnak_instances_sent_total",
    "Delivery outcomes per destination: sent, retried, failed (parked), duplicate",
    ["destination", "outcome"],
)
SENT_BYTES = Counter("karnak_sent_bytes_total", "Bytes delivered per destination", ["destination"])
TRANSIT_SECONDS = Histogram(
    "karnak_instance_transit_seconds",
    "Time from the C-STORE received by the gateway to its delivery at the destination",
    ["destination"],
    buckets=LATENCY_BUCKETS,
)
