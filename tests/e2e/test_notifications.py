"""End to end: storescu -> the whole gateway (`karnak up`) -> PACS peers, and the notifier's emails.

One study of three series goes to two notified destinations: one accepts two series and rejects the
third by its condition, the other refuses every instance. Each destination's people get one email for
the study, with the values the destination received and the right prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pika
import pytest

from karnak_dicom.testing import ACCESSION_NUMBER, PATIENT_ID, PATIENT_NAME, StudyFiles, make_study
from karnak_shared.config import parse_config
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.notifier.test_notifier import MailServer, ReceivedMail
from tests.support.servers import (
    Gateway,
    ScriptedSCP,
    StoreSCP,
    free_port,
    metric_value,
    storescu,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.e2e


@dataclass
class Run:
    gateway: Gateway
    study: StudyFiles
    mail: MailServer
    pacs: StoreSCP
    send_returncode: int
    send_output: str


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("notifications")
    prefix = f"karnak-test-e2e-mail-{workdir.name[-6:]}-{free_port()}"
    pacs = StoreSCP("PACS_R", free_port(), workdir / "pacs").start()
    broken = ScriptedSCP("PACS_X", free_port(), status=0xA900).start()
    mail = MailServer().start()
    notifications = {"emails": "team@hospital.org, pi@university.ch", "interval": 2}
    destinations: list[dict[str, Any]] = [
        {
            "id": "research-pacs",
            "type": "dicom",
            "ae_title": "PACS_R",
            "hostname": "127.0.0.1",
            "port": pacs.port,
            "condition": "!tagValueContains(#Tag.SeriesDescription, 'SC JPEG')",
            "notifications": notifications,
        },
        {
            "id": "broken-pacs",
            "type": "dicom",
            "ae_title": "PACS_X",
            "hostname": "127.0.0.1",
            "port": broken.port,
            "notifications": {**notifications, "error_prefix": "**ERROR**"},
        },
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations)
    config["smtp"] = {"host": "127.0.0.1", "port": mail.port, "sender": "karnak@hospital.org"}
    config["metrics"]["ports"]["notifier"] = free_port()
    parsed = parse_config(json.dumps(config))
    register_topology(amqp_url, parsed)
    gateway = Gateway(config, workdir)
    study = make_study(workdir / "study", ct=3, mr=2, multiframe=0, large=0, compressed=1)
    try:
        gateway.start()  # waits for every service with a metrics port: the notifier's queue then exists
        # The receiver's /readyz can answer before its listener is bound (no check registered yet).
        wait_for_port(gateway.listener_port)
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        yield Run(gateway, study, mail, pacs, sent.returncode, sent.stdout + sent.stderr)
    finally:
        gateway.stop()
        mail.stop()
        pacs.stop()
        broken.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.queue_delete(replace(Topology.from_config(parsed), notifier=True).notifier_queue)
        connection.close()


def _emails(run: Run) -> dict[str, ReceivedMail]:
    assert run.send_returncode == 0, run.send_output
    wait_until(lambda: len(run.mail.received) >= 2, 60, f"two emails (gateway log: {run.gateway.log_path})")
    return {("broken" if "**ERROR**" in m.subject else "research"): m for m in run.mail.received}


def test_each_notified_destination_gets_one_email_for_the_study(run: Run) -> None:
    _emails(run)
    wait_until(lambda: len(run.pacs.files()) >= 5, 30, "the accepted series at the PACS")
    metrics = run.gateway.metrics("notifier")
    wait_until(
        lambda: (
            metric_value(run.gateway.metrics("notifier"), "karnak_notification_events_held", destination="broken-pacs")
            == 0
        ),
        10,
        "every event settled",
    )
    assert len(run.mail.received) == 2, [m.subject for m in run.mail.received]
    for destination in ("research-pacs", "broken-pacs"):
        assert metric_value(metrics, "karnak_notifications_sent_total", destination=destination, outcome="sent") == 1


def test_a_rejected_series_gives_the_rejection_prefix_and_its_reason(run: Run) -> None:
    email = _emails(run)["research"]
    assert email.subject == f"REJECTED [Karnak Notification] {PATIENT_ID} RESEARCH BRAIN"
    assert email.recipients == ["team@hospital.org", "pi@university.ch"]
    text = email.text
    assert "from KARNAK-GW to research-pacs" in text
    assert f"Study Instance UID: {run.study.study_uid}" in text
    assert "Instances: 5 sent, 0 failed, 1 rejected" in text
    assert "Series: CT AXIAL" in text and "Series: MR T1" in text
    assert "Series: SC JPEG" in text
    assert "    - rejected: Condition of destination research-pacs is not met" in text


def test_failed_instances_give_the_error_prefix_and_the_pacs_answer(run: Run) -> None:
    email = _emails(run)["broken"]
    assert email.subject == f"**ERROR** [Karnak Notification] {PATIENT_ID} RESEARCH BRAIN"
    assert "Instances: 0 sent, 6 failed, 0 rejected" in email.text
    assert "0xA900" in email.text


def test_the_gateway_log_shows_no_patient_data(run: Run) -> None:
    _emails(run)
    log = run.gateway.log()
    assert "notification.sent" in log
    for value in (PATIENT_ID, PATIENT_NAME, ACCESSION_NUMBER, "RESEARCH BRAIN"):
        assert value not in log, f"the gateway's log shows {value!r}"
