"""Reading a STOW-RS response and settling each instance of the request from it (PS3.18 10.5.3).

- 200: every instance stored; 202: some stored, with warnings or failures; 409: none stored. The body
  (DICOM JSON, or DICOM XML) lists the stored instances in the Referenced SOP Sequence (0008,1199), with a
  Warning Reason (0008,1196) when the server changed something, and the others in the Failed SOP Sequence
  (0008,1198) with a Failure Reason (0008,1197). Each instance is settled on its own from these lists.
- An instance the server already has (Failure Reason 0x0111, or not listed in a 409 Conflict) is a
  duplicate: neither sent nor failed (Karnak counts a 409 as both), acked and reported as `duplicate`.
- Other statuses settle the instances the body does not list: 5xx, 429 and 408 are transient (retried
  through the delay queues); other 4xx and 3xx permanent (parked); anything else is transient.
"""

from __future__ import annotations

import enum
import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

_REASONS = {
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP Instance",
    0x0122: "SOP Class not supported",
    0x0124: "Not authorized",
    0xA700: "Out of resources",
    0xA900: "Data set does not match SOP Class",
    0xB000: "Coercion of data elements",
    0xB006: "Elements discarded",
    0xB007: "Data set does not match SOP Class",
    0xC000: "Cannot understand",
    0xC122: "Referenced Transfer Syntax not supported",
}


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the server had it already
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class InstanceResult:
    """How one instance of a request fared; `reason` explains a failure or a warning."""

    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True)
class StowResponse:
    """What a DICOMweb server answered to one STOW-RS request."""

    status: int
    content_type: str = ""
    body: bytes = b""
    reason_phrase: str = ""


@dataclass
class StowReport:
    """The instances a response body lists: stored (with an optional warning code) and failed (with a code)."""

    referenced: dict[str, int | None] = field(default_factory=dict)
    failed: dict[str, int | None] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.referenced and not self.failed


def describe_reason(code: int | None) -> str:
    """``0xA700 (Out of resources)``; ``no reason given`` for a missing code."""
    if code is None:
        return "no reason given"
    name = _REASONS.get(code) or _REASONS.get(code & 0xFF00) or ("Warning" if code & 0xF000 == 0xB000 else "Failure")
    return f"0x{code:04X} ({name})"


def classify_failure(code: int | None) -> Outcome:
    """A Failure Reason: out of resources and processing failures may pass (transient); the rest will not.

    A duplicate is already stored, and a warning code in the failed list is a server's way of saying stored.
    """
    if code is None:
        return Outcome.PERMANENT
    if code & 0xFF00 == 0xA700 or code == 0x0110:
        return Outcome.TRANSIENT
    if code == 0x0111:
        return Outcome.DUPLICATE
    if code & 0xF000 == 0xB000:
        return Outcome.STORED
    return Outcome.PERMANENT


def parse_report(content_type: str, body: bytes) -> StowReport:
    """The Referenced and Failed SOP Sequences of a response body (DICOM JSON or XML); empty if neither."""
    if not body.strip():
        return StowReport()
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        if kind.endswith("xml") or (not kind.endswith("json") and body.lstrip().startswith(b"<")):
            return _from_xml(body)
        return _from_json(json.loads(body))
    except (ValueError, ElementTree.ParseError, TypeError, AttributeError):
        return StowReport()


def _json_values(dataset: dict[str, Any], tag: str) -> list[Any]:
    element = dataset.get(tag) or dataset.get(tag.upper())
    if not isinstance(element, dict):
        return []
    values = element.get("Value")
    return values if isinstance(values, list) else []


def _json_code(item: dict[str, Any], tag: str) -> int | None:
    values = _json_values(item, tag)
    if not values:
        return None
    try:
        return int(values[0])
    except (TypeError, ValueError):
        return None


def _from_json(document: Any) -> StowReport:
    datasets = document if isinstance(document, list) else [document]
    report = StowReport()
    for dataset in datasets:
        if not isinstance(dataset, dict):
            continue
        for sequence, target, code_tag in (
            (REFERENCED_SOP_SEQUENCE, report.referenced, WARNING_REASON),
            (FAILED_SOP_SEQUENCE, report.failed, FAILURE_REASON),
        ):
            for item in _json_values(dataset, sequence):
                if not isinstance(item, dict):
                    continue
                uids = _json_values(item, REFERENCED_SOP_INSTANCE_UID)
                if uids:
                    target[str(uids[0])] = _json_code(item, code_tag)
    return report


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_attribute(parent: ElementTree.Element, tag: str) -> ElementTree.Element | None:
    for child in parent:
        if _local(child.tag) == "DicomAttribute" and (child.get("tag") or "").upper() == tag.upper():
            return child
    return None


