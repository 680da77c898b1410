"""Settling each instance of a STOW-RS request from the server's answer (status and DICOM JSON/XML report)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from karnak_stow_sender.response import (
    InstanceResult,
    Outcome,
    StowResponse,
    classify_failure,
    describe_reason,
    parse_report,
    settle,
)

A, B, C = "1.2.3.1", "1.2.3.2", "1.2.3.3"
WHERE = "archive (https://pacs.example/dicom-web/studies)"


def _item(uid: str, code_tag: str | None = None, code: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00081155": {"vr": "UI", "Value": [uid]},
    }
    if code_tag is not None:
        item[code_tag] = {"vr": "US", "Value": [code]}
    return item


def dicom_json(referenced: list[dict[str, Any]] | None = None, failed: list[dict[str, Any]] | None = None) -> bytes:
    """A STOW-RS response body as Orthanc writes it (empty sequences have no Value)."""
    body: dict[str, Any] = {"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}}
    body["00081198"] = {"vr": "SQ", **({"Value": failed} if failed else {})}
    body["00081199"] = {"vr": "SQ", **({"Value": referenced} if referenced else {})}
    return json.dumps(body).encode()


def answer(status: int, body: bytes = b"", content_type: str = "application/dicom+json") -> StowResponse:
    return StowResponse(status=status, content_type=content_type, body=body, reason_phrase="Reason")


def test_200_with_every_instance_referenced_stores_them_all_without_a_reason() -> None:
    response = answer(200, dicom_json(referenced=[_item(A), _item(B)]))
    assert settle(response, [A, B], WHERE) == {A: InstanceResult(Outcome.STORED), B: InstanceResult(Outcome.STORED)}


def test_200_without_a_body_stores_every_instance() -> None:
    assert settle(answer(200), [A], WHERE) == {A: InstanceResult(Outcome.STORED)}


def test_202_settles_each_instance_from_the_failed_sop_sequence() -> None:
    response = answer(
        202,
        dicom_json(
            referenced=[_item(A)],
            failed=[_item(B, "00081197", 0xA700), _item(C, "00081197", 0xC122)],
        ),
    )
    results = settle(response, [A, B, C], WHERE)
    assert results[A].outcome is Outcome.STORED
    assert results[B] == InstanceResult(Outcome.TRANSIENT, f"{WHERE} refused it: 0xA700 (Out of resources)")
    assert results[C] == InstanceResult(
        Outcome.PERMANENT, f"{WHERE} refused it: 0xC122 (Referenced Transfer Syntax not supported)"
    )


def test_a_warning_reason_keeps_the_instance_stored_and_says_why() -> None:
    response = answer(202, dicom_json(referenced=[_item(A, "00081196", 0xB000)]))
    assert settle(response, [A], WHERE)[A] == InstanceResult(
        Outcome.STORED, "stored with a warning: 0xB000 (Coercion of data elements)"
    )


def test_202_that_lists_others_but_not_this_instance_retries_it_rather_than_guess() -> None:
    response = answer(202, dicom_json(referenced=[_item(A)]))
    assert settle(response, [A, B], WHERE)[B].outcome is Outcome.TRANSIENT


def test_a_409_settles_the_listed_failures_from_their_reasons_and_the_unlisted_as_duplicates() -> None:
    response = answer(409, dicom_json(failed=[_item(A, "00081197", 0x0122)]))
    results = settle(response, [A, B], WHERE)
    assert results[A] == InstanceResult(Outcome.PERMANENT, f"{WHERE} refused it: 0x0122 (SOP Class not supported)")
    assert results[B] == InstanceResult(Outcome.DUPLICATE, f"{WHERE} answered HTTP 409 Reason")


def test_a_duplicate_sop_instance_failure_is_a_duplicate_not_a_failure() -> None:
    response = answer(409, dicom_json(failed=[_item(A, "00081197", 0x0111)]))
    assert settle(response, [A], WHERE)[A] == InstanceResult(
        Outcome.DUPLICATE, f"{WHERE} had it already: 0x0111 (Duplicate SOP Instance)"
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_server_errors_throttling_and_request_timeouts_are_transient(status: int) -> None:
    result = settle(answer(status, b"busy", "text/plain"), [A], WHERE)[A]
    assert result == InstanceResult(Outcome.TRANSIENT, f"{WHERE} answered HTTP {status} Reason")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415])
def test_other_client_errors_are_permanent(status: int) -> None:
    assert settle(answer(status), [A], WHERE)[A].outcome is Outcome.PERMANENT


def test_a_redirect_is_not_followed_and_says_to_configure_the_final_url() -> None:
    result = settle(answer(302), [A], WHERE)[A]
    assert result.outcome is Outcome.PERMANENT
    assert "configure the final URL" in (result.reason or "")


def test_an_error_status_still_settles_the_instances_the_body_lists_as_stored() -> None:
    # Orthanc answers 400 to a batch with one unreadable part, and stores and lists the others.
    response = answer(400, dicom_json(referenced=[_item(A)]))
    results = settle(response, [A, B], WHERE)
    assert results[A].outcome is Outcome.STORED
    assert results[B] == InstanceResult(Outcome.PERMANENT, f"{WHERE} answered HTTP 400 Reason")


def test_duplicate_uids_in_a_request_are_settled_once() -> None:
    assert list(settle(answer(200), [A, A, B], WHERE)) == [A, B]


def test_the_report_is_read_from_dicom_xml() -> None:
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">{B}</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">43264</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">{A}</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
</NativeDicomModel>""".encode()
    report = parse_report("application/dicom+xml; charset=utf-8", xml)
    assert report.referenced == {A: None}
    assert report.failed == {B: 0xA900}


def test_a_report_given_as_a_json_array_of_one_dataset_is_read() -> None:
    body = json.dumps([json.loads(dicom_json(failed=[_item(A, "00081197", 0xA900)]))]).encode()
    assert parse_report("application/dicom+json", body).failed == {A: 0xA900}


@pytest.mark.parametrize("body", [b"<html>oops", b"{not json", b"[1, 2]", b'{"00081199": {"Value": "x"}}'])
def test_an_unreadable_body_is_an_empty_report(body: bytes) -> None:
    assert parse_report("application/dicom+json", body).empty


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0xA700, Outcome.TRANSIENT),
        (0xA7FF, Outcome.TRANSIENT),
        (0x0110, Outcome.TRANSIENT),
        (0x0111, Outcome.DUPLICATE),
        (0xB007, Outcome.STORED),
        (0xA900, Outcome.PERMANENT),
        (0xC000, Outcome.PERMANENT),
        (0x0122, Outcome.PERMANENT),
        (None, Outcome.PERMANENT),
    ],
)
def test_failure_reasons_are_classified(code: int | None, outcome: Outcome) -> None:
    assert classify_failure(code) is outcome


def test_reasons_are_described_in_hexadecimal_with_their_name() -> None:
    assert describe_reason(0xA701) == "0xA701 (Out of resources)"
    assert describe_reason(0xC0FF) == "0xC0FF (Cannot understand)"
    assert describe_reason(0x0213) == "0x0213 (Failure)"
    assert describe_reason(None) == "no reason given"
