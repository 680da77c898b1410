"""End to end: storescu -> gateway (`karnak up`) -> stow-sender -> Orthanc (DICOMweb, basic auth), and Kheops shares.

The gateway runs every installed service as processes. A study sent with storescu must land in Orthanc,
which is checked through Orthanc's REST API. Kheops is a fake API of the tests (tests/support/kheops.py);
a second Orthanc stands in for its DICOMweb side.
- Through the gateway: a de-identifying destination with two albums, one with a condition on attributes
  that de-identification changes: the copies land de-identified, and each series is shared with its UIDs
  as sent, into the albums whose condition held on the original attributes.
- From the stow-sender's queue: send messages carrying album indexes are published there directly, to
  check the sharing once per (album, series) on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pika
import pytest
from pydicom import dcmread

from karnak_dicom.testing import PATIENT_ID, PATIENT_NAME, StudyFiles, dataset_bytes, make_study
from karnak_shared.blobstore import DirectoryBlobStore
from karnak_shared.broker import Publisher
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.envelope import Envelope
from karnak_shared.headers import basic_authorization, karnak_form
from karnak_shared.payload import store_payload
from karnak_shared.service.authentication import Signer, digest_of
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_backbone import EventTap
from tests.support.kheops import Call, FakeKheops, Token
from tests.support.orthanc import Orthanc
from tests.support.servers import Gateway, free_port, metric_value, storescu, wait_until

pytestmark = pytest.mark.e2e

SOURCE, ALBUM_A, ALBUM_B = "src-token-e2e-1", "album-a-token-e2e", "album-b-token-e2e"
PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _hmac(value: str) -> bytes:
    return hmac.new(bytes.fromhex(SECRET), value.encode("ascii"), hashlib.sha256).digest()


def hashed_uid(uid: str) -> str:
    """DESIGN.md section 7: the UID a de-identifying destination sends for `uid`."""
    digest = bytearray(_hmac(uid)[:16])
    digest[6] = digest[6] & 0x0F | 0x40
    digest[8] = digest[8] & 0x3F | 0x80
    return "2.25." + str(int.from_bytes(digest, "big"))


def pseudonym() -> str:
    return _hmac(PATIENT_ID)[:8].hex().upper()


@dataclass
class Run:
    gateway: Gateway
    config: GatewayConfig
    topology: Topology
    orthanc: Orthanc
    kheops: FakeKheops
    deid_orthanc: Orthanc
    deid_kheops: FakeKheops
    events: EventTap
    study: StudyFiles
    sent: str
    returncode: int
    workdir: Path
    amqp_url: str


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("stow-kheops")
    prefix = f"karnak-test-e2e-stow-{workdir.name[-6:]}-{free_port()}"
    try:
        orthanc = Orthanc(workdir / "orthanc").start()
        deid_orthanc = Orthanc(workdir / "orthanc-deid").start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    tokens = {
        SOURCE: Token(frozenset({"read", "send"})),
        ALBUM_A: Token(frozenset({"write"})),
        ALBUM_B: Token(frozenset({"read", "write"})),
    }
    kheops, deid_kheops = FakeKheops(tokens=dict(tokens)), FakeKheops(tokens=dict(tokens))
    # The Karnak form of the header, kept in a secret file as an operator would (never inline in the file).
    secret = workdir / "orthanc-headers.secret"
    secret.write_text(karnak_form({"Authorization": basic_authorization(orthanc.user, orthanc.password)}))
    destinations = [
        {"id": "orthanc", "type": "stow", "url": orthanc.stow_url, "headers": f"${{file:{secret}}}"},
        {
            "id": "kheops",
            "type": "stow",
            "url": orthanc.stow_url,
            "headers": f"${{file:{secret}}}",
            # Only the messages the test publishes itself go here: the gateway's study is rejected.
            "condition": "tagValueIsPresent(#Tag.StudyDescription, 'NOT THIS STUDY')",
            "kheops_albums": [
                {"url_api": kheops.url_api, "token_source": SOURCE, "token_destination": ALBUM_A},
                {
                    "url_api": kheops.url_api,
                    "token_source": SOURCE,
                    "token_destination": ALBUM_B,
                    "condition": "tagValueContains(#Tag.SeriesDescription, 'MR')",
                },
            ],
        },
        {
            "id": "kheops-deid",
            "type": "stow",
            "url": deid_orthanc.stow_url,
            "headers": f"${{file:{secret}}}",
            "deidentification": {"project": "research"},
            "kheops_albums": [
                {"url_api": deid_kheops.url_api, "token_source": SOURCE, "token_destination": ALBUM_A},
                {
                    "url_api": deid_kheops.url_api,
                    "token_source": SOURCE,
                    "token_destination": ALBUM_B,
                    # Both attributes are changed or removed by the basic profile: only the original matches.
                    "condition": f"tagValueIsPresent(#Tag.PatientID, '{PATIENT_ID}') "
                    "&& tagValueContains(#Tag.SeriesDescription, 'MR')",
                },
            ],
        },
    ]
    raw = gateway_config(amqp_url, prefix, workdir, destinations)
    raw["projects"] = [{"name": "research", "secret": SECRET, "profile": str(PROFILE)}]
    raw["database"] = {"url": f"sqlite:///{workdir / 'karnak.db'}"}
    raw["metrics"]["ports"].update({"stow-sender": free_port(), "kheops-sharer": free_port()})
    config = parse_config(json.dumps(raw))
    topology = register_topology(amqp_url, config)
    gateway = Gateway(raw, workdir)
    tap = EventTap(amqp_url, f"{prefix}.events")
    study = make_study(workdir / "study", ct=20, mr=6, multiframe=1, large=1, compressed=1)
    try:
        gateway.start()
        result = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        yield Run(
            gateway,
            config,
            topology,
            orthanc,
            kheops,
            deid_orthanc,
            deid_kheops,
            tap,
            study,
            result.stdout + result.stderr,
            result.returncode,
            workdir,
            amqp_url,
        )
    finally:
        gateway.stop()
        tap.close()
        orthanc.stop()
        deid_orthanc.stop()
        kheops.stop()
        deid_kheops.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete(f"{prefix}.kheops")
        connection.close()


def _uids(paths: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def test_a_study_sent_through_the_gateway_lands_in_orthanc_unchanged(run: Run) -> None:
    assert run.returncode == 0, run.sent
    expected = _uids(run.study.paths)
    wait_until(lambda: len(run.events.of("sent", "orthanc")) >= len(expected), 90, "every instance sent")
    assert run.orthanc.instance_count() == len(expected)
    assert run.orthanc.sop_instance_uids() == expected
    tags = run.orthanc.instance_tags()
    assert {t["StudyInstanceUID"] for t in tags.values()} == {run.study.study_uid}
    for path in (run.study.paths[0], run.study.paths[-1], run.study.paths[-2]):
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        stored = run.orthanc.file_bytes(uid)
        assert dataset_bytes_of(stored) == dataset_bytes(path), f"bytes of {uid} changed on the way"
    assert run.events.of("failed", "orthanc") == []


def dataset_bytes_of(part10: bytes) -> bytes:
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


def test_the_stow_sender_batches_and_counts_what_it_sent(run: Run) -> None:
    count = len(run.study.paths)
    wait_until(lambda: len(run.events.of("sent", "orthanc")) >= count, 90, "every instance sent")
    metrics = run.gateway.metrics("stow-sender")
    assert metric_value(metrics, "karnak_instances_sent_total", destination="orthanc", outcome="sent") >= count
    requests = metric_value(metrics, "karnak_stow_batch_instances_count", destination="orthanc")
    assert 0 < requests < count, "one request per instance: nothing was batched"
    assert metric_value(metrics, "karnak_stow_requests_total", destination="orthanc", status="200") == requests
    assert metric_value(metrics, "karnak_broker_connected", service="stow-sender") == 2


def test_the_destination_condition_keeps_the_gateways_study_away_from_the_kheops_destination(run: Run) -> None:
    count = len(run.study.paths)
    wait_until(lambda: len(run.events.of("rejected", "kheops")) >= count, 60, "rejections")
    assert run.events.of("sent", "kheops") == []


def test_a_de_identifying_destination_gets_pseudonymised_copies_in_orthanc(run: Run) -> None:
    count = len(run.study.paths)
    wait_until(lambda: len(run.events.of("sent", "kheops-deid")) >= count, 90, "the copies sent")
    tags = run.deid_orthanc.instance_tags()
    assert set(tags) == {hashed_uid(uid) for uid in _uids(run.study.paths)}
    for values in tags.values():
        assert values["PatientName"] == pseudonym()
        assert values["PatientID"] != PATIENT_ID
        assert values["StudyInstanceUID"] == hashed_uid(run.study.study_uid)
        assert PATIENT_NAME not in json.dumps(values) and PATIENT_ID not in json.dumps(values)


def test_through_the_gateway_series_are_shared_with_their_uids_as_sent_into_albums_matched_on_originals(
    run: Run,
) -> None:
    series: dict[str, str] = {}
    for path in run.study.paths:
        ds = dcmread(path, stop_before_pixels=True)
        series[str(ds.SeriesInstanceUID)] = str(ds.SeriesDescription)
    mr = [uid for uid, description in series.items() if "MR" in description]
    assert len(series) == 4 and len(mr) == 1
    wait_until(lambda: len(run.deid_kheops.calls_of("PUT")) >= len(series) + 1, 60, "one share per series and album")
    study = hashed_uid(run.study.study_uid)
    expected = sorted(
        [
            Call("PUT", f"/api/studies/{study}/series/{hashed_uid(uid)}", f"Bearer {ALBUM_A}", f"Bearer {SOURCE}", {})
            for uid in series
        ]
        + [
            Call("PUT", f"/api/studies/{study}/series/{hashed_uid(mr[0])}", f"Bearer {ALBUM_B}", f"Bearer {SOURCE}", {})
        ],
        key=lambda c: (c.authorization or "", c.path),
    )
    assert sorted(run.deid_kheops.calls_of("PUT"), key=lambda c: (c.authorization or "", c.path)) == expected
    # Shared as they are in the destination: the sharer shared what Orthanc (as Kheops) holds.
    stored_series = {t["SeriesInstanceUID"] for t in run.deid_orthanc.instance_tags().values()}
    assert {c.path.rsplit("/", 1)[1] for c in expected} == stored_series


def _publish(run: Run, paths: list[Path], albums: list[int]) -> None:
    """Send messages to the kheops destination's queue, as the processor writes them (album indexes matched),
    signed with the gateway's key (the stow-sender parks an unsigned message as `unauthenticated`)."""
    blobs = DirectoryBlobStore(run.config.blob_store.path)
    signer = Signer(run.config.secrets.key_bytes())
    publisher = Publisher(run.amqp_url, run.topology, confirm_timeout=10).start()
    try:
        for path in paths:
            data = path.read_bytes()
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
            body, blob = store_payload(data, blobs, run.config.blob_store.max_inline_bytes)
            envelope = Envelope(
                forward_node="KARNAK-GW",
                destination="kheops",
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                blob=blob,
                digest=digest_of(data) if blob else None,
                size=len(data),
                kheops_albums=albums,
            )
            queue = run.topology.send_queue("stow", "kheops")
            publisher.publish(run.topology.send_exchange, queue, body, signer.sign(envelope.to_headers(), body))
    finally:
        publisher.stop()


