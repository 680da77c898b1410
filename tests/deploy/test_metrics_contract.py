"""The metrics contract: what the dashboard and the alert rules query is what the services export.

The whole gateway runs with `karnak up` (every installed service, as processes) against real peers: a
DCMTK storescp, Orthanc with DICOMweb for the stow-sender, the fake Kheops API of the tests for the
kheops-sharer, an SMTP server (aiosmtpd) for the notifier. A few instances are sent with storescu; then
each service's /metrics is scraped, its counters must have moved, and every karnak_* metric named in
deploy/grafana/dashboards/karnak.json and deploy/prometheus/rules.yml must be one that a service exports.
rabbitmq_* names are checked against the names RabbitMQ's prometheus plugin exports (listed below).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from karnak_dicom.testing import StudyFiles, make_study
from karnak_shared.cli import services
from karnak_shared.config import parse_config
from karnak_shared.headers import basic_authorization, karnak_form
from tests.conftest import gateway_config, register_topology
from tests.deploy.test_deploy_grafana import dashboard_expressions, metric_names
from tests.deploy.test_deploy_prometheus import rule_expressions
from tests.support.kheops import FakeKheops, Token
from tests.support.orthanc import Orthanc
from tests.support.servers import Gateway, StoreSCP, free_port, metric_value, storescu, wait_until

pytestmark = pytest.mark.integration

# Metric names of RabbitMQ's rabbitmq_prometheus plugin on /metrics with
# prometheus.return_per_object_metrics = true (queue metrics labelled vhost and queue), as a RabbitMQ
# 3.10.8 node exported them; 3.13 exports them under the same names. The queue metrics, then the others
# a gateway dashboard could use.
RABBITMQ_METRICS = frozenset(
    """
    rabbitmq_queue_messages rabbitmq_queue_messages_ready rabbitmq_queue_messages_unacked
    rabbitmq_queue_consumers rabbitmq_queue_consumer_capacity rabbitmq_queue_consumer_utilisation
    rabbitmq_queue_messages_bytes rabbitmq_queue_messages_ready_bytes rabbitmq_queue_messages_unacked_bytes
    rabbitmq_queue_messages_ram rabbitmq_queue_messages_ram_bytes rabbitmq_queue_messages_ready_ram
    rabbitmq_queue_messages_unacked_ram rabbitmq_queue_messages_persistent rabbitmq_queue_messages_persistent_bytes
    rabbitmq_queue_messages_paged_out rabbitmq_queue_messages_paged_out_bytes rabbitmq_queue_head_message_timestamp
    rabbitmq_queue_messages_published_total rabbitmq_queue_process_memory_bytes rabbitmq_queue_process_reductions_total
    rabbitmq_queue_disk_reads_total rabbitmq_queue_disk_writes_total rabbitmq_queues
    rabbitmq_queues_declared_total rabbitmq_queues_created_total rabbitmq_queues_deleted_total
    rabbitmq_connections rabbitmq_channels rabbitmq_consumers rabbitmq_identity_info rabbitmq_build_info
    rabbitmq_alarms_file_descriptor_limit rabbitmq_alarms_free_disk_space_watermark
    rabbitmq_alarms_memory_used_watermark
    rabbitmq_disk_space_available_bytes rabbitmq_process_resident_memory_bytes rabbitmq_resident_memory_limit_bytes
    rabbitmq_global_messages_received_total rabbitmq_global_messages_routed_total
    rabbitmq_global_messages_delivered_total rabbitmq_global_messages_acknowledged_total
    rabbitmq_global_messages_confirmed_total rabbitmq_global_messages_redelivered_total
    rabbitmq_global_messages_unroutable_returned_total rabbitmq_global_messages_unroutable_dropped_total
    rabbitmq_global_messages_dead_lettered_delivery_limit_total rabbitmq_global_messages_dead_lettered_expired_total
    rabbitmq_global_messages_dead_lettered_rejected_total rabbitmq_global_messages_dead_lettered_maxlen_total
    rabbitmq_global_messages_dead_lettered_confirmed_total rabbitmq_global_consumers rabbitmq_global_publishers
    """.split()
)

# What each service must have counted after the run, as (metric, labels) whose value must be > 0.
MOVED: dict[str, list[tuple[str, dict[str, str]]]] = {
    "receiver": [
        ("karnak_instances_received_total", {"outcome": "accepted"}),
        ("karnak_received_bytes_total", {}),
        ("karnak_intake_seconds_count", {}),
    ],
    "processor": [
        ("karnak_instances_routed_total", {"destination": "pacs", "outcome": "queued"}),
        ("karnak_processing_seconds_count", {}),
    ],
    "dicom-sender": [
        ("karnak_instances_sent_total", {"destination": "pacs", "outcome": "sent"}),
        ("karnak_sent_bytes_total", {"destination": "pacs"}),
        ("karnak_delivery_seconds_count", {"destination": "pacs"}),
        ("karnak_instance_transit_seconds_count", {"destination": "pacs"}),
    ],
    "stow-sender": [
        ("karnak_instances_sent_total", {"destination": "web", "outcome": "sent"}),
        ("karnak_sent_bytes_total", {"destination": "web"}),
        ("karnak_stow_requests_total", {"destination": "web", "status": "200"}),
        ("karnak_stow_request_seconds_count", {"destination": "web"}),
        ("karnak_instance_transit_seconds_count", {"destination": "web"}),
        ("karnak_stow_batch_instances_count", {"destination": "web"}),
        ("karnak_kheops_share_requests_total", {"destination": "web"}),
    ],
    "kheops-sharer": [("karnak_kheops_shares_total", {"destination": "web", "outcome": "shared"})],
    "notifier": [
        ("karnak_notification_events_total", {"destination": "pacs", "kind": "sent"}),
        ("karnak_notifications_sent_total", {"destination": "pacs", "outcome": "sent"}),
    ],
    "monitor": [("karnak_monitor_events_total", {"kind": "sent", "outcome": "counted"})],
}
# The connections each service keeps to RabbitMQ (karnak_broker_connected{service, role}).
BROKER_ROLES = {
    "receiver": ["publisher"],
    "processor": ["publisher", "consumer"],
    "dicom-sender": ["publisher", "consumer"],
    "stow-sender": ["publisher", "consumer"],
    "kheops-sharer": ["publisher", "consumer"],
    "notifier": ["consumer"],
    "monitor": ["publisher", "consumer"],
}
SOURCE_TOKEN, ALBUM_TOKEN = "contract-source-token", "contract-album-token"


class Inbox:
    """aiosmtpd's handler: keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(bytes(envelope.content))
        return "250 OK"


