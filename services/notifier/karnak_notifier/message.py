"""The email of a study summary: subject, plain-text and HTML bodies (DESIGN.md sections 5 and 10)."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate

from karnak_notifier.java_format import java_format
from karnak_notifier.summary import SeriesSummary, StudySummary
from karnak_shared.config import Notifications

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def subject(summary: StudySummary, notifications: Notifications) -> str:
    """Error prefix if an instance failed, else rejection prefix if one was rejected, then the pattern.

    Each prefix is followed by one space; the pattern is filled with the configured subject values as
    Java's `String.format` does (a missing value is empty). Line breaks become spaces: a header is one line.
    """
    if summary.failed:
        prefix = notifications.error_prefix
    elif summary.rejected:
        prefix = notifications.rejection_prefix
    else:
        prefix = ""
    values = [summary.value(keyword) for keyword in notifications.subject_values]
    text = (f"{prefix} " if prefix else "") + java_format(notifications.subject_pattern, values)
    return _CONTROL.sub(" ", text)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if re.fullmatch(r"\d{8}", value) else value


def _series_title(series: SeriesSummary) -> str:
    return series.description or "(no description)"


def _study_lines(summary: StudySummary) -> list[tuple[str, str]]:
    return [
        ("Patient ID", summary.patient_id),
        ("Study description", summary.study_description),
        ("Study date", _date(summary.study_date)),
        ("Study Instance UID", summary.study_uid or ""),
    ]


def _totals(summary: StudySummary) -> str:
    return f"{summary.sent} sent, {summary.failed} failed, {summary.rejected} rejected"


def plain_text(summary: StudySummary) -> str:
    """The plain-text body."""
    lines = [f"Transfers of a study from {summary.forward_node} to {summary.destination}", ""]
    lines += [f"{label}: {value}" for label, value in _study_lines(summary)]
    lines += ["", f"Instances: {_totals(summary)}"]
    for series in summary.series:
        lines += ["", f"Series: {_series_title(series)}"]
        lines.append(f"  Series Instance UID: {series.series_uid or ''}")
        lines.append(f"  Sent: {series.sent}, failed: {series.failed}, rejected: {series.rejected}")
        if series.reasons:
            lines.append("  Reasons:")
            lines += [f"    - {reason.kind}: {reason.text}" for reason in series.reasons]
            if series.more_reasons:
                lines.append(f"    - and {series.more_reasons} other reason(s)")
    return "\n".join(lines) + "\n"


def html_body(summary: StudySummary) -> str:
    """The HTML body; every value is escaped."""
    e = html.escape
    study_rows = "".join(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in _study_lines(summary))
    series_rows = []
    for series in summary.series:
        reasons = "".join(f"<li>{e(reason.kind)}: {e(reason.text)}</li>" for reason in series.reasons)
        if series.more_reasons:
            reasons += f"<li>and {series.more_reasons} other reason(s)</li>"
        series_rows.append(
            f"<tr><td>{e(_series_title(series))}<br><small>{e(series.series_uid or '')}</small></td>"
            f"<td>{series.sent}</td><td>{series.failed}</td><td>{series.rejected}</td>"
            f"<td>{f'<ul>{reasons}</ul>' if reasons else ''}</td></tr>"
        )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
        f"<p>Transfers of a study from <b>{e(summary.forward_node)}</b> to <b>{e(summary.destination)}</b></p>"
        f"<table>{study_rows}</table>"
        f"<p>Instances: {e(_totals(summary))}</p>"
        '<table border="1" cellpadding="4" cellspacing="0">'
        "<tr><th>Series</th><th>Sent</th><th>Failed</th><th>Rejected</th><th>Reasons</th></tr>"
        f"{''.join(series_rows)}</table></body></html>\n"
    )


def compose(summary: StudySummary, notifications: Notifications, sender: str, event_ids: Iterable[str]) -> EmailMessage:
    """The email for one study summary, in plain text with an HTML alternative.

    Its Message-ID derives from the events it summarises, so if it ever goes out twice (its events'
    acks lost with the connection after the server took it) mail clients can recognise the copy.
    """
    message = EmailMessage()
    message["Subject"] = subject(summary, notifications)
    message["From"] = sender
    message["To"] = ", ".join(notifications.emails)
    message["Date"] = formatdate(localtime=True)
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:40]
    message["Message-ID"] = f"<{digest}.notification@{sender.rpartition('@')[2]}>"
    message.set_content(plain_text(summary))
    message.add_alternative(html_body(summary), subtype="html")
    return message
