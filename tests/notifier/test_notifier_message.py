"""The email of a study summary: subject prefixes and pattern, plain-text and HTML bodies."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from karnak_notifier.message import compose, html_body, plain_text, subject
from karnak_notifier.summary import Reason, SeriesSummary, StudySummary
from karnak_shared.config import Notifications

DEFAULTS = Notifications(emails=["team@hospital.org", "pi@university.ch"])


def summary(*series: SeriesSummary, **values: Any) -> StudySummary:
    fields: dict[str, Any] = {
        "destination": "research-pacs",
        "forward_node": "KARNAK-GW",
        "study_uid": "2.25.1001",
        "patient_id": "PSEUDO-7F3A",
        "study_description": "BRAIN MRI",
        "study_date": "20260101",
        "series": series or (SeriesSummary("2.25.1001.1", "T1", sent=3, failed=0, rejected=0, reasons=()),),
    }
    fields.update(values)
    return StudySummary(**fields)


def counts(sent: int = 0, failed: int = 0, rejected: int = 0, *reasons: Reason, more: int = 0) -> SeriesSummary:
    return SeriesSummary("2.25.1001.9", "T2", sent, failed, rejected, tuple(reasons), more)


# --- subject ----------------------------------------------------------------------------------------


def test_an_all_sent_study_has_no_prefix() -> None:
    assert subject(summary(counts(sent=5)), DEFAULTS) == "[Karnak Notification] PSEUDO-7F3A BRAIN MRI"


def test_a_failed_instance_puts_the_error_prefix_and_one_space_first() -> None:
    text = subject(summary(counts(sent=5, failed=1, rejected=2)), DEFAULTS)
    assert text == "ERROR [Karnak Notification] PSEUDO-7F3A BRAIN MRI"


def test_a_rejected_instance_without_failures_puts_the_rejection_prefix_first() -> None:
    text = subject(summary(counts(sent=5, rejected=2)), DEFAULTS)
    assert text == "REJECTED [Karnak Notification] PSEUDO-7F3A BRAIN MRI"


def test_configured_prefixes_are_used() -> None:
    notifications = DEFAULTS.model_copy(update={"error_prefix": "**ERROR**", "rejection_prefix": "[refused]"})
    assert subject(summary(counts(failed=1)), notifications).startswith("**ERROR** [Karnak")
    assert subject(summary(counts(rejected=1)), notifications).startswith("[refused] [Karnak")


def test_an_empty_prefix_adds_no_space() -> None:
    notifications = DEFAULTS.model_copy(update={"error_prefix": ""})
    assert subject(summary(counts(failed=1)), notifications) == "[Karnak Notification] PSEUDO-7F3A BRAIN MRI"


def test_the_default_pattern_cuts_the_study_description_at_thirty_characters() -> None:
    long = summary(study_description="CT THORAX ABDOMEN PELVIS WITH CONTRAST, DELAYED PHASE")
    assert subject(long, DEFAULTS) == "[Karnak Notification] PSEUDO-7F3A CT THORAX ABDOMEN PELVIS WITH "


def test_the_subject_values_are_the_configured_ones_in_their_order() -> None:
    notifications = DEFAULTS.model_copy(
        update={"subject_pattern": "%s / %s / %s", "subject_values": ["StudyDate", "StudyInstanceUID", "PatientID"]}
    )
    assert subject(summary(), notifications) == "20260101 / 2.25.1001 / PSEUDO-7F3A"


def test_a_missing_value_is_empty_in_the_subject() -> None:
    assert subject(summary(study_description=""), DEFAULTS) == "[Karnak Notification] PSEUDO-7F3A "


def test_line_breaks_never_reach_the_subject_header() -> None:
    text = subject(summary(study_description="TWO\r\nLINES"), DEFAULTS)
    assert "\n" not in text and "\r" not in text
    assert text.endswith("TWO LINES")


# --- bodies -----------------------------------------------------------------------------------------


def test_the_plain_text_body_names_source_destination_study_and_every_series() -> None:
    body = plain_text(
        summary(
            SeriesSummary("2.25.1.1", "T1 AXIAL", sent=4, failed=1, rejected=0, reasons=(Reason("failed", "0xA900"),)),
            SeriesSummary(
                "2.25.1.2", "", sent=0, failed=0, rejected=2, reasons=(Reason("rejected", "cond"),), more_reasons=3
            ),
        )
    )
    assert "from KARNAK-GW to research-pacs" in body
    assert "Patient ID: PSEUDO-7F3A" in body
    assert "Study description: BRAIN MRI" in body
    assert "Study date: 2026-01-01" in body
    assert "Study Instance UID: 2.25.1001" in body
    assert "Instances: 4 sent, 1 failed, 2 rejected" in body
    assert "Series: T1 AXIAL\n  Series Instance UID: 2.25.1.1\n  Sent: 4, failed: 1, rejected: 0" in body
    assert "    - failed: 0xA900" in body
    assert "Series: (no description)" in body
    assert "    - rejected: cond\n    - and 3 other reason(s)" in body


def test_the_html_body_escapes_every_value() -> None:
    hostile = "<script>alert('x')</script> & co"
    body = html_body(
        summary(
            SeriesSummary("2.25.1.1", hostile, sent=1, failed=1, rejected=0, reasons=(Reason("failed", hostile),)),
            patient_id=hostile,
            study_description=hostile,
            forward_node="<NODE>",
            destination="dest&1",
        )
    )
    assert "<script>" not in body
    assert body.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co") == 4
    assert "&lt;NODE&gt;" in body and "dest&amp;1" in body


def test_the_html_body_has_one_row_per_series_with_its_counts() -> None:
    body = html_body(summary(counts(7, 2, 1, Reason("failed", "boom"))))
    assert "<td>7</td><td>2</td><td>1</td>" in body
    assert "<li>failed: boom</li>" in body


# --- the email ----------------------------------------------------------------------------------------


def reparsed(message: EmailMessage) -> EmailMessage:
    parsed = message_from_bytes(message.as_bytes(policy=policy.SMTP), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_the_email_goes_from_the_sender_to_every_address_in_text_and_html() -> None:
    message = reparsed(compose(summary(counts(failed=1)), DEFAULTS, "karnak@hospital.org", ["a", "b"]))
    assert message["From"] == "karnak@hospital.org"
    assert message["To"] == "team@hospital.org, pi@university.ch"
    assert message["Subject"] == "ERROR [Karnak Notification] PSEUDO-7F3A BRAIN MRI"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "Instances: 0 sent, 1 failed, 0 rejected" in text.get_content()
    assert "<table" in html.get_content()


def test_non_ascii_values_survive_the_encoding() -> None:
    message = reparsed(compose(summary(study_description="IRM cérébrale"), DEFAULTS, "k@h.org", ["a"]))
    assert message["Subject"].endswith("IRM cérébrale")
    text = message.get_body(("plain",))
    assert text is not None and "IRM cérébrale" in text.get_content()


def test_the_message_id_depends_only_on_the_events_summarised() -> None:
    def message_id(ids: list[str]) -> str:
        return str(compose(summary(), DEFAULTS, "karnak@hospital.org", ids)["Message-ID"])

    assert message_id(["a", "b"]) == message_id(["b", "a"])
    assert message_id(["a", "b"]) != message_id(["a", "c"])
    assert message_id(["a"]).endswith("@hospital.org>")
