"""What the notifier reads from the configuration, checked at start-up."""

from __future__ import annotations

import math
from collections.abc import Mapping

from karnak_notifier.java_format import PatternError, java_format
from karnak_shared.config import GatewayConfig, Notifications
from karnak_shared.errors import ConfigError

# Events stay unacked for a whole window, and RabbitMQ closes a channel that holds a delivery unacked
# longer than its consumer_timeout (30 minutes by default): such a window could never be sent.
MAX_INTERVAL_SECONDS = 1500
# The order of events per second one destination can see: the whole backbone was measured at about 130
# instances per second (DESIGN.md section 4).
EVENTS_PER_SECOND = 150
# basic.qos takes a 16-bit prefetch count.
MAX_PREFETCH = 65535
MIN_PREFETCH = 1000


def notified_destinations(config: GatewayConfig) -> dict[str, Notifications]:
    """The destinations whose events are emailed, by id; raise `ConfigError` naming what cannot work.

    A destination with notifications but no address is not notified. A subject pattern that Java's
    `String.format` would throw on with the configured values (a placeholder without a value, a number
    conversion) would fail every email: it is refused here, at start-up.
    """
    problems: list[str] = []
    notified: dict[str, Notifications] = {}
    for n, node in enumerate(config.forward_nodes):
        for d, destination in enumerate(node.destinations):
            notifications = destination.notifications
            if notifications is None or not notifications.emails:
                continue
            here = f"forward_nodes[{n}].destinations[{d}].notifications"
            try:
                java_format(notifications.subject_pattern, ["x"] * len(notifications.subject_values))
            except PatternError as exc:
                problems.append(f"{here}.subject_pattern: {exc} (subject_values: {notifications.subject_values})")
            if notifications.interval > MAX_INTERVAL_SECONDS:
                problems.append(
                    f"{here}.interval: must be at most {MAX_INTERVAL_SECONDS} seconds (a window's events stay "
                    "unacked until its email is sent, and RabbitMQ closes a channel after 30 minutes without an ack)"
                )
            notified[destination.id] = notifications
    if config.smtp.tls and config.smtp.starttls:
        problems.append("smtp.starttls: choose either starttls (upgrade a plain connection) or tls (implicit TLS)")
    if problems:
        raise ConfigError(problems)
    return notified


def window_capacity(destinations: Mapping[str, Notifications]) -> int:
    """The consumer prefetch: enough unacked deliveries for every destination's window to fill.

    A destination's window holds up to `EVENTS_PER_SECOND * interval` events; with fewer deliveries in
    flight, RabbitMQ would stop delivering before the window closes and the rest of a study would come in
    a second email. Bounded by the protocol's 16-bit prefetch; at least `MIN_PREFETCH` so events of the
    next windows keep flowing while an email waits for the SMTP server.
    """
    wanted = sum(EVENTS_PER_SECOND * n.interval for n in destinations.values())
    return max(MIN_PREFETCH, min(MAX_PREFETCH, math.ceil(wanted)))
