"""What one email tells: a study's transfers to a destination, series by series.

Only the values the events carry are used: the display values and UIDs *as sent*, de-identified for a
de-identifying destination, so an email never shows more than the destination received.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from karnak_notifier.window import Held
from karnak_shared.envelope import TransferEvent

T = TypeVar("T")

MAX_REASON_LENGTH = 200
# A reason naming something per instance would make every reason distinct: list the first ones only.
MAX_REASONS_PER_SERIES = 20


@dataclass(frozen=True)
class Reason:
    """Why instances were not sent as such: their outcome and the reason, cut at 200 characters."""

    kind: str
    text: str


@dataclass(frozen=True)
class SeriesSummary:
    """Counts and distinct reasons of one series."""

    series_uid: str | None
    description: str
    sent: int
    failed: int
    rejected: int
    reasons: tuple[Reason, ...]
    more_reasons: int = 0


@dataclass(frozen=True)
class StudySummary:
    """The transfers of one study to one destination in one window."""

    destination: str
    forward_node: str
    study_uid: str | None
    patient_id: str
    study_description: str
    study_date: str
    series: tuple[SeriesSummary, ...]

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.series)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.series)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.series)

    def value(self, keyword: str) -> str:
        """A subject value by its configuration name (PatientID, StudyDescription, StudyDate, StudyInstanceUID)."""
        return {
            "PatientID": self.patient_id,
            "StudyDescription": self.study_description,
            "StudyDate": self.study_date,
            "StudyInstanceUID": self.study_uid or "",
        }.get(keyword, "")


@dataclass
class _SeriesTally:
    description: str = ""
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0, "rejected": 0})
    reasons: dict[Reason, None] = field(default_factory=dict)  # insertion-ordered set


@dataclass(frozen=True)
class StudyGroup(Generic[T]):
    """The events of one study in a window, with their tokens."""

    study_uid: str | None
    held: tuple[Held[T], ...]


def split_by_study(held: Iterable[Held[T]]) -> list[StudyGroup[T]]:
    """Group a window's events by study, in the order the studies first appeared."""
    groups: dict[str | None, list[Held[T]]] = {}
    for item in held:
        groups.setdefault(item.event.study_instance_uid, []).append(item)
    return [StudyGroup(uid, tuple(items)) for uid, items in groups.items()]


def summarize_study(events: Sequence[TransferEvent]) -> StudySummary:
    """Summarise the events of one study and destination (non-empty; the first event names both).

    An instance is counted once per outcome even when its event arrived twice (events are published at
    least once); study values are the first non-empty ones seen.
    """
    if not events:
        raise ValueError("a study summary needs at least one event")
    first = events[0]
    study: dict[str, str] = {}
    series: dict[str | None, _SeriesTally] = {}
    seen: set[tuple[str, str]] = set()
    for event in events:
        for keyword in ("PatientID", "StudyDescription", "StudyDate"):
            if not study.get(keyword) and event.display.get(keyword):
                study[keyword] = event.display[keyword]
        tally = series.setdefault(event.series_instance_uid, _SeriesTally())
        if not tally.description and event.display.get("SeriesDescription"):
            tally.description = event.display["SeriesDescription"]
        # An instance the destination had already (a STOW 409) is there: counted with the sent ones.
        kind = "sent" if event.kind == "duplicate" else event.kind
        key = (kind, event.sop_instance_uid)
        if key in seen or kind not in tally.counts:
            continue
        seen.add(key)
        tally.counts[kind] += 1
        if event.reason:
            tally.reasons.setdefault(Reason(event.kind, event.reason[:MAX_REASON_LENGTH]), None)
    return StudySummary(
        destination=first.destination,
        forward_node=first.forward_node,
        study_uid=first.study_instance_uid,
        patient_id=study.get("PatientID", ""),
        study_description=study.get("StudyDescription", ""),
        study_date=study.get("StudyDate", ""),
        series=tuple(
            SeriesSummary(
                series_uid=uid,
                description=tally.description,
                sent=tally.counts["sent"],
                failed=tally.counts["failed"],
                rejected=tally.counts["rejected"],
                reasons=tuple(list(tally.reasons)[:MAX_REASONS_PER_SERIES]),
                more_reasons=max(0, len(tally.reasons) - MAX_REASONS_PER_SERIES),
            )
            for uid, tally in series.items()
        ),
    )