def test_each_delivered_series_is_shared_once_into_each_matching_album(run: Run) -> None:
    kheops_study = make_study(run.workdir / "kheops-study", ct=8, mr=5, multiframe=0, large=0, compressed=0)
    ct = [p for p in kheops_study.paths if p.name.startswith("ct")]
    mr = [p for p in kheops_study.paths if p.name.startswith("mr")]
    # Album 1's condition holds for the MR series only, so the processor would match [0] and [0, 1].
    _publish(run, ct, [0])
    _publish(run, mr, [0, 1])
    ct_series = str(dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID)
    mr_series = str(dcmread(mr[0], stop_before_pixels=True).SeriesInstanceUID)
    study = kheops_study.study_uid

    wait_until(lambda: len(run.events.of("sent", "kheops")) >= len(kheops_study.paths), 60, "kheops study sent")
    assert _uids(kheops_study.paths) <= run.orthanc.sop_instance_uids()
    wait_until(lambda: len(run.kheops.calls_of("PUT")) >= 3, 30, "three shares")

    def order(call: Call) -> tuple[str, str]:
        return (call.authorization or "", call.path)

    assert sorted(run.kheops.calls_of("PUT"), key=order) == sorted(
        [
            Call("PUT", f"/api/studies/{study}/series/{ct_series}", f"Bearer {ALBUM_A}", f"Bearer {SOURCE}", {}),
            Call("PUT", f"/api/studies/{study}/series/{mr_series}", f"Bearer {ALBUM_A}", f"Bearer {SOURCE}", {}),
            Call("PUT", f"/api/studies/{study}/series/{mr_series}", f"Bearer {ALBUM_B}", f"Bearer {SOURCE}", {}),
        ],
        key=order,
    )
    posts = run.kheops.calls_of("POST")
    assert all(c.path == "/api/token/introspect" and c.authorization == f"Bearer {c.form['token']}" for c in posts)
    assert {c.form["token"] for c in posts} == {SOURCE, ALBUM_A, ALBUM_B}

    # The same series again: delivered again, but never shared twice.
    _publish(run, ct[:2], [0])
    wait_until(
        lambda: len(run.events.of("sent", "kheops")) >= len(kheops_study.paths) + 2, 60, "resent instances delivered"
    )
    metrics = run.gateway.metrics("kheops-sharer")
    wait_until(
        lambda: (
            metric_value(
                run.gateway.metrics("kheops-sharer"),
                "karnak_kheops_shares_total",
                destination="kheops",
                outcome="duplicate",
            )
            >= 1
        ),
        30,
        "the repeated share request seen as a duplicate",
    )
    assert len(run.kheops.calls_of("PUT")) == 3
    assert metric_value(metrics, "karnak_kheops_shares_total", destination="kheops", outcome="shared") == 3
    log = run.gateway.log()
    assert SOURCE not in log and ALBUM_A not in log and run.orthanc.password not in log
