"""The modality's transfer syntax is accepted: its first choice among ours, so compressed images arrive as sent.

pydicom's compressed test files go through the whole gateway (`karnak up`: receiver, processor,
dicom-sender) to DCMTK's storescp, from a pynetdicom SCU that proposes [compressed, Explicit VR LE,
Implicit VR LE] in one presentation context (its usual way, and many modalities'), and from DCMTK's dcmsend.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, _config, build_context

from karnak_dicom.testing import dataset_bytes, pydicom_test_files
from karnak_receiver.checks import check_dataset
from karnak_shared.config import parse_config
from tests.conftest import gateway_config, register_topology
from tests.support.servers import Gateway, StoreSCP, dcmtk_env, dcmtk_tool, free_port, wait_until

pytestmark = pytest.mark.e2e


def _compressed_test_files() -> list[Path]:
    """pydicom's bundled compressed instances that are whole instances (identity attributes present)."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in pydicom_test_files("*.dcm"):
            try:
                meta = dcmread(path, stop_before_pixels=True).file_meta
                syntax = meta.TransferSyntaxUID
            except Exception:  # noqa: BLE001 - pydicom also bundles deliberately broken files
                continue
            if not syntax.is_compressed or syntax.is_deflated:
                continue
            # Some lack their Study/Series Instance UIDs: the receiver refuses those (test_c_store_checks.py).
            sop_class, sop_instance = str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)
            if check_dataset(dataset_bytes(path), str(syntax), sop_class, sop_instance) is None:
                found.append(path)
    return found


COMPRESSED = _compressed_test_files()


def _syntax(path: Path) -> UID:
    return UID(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def test_the_compressed_test_files_cover_every_family_of_syntaxes() -> None:
    syntaxes = {str(_syntax(p)) for p in COMPRESSED}
    # baseline, extended, lossless SV1, JPEG-LS lossless, JPEG 2000 lossless and lossy, RLE
    expected = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70"}
    expected |= {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"}
    assert expected <= syntaxes, expected - syntaxes


@dataclass
class Run:
    gateway: Gateway
    pacs: StoreSCP
    workdir: Path


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("syntaxes")
    prefix = f"karnak-test-ts-{workdir.name[-6:]}-{free_port()}"
    pacs = StoreSCP("PACS", free_port(), workdir / "pacs").start()
    destination = {"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": pacs.port}
    config = gateway_config(amqp_url, prefix, workdir, [destination])
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    try:
        gateway.start()
        yield Run(gateway, pacs, workdir)
    finally:
        gateway.stop()
        pacs.stop()


def _same_pixels(received: Path, original: Path) -> bool:
    import numpy

    return bool(numpy.array_equal(dcmread(received).pixel_array, dcmread(original).pixel_array))


def _arrives_as_sent(run: Run, original: Path) -> None:
    """Wait until the PACS holds the original's dataset bytes in the original's transfer syntax.

    RLE Lossless excepted: Karnak sends an RLE original as Explicit VR Little Endian even to a destination
    that keeps the syntax (docs/design.md 7b), so that one must arrive decoded, its pixels unchanged.
    """
    expected = dataset_bytes(original)
    syntax = _syntax(original)
    rewritten = syntax == RLELossless

    def arrived() -> bool:
        for received in run.pacs.files():
            try:
                if rewritten:
                    if _syntax(received) == ExplicitVRLittleEndian and _same_pixels(received, original):
                        return True
                elif dataset_bytes(received) == expected and _syntax(received) == syntax:
                    return True
            except Exception:  # noqa: BLE001 - storescp may be writing it right now
                continue
        return False

    wait_until(arrived, 60, f"{original.name} at the PACS as sent in {syntax.name} (log: {run.gateway.log_path})")


@pytest.mark.parametrize("original", COMPRESSED, ids=lambda p: p.name)
def test_a_pynetdicom_scu_proposing_compressed_then_uncompressed_gets_its_compressed_syntax(
    run: Run, original: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = dcmread(original, stop_before_pixels=True).file_meta
    syntax = _syntax(original)
    ae = AE(ae_title="CT01")
    ae.requested_contexts = [
        build_context(meta.MediaStorageSOPClassUID, [syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ]
    # pynetdicom sends a file's bytes as they are only with this set (else it decodes and re-encodes them).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assoc = ae.associate("127.0.0.1", run.gateway.listener_port, ae_title="KARNAK-GW")
    assert assoc.is_established
    try:
        [accepted] = assoc.accepted_contexts
        assert accepted.transfer_syntax == [syntax]
        status = assoc.send_c_store(original)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    _arrives_as_sent(run, original)


def _dcmsend(port: int, files: list[Path]) -> str:
    command = [dcmtk_tool("dcmsend"), "-v", "-aet", "CT01", "-aec", "KARNAK-GW", "127.0.0.1", str(port)]
    sent = subprocess.run([*command, *map(str, files)], env=dcmtk_env(), capture_output=True, text=True, timeout=300)
    output = sent.stdout + sent.stderr
    assert sent.returncode == 0, output
    assert output.count("Received C-STORE Response (Success)") == len(files), output
    return output


def _by_instance(scp: StoreSCP) -> dict[str, Path]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in scp.files()}


def test_dcmsend_gets_each_compressed_syntax_accepted_and_its_files_arrive_unchanged(run: Run) -> None:
    # One file per SOP Instance UID: pydicom's files share some, and the PACS names files by that UID.
    # And those DCMTK reads as pydicom does: some of pydicom's files are broken on purpose (implicit VR
    # inside though the meta says explicit, odd lengths), and DCMTK reads another instance out of them.
    distinct: dict[str, Path] = {}
    for path in COMPRESSED:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        dump = subprocess.run([dcmtk_tool("dcmdump"), "-q", "+P", "0008,0018", str(path)], capture_output=True)
        if dump.returncode == 0 and f"[{uid}]" in dump.stdout.decode(errors="replace") and _syntax(path) != RLELossless:
            distinct.setdefault(uid, path)
    files = list(distinct.values())
    # dcmsend writes the dataset itself (without group lengths): what it sends straight to a storescp is
    # the reference the gateway's delivery must equal, byte for byte.
    reference = StoreSCP("KARNAK-GW", free_port(), run.workdir / "reference").start()
    try:
        _dcmsend(reference.port, files)
        wait_until(lambda: len(reference.files()) == len(files), 30, "dcmsend's files at the reference storescp")
        expected = _by_instance(reference)
    finally:
        reference.stop()
    _dcmsend(run.gateway.listener_port, files)

    def all_arrived() -> bool:
        received = _by_instance(run.pacs)
        return all(
            uid in received and dataset_bytes(received[uid]) == dataset_bytes(path) for uid, path in expected.items()
        )

    wait_until(all_arrived, 60, f"dcmsend's files at the PACS as dcmsend sent them (log: {run.gateway.log_path})")
    received = _by_instance(run.pacs)
    for uid, original in distinct.items():
        assert _syntax(received[uid]) == _syntax(original), original.name
