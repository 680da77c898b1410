"""Bad DICOM over the wire, against the whole gateway (`karnak up`): malformed datasets, a fuzzed corpus,
SOP classes it must refuse, odd character sets and garbage instead of PDUs.

Every instance sent has a SOP Instance UID of its own, and the test accounts for each one: refused by the
receiver (an error status), parked by the processor with its reason (the dead-letter queue), or settled
for each destination by a `transfer.*` event (sent, rejected, or failed and parked). What a destination
receives unchanged must be the bytes sent; a de-identified copy must not carry the original name. At the
end no service crashed or restarted, no patient value of the input reached the log, and a good instance
still goes through.

Two destinations, both recording SCPs of the test: `plain` (bytes forwarded as they came) and `deid`
(basic-profile de-identification).
"""

from __future__ import annotations

import io
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    AllTransferSyntaxes,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

from karnak_dicom.deid import parse_project_secret, uid_hash
from karnak_dicom.testing import PATIENT_BIRTH_DATE, PATIENT_ID, PATIENT_NAME, make_instance, with_image
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.deadletters import DeadLetterQueue, ParkedMessage
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_backbone import EventTap
from tests.support.servers import Gateway, free_port, wait_until

pytestmark = pytest.mark.integration

PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
SECRET = "0123456789abcdef0123456789abcdef"
CALLING = "CT01"
CALLED = "KARNAK-GW"
# A SOP class under a private root: no storage context of the listener names it.
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.7433.1.1"

# Seeds of the fuzzed corpus, from pydicom's own test files (read locally, never downloaded): several
# transfer syntaxes (explicit/implicit VR, big endian, deflated, RLE, JPEG 2000), sequences, an SR.
FUZZ_SEEDS = (
    "MR_small.dcm",
    "CT_small.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "image_dfl.dcm",
    "rtdose_1frame.dcm",
    "reportsi.dcm",
    "badVR.dcm",
)
FUZZ_CASES = 300
FUZZ_SEED = 20260107


# --- the peers -------------------------------------------------------------------------------------


class RecordingSCP:
    """A pynetdicom Storage SCP that keeps each dataset's bytes, as received, by SOP Instance UID."""

    def __init__(self, ae_title: str) -> None:
        self.port = free_port()
        self.datasets: dict[str, bytes] = {}
        self.syntaxes: dict[str, str] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
        self._server: Any = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.datasets[uid] = event.encoded_dataset(include_meta=False)
            self.syntaxes[uid] = str(event.context.transfer_syntax)
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


@dataclass
class Run:
    gateway: Gateway
    config: GatewayConfig
    plain: RecordingSCP
    deid: RecordingSCP
    events: EventTap
    workdir: Path
    secret: bytes

    def deidentified_uid(self, uid: str) -> str:
        return uid_hash(self.secret, uid)

    def parked(self) -> list[ParkedMessage]:
        dead = DeadLetterQueue.connect(self.config)
        try:
            return dead.list(limit=100_000)
        finally:
            dead.close()


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("bad-input")
    prefix = f"karnak-test-bad-input-{free_port()}"
    plain, deid = RecordingSCP("PACS_PLAIN"), RecordingSCP("PACS_DEID")
    destinations = [
        {"id": "plain", "type": "dicom", "ae_title": "PACS_PLAIN", "hostname": "127.0.0.1", "port": plain.port},
        {
            "id": "deid",
            "type": "dicom",
            "ae_title": "PACS_DEID",
            "hostname": "127.0.0.1",
            "port": deid.port,
            "deidentification": {"project": "bad-input"},
        },
    ]
    raw = gateway_config(amqp_url, prefix, workdir, destinations)
    raw["projects"] = [{"name": "bad-input", "secret": SECRET, "profile": str(PROFILE)}]
    raw["logging"] = {"level": "DEBUG"}
    config = parse_config(json.dumps(raw))
    register_topology(amqp_url, config)
    gateway = Gateway(raw, workdir)
    tap = EventTap(amqp_url, f"{prefix}.events")
    try:
        gateway.start()
        yield Run(gateway, config, plain, deid, tap, workdir, parse_project_secret(SECRET))
    finally:
        gateway.stop()
        tap.close()
        plain.stop()
        deid.stop()


