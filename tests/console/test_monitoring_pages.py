"""The Monitoring pages: the tree, the dashboard, the polled partials, labels and roles.

The rows come from the monitor's recorder (as in test_monitoring_api), the pages are asked as each role.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.console.conftest import ConsoleUnderTest
from tests.console.test_monitoring_api import STUDY, filled

__all__ = ["filled"]


class Controls(HTMLParser):
    """The form controls of a page and the `for` of its labels."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[str] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            self.controls.append(str(found.get("id")))
        if tag == "label" and found.get("for"):
            self.labelled.add(str(found["for"]))


def controls_of(html: str) -> Controls:
    parser = Controls()
    parser.feed(html)
    return parser


def test_the_activity_tree_shows_destination_study_series_and_reasons_with_badges(filled: ConsoleUnderTest) -> None:
    page = filled.get("/monitoring?range=all", role="viewer")
    assert page.status_code == 200
    html = page.text
    assert "KARNAK-GW → archive" in html and "KARNAK-GW → excluded" in html
    assert f"{STUDY}.2" in html
    assert "failed: 0xA900 (Data set does not match) (2)" in html
    assert "rejected: condition is false (2)" in html
    assert 'class="badge badge-error"' in html and 'class="badge badge-excluded"' in html
    # The worst destination comes first: archive has the failing series.
    assert html.index("KARNAK-GW → archive") < html.index("KARNAK-GW → research")
    assert 'hx-trigger="every 10s"' in html and "/monitoring/activity.part?" in html


def test_every_control_of_the_page_has_a_visible_label(filled: ConsoleUnderTest) -> None:
    for role in ("viewer", "operator"):
        found = controls_of(filled.get("/monitoring", role=role).text)
        assert found.controls, "the page has controls"
        assert [c for c in found.controls if c not in found.labelled] == []


def test_only_operators_get_the_original_identifier_filters_and_the_parked_messages_link(
    filled: ConsoleUnderTest,
) -> None:
    viewer = filled.get("/monitoring?range=all", role="viewer").text
    operator = filled.get("/monitoring?range=all", role="operator").text
    assert "f-patient-id" not in viewer and "Parked messages of this series" not in viewer
    assert "f-patient-id" in operator and "Parked messages of this series" in operator
    assert "5E2D1C" in viewer  # the research destination's patient ID as sent
    # A viewer's patient ID in the address is dropped, not searched.
    assert (
        "PAT-001" not in filled.get("/monitoring?range=all&destination=research&patient_id=PAT-001", role="viewer").text
    )
    assert (
        filled.get(
            "/monitoring/parked?forward_node=KARNAK-GW&destination=archive&series_uid=x", role="viewer"
        ).status_code
        == 403
    )


def test_the_polled_partials_and_the_dashboard_follow_the_filters(filled: ConsoleUnderTest) -> None:
    part = filled.get("/monitoring/activity.part?range=all&status=excluded", role="viewer").text
    assert "KARNAK-GW → excluded" in part and "KARNAK-GW → archive" not in part
    assert "<h1>" not in part  # the tree alone
    dashboard = filled.get("/monitoring?range=all&view=dashboard", role="viewer").text
    cells = re.findall(r"<td>(\d+)</td>", dashboard)
    # studies, series, instances, sent, errors, retries, excluded, de-identified, tag-morphed
    assert cells == ["2", "8", "15", "11", "2", "2", "2", "6", "0"]
    assert filled.get("/monitoring/dashboard.part?range=all", role="viewer").status_code == 200
    # Polled after the session ended: the page is sent to the login page, not given it as a fragment.
    polled = filled.client.get("/monitoring/activity.part", headers={"HX-Request": "true"})
    assert polled.status_code == 401 and polled.headers["HX-Redirect"] == "/login"
    opened = filled.client.get("/monitoring/activity.part", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/login"


def test_a_bad_custom_range_is_named_on_the_page(filled: ConsoleUnderTest) -> None:
    page = filled.get("/monitoring?range=custom&since=yesterday", role="viewer").text
    assert "From and To must be dates and times" in page
