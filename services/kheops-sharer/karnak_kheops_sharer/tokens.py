"""Validating an album's two tokens before sharing, as Karnak does, without asking Kheops for every series.

The source token needs the scopes ``read`` and ``send``, the destination token ``write``, and both must be
active. Results are kept for a while per album; a token found wanting is reported once per album (a log
line and a counter), not once per series, until it is found valid again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from karnak_kheops_sharer.kheops import Introspection

SOURCE_SCOPES = frozenset({"read", "send"})
DESTINATION_SCOPES = frozenset({"write"})


def token_problem(role: str, introspection: Introspection, needed: frozenset[str]) -> str | None:
    """Why a token cannot be used for `role` ('source' or 'destination'), or None when it can."""
    if introspection.refused_status is not None:
        return f"the {role} token was refused by the introspection (HTTP {introspection.refused_status})"
    if not introspection.active:
        return f"the {role} token is not active (expired or revoked)"
    missing = introspection.lacks(needed)
    if missing:
        return f"the {role} token lacks the scope(s) {', '.join(sorted(missing))} (needs {', '.join(sorted(needed))})"
    return None


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking an album's tokens: `problem` is None when both are good."""

    problem: str | None
    first_report: bool  # True the first time this album's tokens are found wanting


class TokenCheck:
    """Checks (and remembers) whether the tokens of each album may share."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._known: dict[str, tuple[float, str | None]] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._album_locks: dict[str, threading.Lock] = {}

    def check(
        self,
        album_key: str,
        source: Callable[[], Introspection],
        destination: Callable[[], Introspection],
    ) -> Verdict:
        """Check the album's tokens with the two introspection calls (made only when the result expired).

        Errors of the calls (Kheops unreachable) propagate and are not remembered. Concurrent checks of one
        album wait for a single pair of introspections.
        """
        with self._lock:
            album_lock = self._album_locks.setdefault(album_key, threading.Lock())
        with album_lock:
            now = self._clock()
            cached = self._known.get(album_key)
            if cached is not None and now - cached[0] < self._ttl:
                problem = cached[1]
            else:
                problem = token_problem("source", source(), SOURCE_SCOPES) or token_problem(
                    "destination", destination(), DESTINATION_SCOPES
                )
                self._known[album_key] = (now, problem)
        with self._lock:
            if problem is None:
                self._reported.discard(album_key)
                return Verdict(None, False)
            first = album_key not in self._reported
            self._reported.add(album_key)
            return Verdict(problem, first)