# --- sending bytes as they are ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One C-STORE: the file meta announces `sop_class`/`uid`; `dataset` is sent as is, however broken."""

    name: str
    sop_class: str
    uid: str
    transfer_syntax: str
    dataset: bytes


def _split(part10: bytes) -> tuple[Dataset, bytes]:
    meta = dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    group_length = int.from_bytes(part10[140:144], "little")
    return meta, part10[144 + group_length :]


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_case(case: Case, directory: Path) -> Path:
    meta = Dataset()
    meta.MediaStorageSOPClassUID = case.sop_class
    meta.MediaStorageSOPInstanceUID = case.uid
    meta.TransferSyntaxUID = case.transfer_syntax
    path = directory / f"{case.uid}.dcm"
    with open(path, "wb") as handle:
        handle.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(handle, meta, enforce_standard=True)
        handle.write(case.dataset)
    return path


def c_store(port: int, cases: list[Case], directory: Path) -> dict[str, int | None]:
    """Send each case's bytes unparsed (pynetdicom's chunked file sending); its C-STORE status by UID."""
    directory.mkdir(parents=True, exist_ok=True)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    statuses: dict[str, int | None] = {}
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for sop_class, syntax in sorted({(c.sop_class, c.transfer_syntax) for c in cases}):
        ae.add_requested_context(sop_class, syntax)
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
        for case in cases:
            if not assoc.is_established:
                assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
            assert assoc.is_established, "the gateway stopped accepting associations"
            answer = assoc.send_c_store(_write_case(case, directory))
            statuses[case.uid] = int(answer.Status) if "Status" in answer else None
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return statuses


# --- accounting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int | None
    parked: str | None  # the reason, when the processor parked the instance before any routing
    plain: tuple[str, str] | None  # (kind, reason) of the `plain` destination's event
    deid: tuple[str, str] | None

    @property
    def settled(self) -> bool:
        return self.status != 0x0000 or self.parked is not None or (self.plain is not None and self.deid is not None)


def outcomes(run: Run, statuses: dict[str, int | None]) -> dict[str, Outcome]:
    parked = {p.sop_instance_uid: p.reason for p in run.parked() if p.destination == "-"}
    events: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for event in list(run.events.events):
        _, kind, destination = event["routing_key"].split(".", 2)
        events.setdefault((destination, event["sop_instance_uid"]), []).append((kind, event.get("reason") or ""))

    def single(destination: str, uid: str) -> tuple[str, str] | None:
        found = events.get((destination, uid), [])
        assert len(found) <= 1, f"{destination} has {len(found)} events for {uid}: {found}"
        return found[0] if found else None

    return {
        uid: Outcome(status, parked.get(uid), single("plain", uid), single("deid", run.deidentified_uid(uid)))
        for uid, status in statuses.items()
    }


def send_and_settle(run: Run, cases: list[Case], timeout: float = 60) -> dict[str, Outcome]:
    statuses = c_store(run.gateway.listener_port, cases, run.workdir / "cases")
    found: dict[str, Outcome] = {}

    def all_settled() -> bool:
        found.update(outcomes(run, statuses))
        return all(o.settled for o in found.values())

    wait_until(all_settled, timeout, "every case refused, parked or settled for both destinations", interval=0.5)
    return found


def _good_instance(run: Run, name: str = "good") -> None:
    """A well-formed instance sent now arrives at both destinations: the gateway still serves."""
    case = _case_from(_mr(), name)
    [outcome] = send_and_settle(run, [case]).values()
    assert outcome == Outcome(0x0000, None, ("sent", ""), ("sent", "")), outcome
    assert run.plain.datasets[case.uid] == case.dataset


# --- handcrafted malformed datasets ----------------------------------------------------------------