def _xml_first_value(parent: ElementTree.Element, tag: str) -> str | None:
    attribute = _xml_attribute(parent, tag)
    if attribute is None:
        return None
    for value in attribute:
        if _local(value.tag) == "Value" and value.text:
            return value.text.strip()
    return None


def _xml_code(item: ElementTree.Element, tag: str) -> int | None:
    text = _xml_first_value(item, tag)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _from_xml(body: bytes) -> StowReport:
    root = ElementTree.fromstring(body)
    report = StowReport()
    for sequence, target, code_tag in (
        (REFERENCED_SOP_SEQUENCE, report.referenced, WARNING_REASON),
        (FAILED_SOP_SEQUENCE, report.failed, FAILURE_REASON),
    ):
        attribute = _xml_attribute(root, sequence)
        if attribute is None:
            continue
        for item in attribute:
            if _local(item.tag) != "Item":
                continue
            uid = _xml_first_value(item, REFERENCED_SOP_INSTANCE_UID)
            if uid:
                target[uid] = _xml_code(item, code_tag)
    return report


def _status_text(response: StowResponse) -> str:
    phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
    return f"HTTP {response.status}{phrase}"


def request_outcome(status: int) -> Outcome | None:
    """How a status settles the instances the body does not list, or None when it does not (2xx, 409)."""
    if 200 <= status < 300 or status == 409:
        return None
    if status >= 500 or status in (408, 429):
        return Outcome.TRANSIENT
    if 400 <= status < 500:
        return Outcome.PERMANENT
    # 1xx/3xx: redirects are not followed (a POST must not turn into a GET); the URL needs fixing.
    return Outcome.PERMANENT if 300 <= status < 400 else Outcome.TRANSIENT


def settle(response: StowResponse, sop_instance_uids: Iterable[str], where: str) -> dict[str, InstanceResult]:
    """The result of each instance of a request from the server's response.

    An instance the body lists is settled from its list whatever the status: Orthanc, for one, answers 400
    to a batch with one unreadable part but stores, and lists, the others. The status settles the rest.
    """
    uids: Sequence[str] = list(dict.fromkeys(sop_instance_uids))
    whole = request_outcome(response.status)
    report = parse_report(response.content_type, response.body)
    answered = f"{where} answered {_status_text(response)}"
    results: dict[str, InstanceResult] = {}
    for uid in uids:
        if uid in report.failed:
            code = report.failed[uid]
            outcome = classify_failure(code)
            verb = {Outcome.STORED: "stored it with", Outcome.DUPLICATE: "had it already:"}.get(outcome, "refused it:")
            results[uid] = InstanceResult(outcome, f"{where} {verb} {describe_reason(code)}")
        elif uid in report.referenced:
            warning = report.referenced[uid]
            if warning is not None:
                results[uid] = InstanceResult(Outcome.STORED, f"stored with a warning: {describe_reason(warning)}")
            elif response.status != 200:
                results[uid] = InstanceResult(Outcome.STORED, f"stored; {answered}")
            else:
                results[uid] = InstanceResult(Outcome.STORED)
        elif whole is not None:
            hint = " (redirects are not followed: configure the final URL)" if 300 <= response.status < 400 else ""
            results[uid] = InstanceResult(whole, answered + hint)
        elif response.status == 409:
            # Conflict, and no failure listed for this instance: the server has it already.
            results[uid] = InstanceResult(Outcome.DUPLICATE, answered)
        elif response.status == 202 and not report.empty:
            # Some instances are listed and this one is not: whether it was stored is unknown. Sending it
            # again is harmless, losing it is not.
            results[uid] = InstanceResult(Outcome.TRANSIENT, f"{answered} without listing this instance")
        elif response.status == 202:
            results[uid] = InstanceResult(Outcome.STORED, f"stored; {answered}")
        else:
            results[uid] = InstanceResult(Outcome.STORED)
    return results