@dataclass
class Run:
    gateway: Gateway
    study: StudyFiles
    running: list[str]
    inbox: Inbox | None
    scraped: dict[str, str] = field(default_factory=dict)


def _smtp_server(port: int, inbox: Inbox) -> Any:
    try:
        from aiosmtpd.controller import Controller
    except ImportError as exc:
        pytest.fail(
            f"the notifier's counters need an SMTP server: `.venv/bin/pip install aiosmtpd` ({exc})", pytrace=False
        )
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("metrics-contract")
    prefix = f"karnak-test-metrics-{workdir.name[-6:]}-{free_port()}"
    installed = services()
    running = [name for name in MOVED if name in installed]
    stoppers: list[Any] = []
    pacs = StoreSCP("PACS_A", free_port(), workdir / "pacs").start()
    stoppers.append(pacs.stop)
    dicom: dict[str, Any] = {
        "id": "pacs",
        "type": "dicom",
        "ae_title": "PACS_A",
        "hostname": "127.0.0.1",
        "port": pacs.port,
    }
    destinations = [dicom]
    overrides: dict[str, Any] = {"database": {"url": f"sqlite:///{workdir / 'karnak.db'}"}}
    inbox: Inbox | None = None
    try:
        if "notifier" in running:
            inbox = Inbox()
            smtp_port = free_port()
            stoppers.append(_smtp_server(smtp_port, inbox).stop)
            dicom["notifications"] = {"emails": ["team@hospital.example"], "interval": 1}
            overrides["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "sender": "karnak@hospital.example"}
        if "stow-sender" in running:
            try:
                orthanc = Orthanc(workdir / "orthanc").start()
            except RuntimeError as exc:
                pytest.fail(str(exc), pytrace=False)
            stoppers.append(orthanc.stop)
            headers = workdir / "orthanc-headers.secret"
            headers.write_text(karnak_form({"Authorization": basic_authorization(orthanc.user, orthanc.password)}))
            web: dict[str, Any] = {
                "id": "web",
                "type": "stow",
                "url": orthanc.stow_url,
                "headers": f"${{file:{headers}}}",
            }
            if "kheops-sharer" in running:
                kheops = FakeKheops(
                    tokens={SOURCE_TOKEN: Token(frozenset({"read", "send"})), ALBUM_TOKEN: Token(frozenset({"write"}))}
                )
                stoppers.append(kheops.stop)
                web["kheops_albums"] = [
                    {"url_api": kheops.url_api, "token_source": SOURCE_TOKEN, "token_destination": ALBUM_TOKEN}
                ]
            destinations.append(web)
        raw = gateway_config(amqp_url, prefix, workdir, destinations, **overrides)
        raw["metrics"]["ports"] = {name: free_port() for name in running}
        register_topology(amqp_url, parse_config(json.dumps(raw)))
        gateway = Gateway(raw, workdir)
        study = make_study(workdir / "study", ct=3, mr=3, multiframe=0, large=0, compressed=0)
        gateway.start("--only", *running)
        stoppers.insert(0, gateway.stop)
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        result = Run(gateway, study, running, inbox)
        for name in running:
            for metric, labels in MOVED[name]:
                wait_until(
                    lambda n=name, m=metric, lb=labels: metric_value(gateway.metrics(n), m, **lb) > 0,
                    60,
                    f"{metric}{labels} of {name} (see {gateway.log_path})",
                )
        result.scraped = {name: gateway.metrics(name) for name in running}
        yield result
    finally:
        for stop in stoppers:
            stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        for queue in (f"{prefix}.notifier", f"{prefix}.kheops"):
            connection.channel().queue_delete(queue)
        connection.close()


def exported_names(scrapes: dict[str, str]) -> set[str]:
    """Every series name the scrapes declare: histograms as _bucket/_sum/_count, counters with _total."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}  # fmt: skip
    names: set[str] = set()
    for text in scrapes.values():
        for family in text_string_to_metric_families(text):
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
            names |= {sample.name for sample in family.samples}
    return names


def used_names(prefix: str) -> dict[str, set[str]]:
    """Metric names with this prefix, by where they are queried."""
    return {
        "dashboard": {n for e in dashboard_expressions() for n in metric_names(e) if n.startswith(prefix)},
        "rules": {n for e in rule_expressions() for n in metric_names(e) if n.startswith(prefix)},
    }


def test_the_study_went_through_every_running_service(run: Run) -> None:
    assert {"receiver", "processor", "dicom-sender"} <= set(run.running)
    assert set(run.running) == set(MOVED) & set(services())


@pytest.mark.parametrize("service", list(MOVED))
def test_each_service_counted_what_it_did(service: str, run: Run) -> None:
    if service not in run.running:
        pytest.fail(f"{service} is not installed: `.venv/bin/pip install -e ./services/{service}`", pytrace=False)
    text = run.scraped[service]
    for metric, labels in MOVED[service]:
        assert metric_value(text, metric, **labels) > 0, f"{service}: {metric}{labels} did not move"


def test_every_instance_was_counted_once_on_its_way(run: Run) -> None:
    instances = len(run.study.paths)
    assert metric_value(run.scraped["receiver"], "karnak_instances_received_total", outcome="accepted") == instances
    assert metric_value(run.scraped["processor"], "karnak_instances_routed_total", destination="pacs") == instances
    wait_until(
        lambda: metric_value(run.gateway.metrics("dicom-sender"), "karnak_instance_transit_seconds_count") == instances,
        30,
        "every instance's transit observed",
    )
    sender = run.gateway.metrics("dicom-sender")
    assert metric_value(sender, "karnak_instances_sent_total", destination="pacs", outcome="sent") == instances


@pytest.mark.parametrize("service", list(BROKER_ROLES))
def test_each_service_reports_its_broker_connections_up(service: str, run: Run) -> None:
    if service not in run.running:
        pytest.fail(f"{service} is not installed: `.venv/bin/pip install -e ./services/{service}`", pytrace=False)
    for role in BROKER_ROLES[service]:
        value = metric_value(run.scraped[service], "karnak_broker_connected", service=service, role=role)
        assert value == 1, f"{service} {role}"


@pytest.mark.parametrize("where", ["dashboard", "rules"])
def test_every_karnak_metric_queried_is_exported_by_a_service(where: str, run: Run) -> None:
    used = used_names("karnak_")[where]
    assert used, f"the {where} query no karnak_ metric"
    unknown = sorted(used - exported_names(run.scraped))
    assert not unknown, f"the {where} query metrics that no service exports: {unknown}"


@pytest.mark.parametrize("where", ["dashboard", "rules"])
def test_every_rabbitmq_metric_queried_is_one_rabbitmqs_plugin_exports(where: str) -> None:
    used = used_names("rabbitmq_")[where]
    assert used, f"the {where} show no queue depth"
    unknown = sorted(used - RABBITMQ_METRICS)
    assert not unknown, f"the {where} query metrics that rabbitmq_prometheus does not export: {unknown}"


def test_the_dashboard_shows_every_metric_the_gateway_exports(run: Run) -> None:
    exported = {
        family.name
        for text in run.scraped.values()
        for family in text_string_to_metric_families(text)
        # prometheus_client's *_created series are creation timestamps, nothing to show.
        if family.name.startswith("karnak_") and not family.name.endswith("_created")
    }
    queried = {
        name.removesuffix(suffix)
        for name in used_names("karnak_")["dashboard"]
        for suffix in ("_total", "_bucket", "_sum", "_count", "")
        if name.endswith(suffix)
    }
    missing = sorted(exported - queried)
    assert not missing, f"metrics of the services that no panel of the dashboard shows: {missing}"