def _mr(syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds = make_instance(str(MRImageStorage), generate_uid(), generate_uid(), 1, "MR T1")
    with_image(ds, 16, 16, seed=5)
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _case_from(ds: Dataset, name: str, mutate: Callable[[bytearray], bytes | bytearray] = bytes) -> Case:
    meta, body = _split(_encode(ds))
    return Case(
        name, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(meta.TransferSyntaxUID), bytes(mutate(bytearray(body)))
    )


def _at(body: bytearray, group: int, element: int, vr: bytes = b"") -> int:
    position = body.find(struct.pack("<HH", group, element) + vr)
    assert position >= 0, f"({group:04X},{element:04X}) not found"
    return position


def _set_short_length(body: bytearray, group: int, element: int, vr: bytes, delta: int) -> bytearray:
    p = _at(body, group, element, vr)
    body[p + 6 : p + 8] = (int.from_bytes(body[p + 6 : p + 8], "little") + delta).to_bytes(2, "little")
    return body


def _set_long_length(body: bytearray, group: int, element: int, value: int, at: int = 4) -> bytearray:
    p = _at(body, group, element)
    body[p + at : p + at + 4] = struct.pack("<I", value)
    return body


def _replace_uid(body: bytearray, group: int, element: int, uid: str) -> bytearray:
    p = _at(body, group, element, b"UI")
    old = int.from_bytes(body[p + 6 : p + 8], "little")
    value = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
    body[p + 6 : p + 8 + old] = len(value).to_bytes(2, "little") + value
    return body


def _drop(body: bytearray, group: int, element: int, vr: bytes) -> bytearray:
    p = _at(body, group, element, vr)
    del body[p : p + 8 + int.from_bytes(body[p + 6 : p + 8], "little")]
    return body


# (name, transfer syntax, mutation, the start of the parking reason)
MALFORMED: list[tuple[str, str, Callable[[bytearray], bytes | bytearray], str]] = [
    (
        "cut-inside-the-pixel-data",
        ExplicitVRLittleEndian,
        lambda b: b[:-100],
        "truncated instance: element (7FE0,0010) declares 512 bytes but only 412 follow",
    ),
    (
        "cut-inside-an-element-header",
        ExplicitVRLittleEndian,
        lambda b: b[: _at(b, 0x7FE0, 0x0010) + 3],
        "truncated instance: it ends with 3 bytes of an incomplete element header",
    ),
    ("no-dataset-at-all", ExplicitVRLittleEndian, lambda b: b"", "instance lacks required attributes: SOPClassUID"),
    ("random-bytes", ExplicitVRLittleEndian, lambda b: random.Random(3).randbytes(600), "truncated instance"),
    (
        "a-length-two-bytes-too-long",
        ExplicitVRLittleEndian,
        lambda b: _set_short_length(b, 0x0008, 0x1030, b"LO", +2),
        "truncated instance: element",
    ),
    (
        "a-length-two-bytes-too-short",
        ExplicitVRLittleEndian,
        lambda b: _set_short_length(b, 0x0008, 0x1030, b"LO", -2),
        "truncated instance: element",
    ),
    (
        "huge-length-on-a-short-date",
        ImplicitVRLittleEndian,
        lambda b: _set_long_length(b, 0x0008, 0x0020, 0xFFFFFFF0),
        "truncated instance: element (0008,0020) declares 4294967280 bytes but only",
    ),
    (
        "huge-length-on-the-pixel-data",
        ExplicitVRLittleEndian,
        lambda b: _set_long_length(b, 0x7FE0, 0x0010, 0xFFFFFFF0, at=8),
        "truncated instance: element (7FE0,0010) declares 4294967280 bytes",
    ),
    (
        "undefined-length-on-a-text-element",
        ImplicitVRLittleEndian,
        lambda b: _set_long_length(b, 0x0008, 0x1030, 0xFFFFFFFF),
        "malformed DICOM dataset: EOFError",
    ),
    (
        "no-sop-instance-uid-in-the-dataset",
        ExplicitVRLittleEndian,
        lambda b: _drop(b, 0x0008, 0x0018, b"UI"),
        "instance lacks required attributes: SOPInstanceUID",
    ),
    (
        "a-dataset-of-another-sop-class",
        ExplicitVRLittleEndian,
        lambda b: _replace_uid(b, 0x0008, 0x0016, "1.2.840.10008.5.1.4.1.1.2"),
        "the dataset's SOPClassUID 1.2.840.10008.5.1.4.1.1.2 differs from the C-STORE's 1.2.840.10008.5.1.4.1.1.4",
    ),
    (
        "a-dataset-of-another-sop-instance",
        ExplicitVRLittleEndian,
        lambda b: _replace_uid(b, 0x0008, 0x0018, "1.2.3.4.5.6"),
        "the dataset's SOPInstanceUID 1.2.3.4.5.6 differs from the C-STORE's",
    ),
]


# The cases the receiver answers itself with an error status: it walks the dataset's header up to the Series
# Instance UID (a missing or different identity is 0xA900; a header it cannot walk, 0xC000). The processor,
# which reads the whole header, parks the others with the reason given in MALFORMED.
REFUSED_ON_RECEIPT = {
    "no-dataset-at-all": 0xA900,
    "random-bytes": 0xA900,
    "a-length-two-bytes-too-long": 0xC000,
    "a-length-two-bytes-too-short": 0xA900,
    "huge-length-on-a-short-date": 0xC000,
    "undefined-length-on-a-text-element": 0xC000,
    "no-sop-instance-uid-in-the-dataset": 0xA900,
    "a-dataset-of-another-sop-class": 0xA900,
    "a-dataset-of-another-sop-instance": 0xA900,
}


def test_malformed_datasets_are_refused_on_receipt_or_parked_with_a_reason_naming_the_problem(run: Run) -> None:
    cases = {name: (_case_from(_mr(syntax), name, mutate), reason) for name, syntax, mutate, reason in MALFORMED}
    found = send_and_settle(run, [case for case, _ in cases.values()])
    for name, (case, reason) in cases.items():
        outcome = found[case.uid]
        if name in REFUSED_ON_RECEIPT:
            assert outcome.status == REFUSED_ON_RECEIPT[name], name
            assert outcome.parked is None, name
            assert case.uid not in run.plain.datasets, name
            continue
        # Success once stored durably; the processor, reading the whole instance to route it, parks it with
        # the reason and sends nothing anywhere.
        assert outcome.status == 0x0000, name
        assert outcome.parked is not None and outcome.parked.startswith(reason), (name, outcome.parked)
        assert (outcome.plain, outcome.deid) == (None, None), name
        assert case.uid not in run.plain.datasets, name
    _good_instance(run, "after-malformed")


def test_operators_see_the_parked_instance_and_its_reason_with_karnak_dead_list(run: Run) -> None:
    case = _case_from(_mr(), "cut", lambda b: b[:-10])
    send_and_settle(run, [case])
    listing = run.gateway.karnak("dead", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [entry] = [e for e in json.loads(listing.stdout) if e["sop_instance_uid"] == case.uid]
    assert entry["reason"] == "truncated instance: element (7FE0,0010) declares 512 bytes but only 502 follow"
    assert entry["origin_routing_key"].endswith(".received")


def test_an_element_the_gateway_need_not_read_is_forwarded_unchanged_and_left_out_of_the_deidentified_copy(
    run: Run,
) -> None:
    def unknown_vr_on_the_name(body: bytearray) -> bytearray:
        p = _at(body, 0x0010, 0x0010, b"PN")
        body[p + 4 : p + 6] = b"XX"
        return body

    def wrong_length_rows(body: bytearray) -> bytearray:
        # Rows (US) given 3 bytes: not a whole number of 16-bit values.
        p = _at(body, 0x0028, 0x0010, b"US")
        body[p + 6 : p + 10] = b"\x03\x00\x10\x00" + b"\x00"
        return body

    cases = [_case_from(_mr(), "unknown-vr", unknown_vr_on_the_name), _case_from(_mr(), "rows", wrong_length_rows)]
    found = send_and_settle(run, cases)
    for case in cases:
        # Forwarding does not decode: the plain destination gets the bytes as the modality sent them...
        assert found[case.uid] == Outcome(0x0000, None, ("sent", ""), ("sent", "")), (case.name, found[case.uid])
        assert run.plain.datasets[case.uid] == case.dataset
        # ...and the de-identified copy replaces the name whatever its encoding.
        copy = run.deid.datasets[run.deidentified_uid(case.uid)]
        assert PATIENT_NAME.encode() not in copy and PATIENT_ID.encode() not in copy


def test_a_private_sop_class_is_refused_in_the_association_and_nothing_is_queued(run: Run) -> None:
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", run.gateway.listener_port, ae_title=CALLED)
    assert assoc.is_established
    [refused] = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == PRIVATE_SOP_CLASS]
    assert refused.result == 0x03  # abstract syntax not supported (PS3.8 9.3.3.2)
    ds = _mr()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    with pytest.raises(ValueError, match="No presentation context"):
        assoc.send_c_store(ds)
    assoc.release()
    _good_instance(run, "after-private-class")


def _charset_case(name: str, relabel: tuple[bytes, bytes] | None = None) -> Case:
    ds = dcmread(get_charset_files(name)[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or generate_uid()
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or generate_uid()
    ds.PatientID = ds.get("PatientID") or "PID-CHARSET-7"
    meta, body = _split(_encode(ds))
    if relabel is not None:
        assert relabel[0] in body
        body = body.replace(*relabel)
    return Case(name, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(meta.TransferSyntaxUID), body)


@pytest.mark.parametrize(
    "name,relabel,original_name",
    [
        ("chrFren.dcm", None, b"Buc^J\xe9r\xf4me"),  # ISO_IR 100 (Latin-1)
        ("chrH31.dcm", None, b"Yamada^Tarou"),  # ISO 2022 IR 87 (Japanese, code extensions)
        ("chrX2.dcm", None, b"Wang^XiaoDong"),  # GB18030
        ("chrFren.dcm", (b"ISO_IR 100", b"ISO_IR 999"), b"Buc^J\xe9r\xf4me"),  # a term no standard defines
    ],
    ids=["iso-ir-100", "iso-2022-ir-87", "gb18030", "unknown-term"],
)
def test_odd_character_sets_arrive_unchanged_and_deidentified(
    run: Run, name: str, relabel: tuple[bytes, bytes] | None, original_name: bytes
) -> None:
    case = _charset_case(name, relabel)
    assert original_name in case.dataset
    [outcome] = send_and_settle(run, [case]).values()
    assert outcome == Outcome(0x0000, None, ("sent", ""), ("sent", "")), outcome
    assert run.plain.datasets[case.uid] == case.dataset
    copy = run.deid.datasets[run.deidentified_uid(case.uid)]
    assert original_name not in copy
    if relabel is not None:
        # The unknown term is kept: the copy still says how its remaining values were meant to be read.
        assert relabel[1] in copy


def test_garbage_instead_of_pdus_is_dropped_and_the_listener_keeps_serving(run: Run) -> None:
    port = run.gateway.listener_port
    for payload in (
        random.Random(1).randbytes(4096),
        # An A-ASSOCIATE-RQ PDU declaring 0xFFFFFFF0 bytes and sending a few, then closing.
        b"\x01\x00" + struct.pack(">I", 0xFFFFFFF0) + b"\x00\x01" + b"\x00" * 60,
        # A P-DATA-TF before any association.
        b"\x04\x00" + struct.pack(">I", 12) + b"\x00" * 12,
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    _good_instance(run, "after-garbage")


# --- the fuzzed corpus -----------------------------------------------------------------------------


def _mutate(body: bytearray, rng: random.Random) -> bytearray:
    kind = rng.choice(("flip", "truncate", "length", "vr", "insert", "delete"))
    for _ in range(rng.randint(1, 6)):
        if not body:
            break
        p = rng.randrange(len(body))
        if kind == "flip":
            body[p] = rng.randrange(256)
        elif kind == "truncate":
            return body[:p]
        elif kind == "length" and p + 4 <= len(body):
            body[p : p + 4] = rng.choice(
                (b"\xf0\xff\xff\xff", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", rng.randbytes(4))
            )
        elif kind == "vr":
            body[p : p + 2] = rng.choice((b"XX", b"UN", b"SQ", b"OB", b"\x00\x00", b"UT", b"AT", b"US"))
        elif kind == "insert":
            body[p:p] = rng.randbytes(rng.randint(1, 16))
        elif kind == "delete":
            del body[p : p + rng.randint(1, 16)]
    return body


def fuzzed_corpus(count: int, seed: int) -> tuple[list[Case], set[str]]:
    """`count` mutations of pydicom's test files (a fixed seed), and the patient values they hold."""
    rng = random.Random(seed)
    seeds = []
    identifying: set[str] = set()
    for name in FUZZ_SEEDS:
        path = get_testdata_file(name, download=False)
        assert path is not None, f"pydicom's test file {name} is missing from this pydicom installation"
        ds = dcmread(str(path))
        seeds.append((name, ds))
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
            value = str(ds.get(keyword, "") or "")
            identifying.update(part for part in [value, *value.split("^")] if len(part) >= 6)
    cases = []
    for i in range(count):
        name, ds = seeds[i % len(seeds)]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        meta, body = _split(_encode(ds))
        mutated = _mutate(bytearray(body), rng)
        cases.append(
            Case(name, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(meta.TransferSyntaxUID), bytes(mutated))
        )
    return cases, identifying


def test_every_case_of_a_fuzzed_corpus_is_refused_parked_or_settled_and_nothing_else(run: Run) -> None:
    cases, _ = fuzzed_corpus(FUZZ_CASES, FUZZ_SEED)
    started = time.monotonic()
    found = send_and_settle(run, cases, timeout=150)
    by_uid = {case.uid: case for case in cases}
    parked = [uid for uid, o in found.items() if o.parked is not None]
    delivered = [uid for uid, o in found.items() if o.plain == ("sent", "")]
    for uid, outcome in found.items():
        if outcome.status != 0x0000:
            continue
        if outcome.parked is not None:
            assert outcome.parked.strip(), uid
            # Parked before routing: no destination heard of it.
            assert (outcome.plain, outcome.deid) == (None, None), (by_uid[uid].name, outcome)
            assert uid not in run.plain.datasets
            continue
        assert outcome.plain is not None and outcome.deid is not None
        if outcome.plain[0] == "sent":
            # Nothing is re-encoded on the way to a destination that does not transform (implicit VR, big
            # endian and RLE originals excepted: they go out as explicit VR little endian, as in Karnak).
            if run.plain.syntaxes[uid] == by_uid[uid].transfer_syntax:
                assert run.plain.datasets[uid] == by_uid[uid].dataset, by_uid[uid].name
        else:
            assert outcome.plain[0] == "failed" and outcome.plain[1].startswith("cannot make the copy"), outcome
            assert uid not in run.plain.datasets
    # The corpus exercises both paths, so the test cannot pass by parking (or forwarding) everything.
    assert len(parked) >= FUZZ_CASES // 5, f"only {len(parked)} of {FUZZ_CASES} parked"
    assert len(delivered) >= FUZZ_CASES // 10, f"only {len(delivered)} of {FUZZ_CASES} delivered"
    print(
        f"fuzzed corpus: {len(cases)} cases in {time.monotonic() - started:.1f} s, {len(parked)} parked, "
        f"{len(delivered)} delivered unchanged"
    )
    _good_instance(run, "after-fuzz")


# --- nothing crashed, nothing leaked (runs last: it reads what the tests above left) --------------------


def test_no_service_crashed_restarted_or_logged_a_patient_value(run: Run) -> None:
    _good_instance(run, "final")
    assert run.gateway.process is not None and run.gateway.process.poll() is None
    log = run.gateway.log()
    for marker in ("handler-crashed", "worker.crashed", "exited with", "keeps failing"):
        assert marker not in log, f"{marker!r} in the gateway log:\n" + "\n".join(
            line for line in log.splitlines() if marker in line
        )
    # Bad input is an expected event, answered with a reason: no traceback from the gateway's own code.
    # (pydicom's decoders and pynetdicom's PDU reader log their own, at ERROR, before we handle the error.)
    ours = [line for line in log.splitlines() if "logger=karnak" in line and "Traceback" in line]
    assert not ours, "\n".join(ours)
    # Nothing bounced between the queues until RabbitMQ's delivery limit dead-lettered it.
    assert not [p for p in run.parked() if p.reason.startswith("dead-lettered by RabbitMQ")]
    _, identifying = fuzzed_corpus(0, FUZZ_SEED)
    identifying |= {PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, "Buc^J", "Yamada", "XiaoDong"}
    for value in sorted(identifying):
        # Bounded, so a random UID or a byte count that happens to hold the digits of a date does not count.
        pattern = rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])"
        assert not re.search(pattern, log), f"the patient value {value!r} is in the gateway log"
