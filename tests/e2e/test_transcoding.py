"""End to end: storescu -> gateway (`karnak up`) -> storescp, one destination per kind of target syntax.

A CT (12 bits in 16), an MR (16 bits), an RGB secondary capture and three of pydicom's compressed files go
to five destinations: JPEG Baseline and JPEG Extended re-encoding everything, JPEG Lossless SV1, JPEG-LS
near-lossless and JPEG 2000 transcoding only uncompressed originals. What storescp wrote is decoded by
pydicom and by DCMTK (GDCM for JPEG 2000); the per-target pixel checks on every kind of source are in
tests/dicom/test_encoding_targets.py, this module shows the whole gateway doing it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread

from karnak_dicom.syntaxes import encodable
from karnak_shared.config import parse_config
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_backbone import EventTap
from tests.support.imaging import (
    MINIMUM_PSNR,
    ct_image,
    decode_elsewhere,
    mr_image,
    pixels,
    psnr,
    pydicom_path,
    rgb_image,
    rgb_pixels,
)
from tests.support.servers import Gateway, StoreSCP, free_port, storescu, wait_until

pytestmark = pytest.mark.e2e

EXPLICIT = "1.2.840.10008.1.2.1"
# JPEG Lossless SV1 rather than Process 14: DCMTK's storescp (3.6.7) does not accept .57 even with +xa;
# tests/dicom/test_encoding_targets.py has dcmdjpeg decode the .57 the gateway writes.
BASELINE, EXTENDED, LOSSLESS = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70"
JLS_NEAR, J2K = "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"
# destination -> (its syntax, transcode only uncompressed)
DESTINATIONS = {
    "baseline": (BASELINE, False),
    "extended": (EXTENDED, False),
    "lossless": (LOSSLESS, True),
    "jls-near": (JLS_NEAR, True),
    "j2k": (J2K, True),
}
# pydicom's files, each with the storescu option that proposes its syntax (storescu keeps the last one).
PYDICOM_FILES = {
    "SC_rgb_jpeg_gdcm.dcm": "--propose-lossless",
    "MR_small_jp2klossless.dcm": "--propose-j2k-lossless",
    "JPGExtended.dcm": "--propose-jpeg12",
}
# (source, destination) -> the syntax it arrives in when it is not the destination's (kept or fallen back).
ARRIVES_IN = {
    ("ct", "baseline"): EXPLICIT,
    ("mr", "baseline"): EXPLICIT,
    ("mr", "extended"): EXPLICIT,
    ("MR_small_jp2klossless.dcm", "baseline"): EXPLICIT,
    ("MR_small_jp2klossless.dcm", "extended"): EXPLICIT,
    ("JPGExtended.dcm", "baseline"): EXPLICIT,
    ("JPGExtended.dcm", "extended"): EXTENDED,  # already there: sent as it came
}


@dataclass
class Run:
    sources: dict[str, Path]
    peers: dict[str, StoreSCP]
    events: EventTap
    send_returncode: int
    send_output: str


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("transcoding")
    prefix = f"karnak-test-e2e-ts-{workdir.name[-6:]}-{free_port()}"
    sources: dict[str, Path] = {}
    for name, ds in (("ct", ct_image()), ("mr", mr_image()), ("rgb", rgb_image())):
        sources[name] = workdir / f"{name}.dcm"
        ds.save_as(sources[name], enforce_file_format=True)
    for name in PYDICOM_FILES:
        sources[name] = Path(shutil.copyfile(pydicom_path(name), workdir / name))
    peers = {
        dest: StoreSCP(dest.upper().replace("-", "_"), free_port(), workdir / dest).start() for dest in DESTINATIONS
    }
    destinations = [
        {
            "id": dest,
            "type": "dicom",
            "ae_title": peers[dest].ae_title,
            "hostname": "127.0.0.1",
            "port": peers[dest].port,
            "transfer_syntax": syntax,
            "transcode_only_uncompressed": only_uncompressed,
        }
        for dest, (syntax, only_uncompressed) in DESTINATIONS.items()
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations)
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    tap = EventTap(amqp_url, f"{prefix}.events")
    try:
        gateway.start()
        outputs, codes = [], []
        for name, proposal in {"": "--propose-lossless", **PYDICOM_FILES}.items():
            files = [sources[name]] if name else [sources[n] for n in ("ct", "mr", "rgb")]
            sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", files, proposal)
            outputs.append(sent.stdout + sent.stderr)
            codes.append(sent.returncode)
        for dest, peer in peers.items():
            wait_until(lambda p=peer: len(p.files()) >= len(sources), 90, f"{len(sources)} instances at {dest}")
        wait_until(
            lambda: len([e for e in tap.events if e["kind"] == "sent"]) >= len(sources) * len(peers), 30, "events"
        )
        yield Run(sources, peers, tap, max(codes), "\n".join(outputs))
    finally:
        gateway.stop()
        tap.close()
        for peer in peers.values():
            peer.stop()


def _arrived(run: Run, destination: str) -> dict[str, Path]:
    """Source name -> the file storescp wrote for it."""
    by_uid = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in run.peers[destination].files()}
    return {
        name: by_uid[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] for name, path in run.sources.items()
    }


def _expected_syntax(source: str, destination: str, original: str) -> str:
    syntax, only_uncompressed = DESTINATIONS[destination]
    if (source, destination) in ARRIVES_IN:
        return ARRIVES_IN[(source, destination)]
    return original if only_uncompressed and original != EXPLICIT else syntax


@pytest.mark.parametrize("destination", DESTINATIONS)
def test_each_instance_arrives_in_the_syntax_its_destination_and_its_pixel_format_allow(
    run: Run, destination: str
) -> None:
    assert run.send_returncode == 0, run.send_output
    for source, path in _arrived(run, destination).items():
        original = str(dcmread(run.sources[source], stop_before_pixels=True).file_meta.TransferSyntaxUID)
        arrived = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        assert arrived == _expected_syntax(source, destination, original), (source, destination)


@pytest.mark.parametrize("destination", DESTINATIONS)
def test_what_the_gateway_encoded_decodes_with_pydicom_and_dcmtk_within_its_promise(run: Run, destination: str) -> None:
    syntax = encodable(DESTINATIONS[destination][0])
    assert syntax is not None
    for source, path in _arrived(run, destination).items():
        original = dcmread(run.sources[source])
        arrived = dcmread(path)
        if str(arrived.file_meta.TransferSyntaxUID) != syntax.uid or original.file_meta.TransferSyntaxUID == syntax.uid:
            continue  # kept or fallen back: checked by the other tests
        bits = int(original.BitsStored)
        elsewhere = decode_elsewhere(path.read_bytes())
        if not syntax.lossy:
            assert np.array_equal(pixels(arrived), pixels(original)), source
            assert np.array_equal(pixels(elsewhere), pixels(original)), source
            continue
        minimum = MINIMUM_PSNR[syntax.uid][bits]
        assert psnr(rgb_pixels(original), rgb_pixels(arrived), bits) >= minimum, source
        assert psnr(rgb_pixels(original), rgb_pixels(elsewhere), bits) >= minimum, source
        assert arrived.LossyImageCompression == "01"
        assert list(np.atleast_1d(arrived.LossyImageCompressionMethod))[-1] == syntax.lossy_method
        assert arrived.SOPInstanceUID == original.SOPInstanceUID


def test_an_instance_the_target_cannot_carry_goes_out_uncompressed_and_its_sent_event_says_why(run: Run) -> None:
    fallbacks = {k for k, v in ARRIVES_IN.items() if v == EXPLICIT}
    uids = {name: str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for name, p in run.sources.items()}
    sent: dict[tuple[str, str], dict[str, Any]] = {}
    for event in run.events.events:
        if event["kind"] == "sent":
            source = next(name for name, uid in uids.items() if uid == event["sop_instance_uid"])
            sent[(source, event["destination"])] = event
    assert len(sent) == len(uids) * len(DESTINATIONS)
    for key, event in sent.items():
        note = event.get("syntax_fallback")
        if key in fallbacks:
            assert note and "sent in Explicit VR Little Endian" in note, key
            assert ("8-bit" in note) or ("12-bit" in note), note
        else:
            assert note is None, (key, note)
    # The MR's 16 bits went out whole, not narrowed to fit JPEG: the pixels are the original's.
    mr_at_extended = _arrived(run, "extended")["mr"]
    assert np.array_equal(pixels(dcmread(mr_at_extended)), pixels(dcmread(run.sources["mr"])))
