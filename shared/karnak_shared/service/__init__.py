"""One service runtime for every service (DESIGN.md section 13): runner, entrypoints, providers, outcomes."""

from karnak_shared.service.batching import BatchLimits
from karnak_shared.service.entrypoints import Batching, consume, timer
from karnak_shared.service.messages import EventMessage, InstanceMessage, ShareMessage, Unreadable
from karnak_shared.service.outcomes import Ack, Outcome, Park, Requeue, Retry
from karnak_shared.service.providers import Deferred, Providers, Work
from karnak_shared.service.runner import Service, ServiceRunner

__all__ = [
    "Ack",
    "BatchLimits",
    "Batching",
    "Deferred",
    "EventMessage",
    "InstanceMessage",
    "Outcome",
    "Park",
    "Providers",
    "Requeue",
    "Retry",
    "Service",
    "ServiceRunner",
    "ShareMessage",
    "Unreadable",
    "Work",
    "consume",
    "timer",
]
