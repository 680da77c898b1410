"""Fixtures shared by the unit tests: small configurations, Part 10 instances and a recording publisher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from karnak_shared.errors import BrokerUnavailable

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def make_part10(
    *,
    sop_class_uid: str = CT_IMAGE_STORAGE,
    sop_instance_uid: str | None = "1.2.826.0.1.3680043.9.7001.1.1",
    study_instance_uid: str = "1.2.826.0.1.3680043.9.7001.1",
    series_instance_uid: str = "1.2.826.0.1.3680043.9.7001.1.0",
    study_description: str = "RESEARCH CT",
    pixel_bytes: int = 0,
    **attributes: Any,
) -> bytes:
    """The Part 10 bytes (file meta + dataset, Explicit VR Little Endian) of a small CT instance."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid or "1.2.3")
    ds.SOPClassUID = sop_class_uid
    if sop_instance_uid is not None:
        ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.PatientID = "PAT-0042"
    ds.PatientName = "Doe^John"
    ds.StudyDescription = study_description
    ds.StudyDate = "20240102"
    ds.SeriesDescription = "AXIAL 1mm"
    ds.Modality = "CT"
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)  # `Keyword=None` leaves the attribute out
        else:
            setattr(ds, keyword, value)
    if pixel_bytes:
        ds.Rows = 1
        ds.Columns = pixel_bytes // 2
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(range(256)) * (pixel_bytes // 256) + b"\x00" * (pixel_bytes % 256)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def part10() -> Callable[..., bytes]:
    """A factory of small Part 10 instances (see `make_part10`)."""
    return make_part10


@dataclass
class Published:
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool


@dataclass
class RecordingPublisher:
    """Stands in for `karnak_shared.broker.Publisher`: records every publish, may fail on one of them."""

    fail_on_call: int | None = None  # 1-based number of the publish that raises BrokerUnavailable
    calls: list[Published] = field(default_factory=list)
    attempts: int = 0

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None:
        self.attempts += 1
        if self.fail_on_call is not None and self.attempts >= self.fail_on_call:
            raise BrokerUnavailable(f"no confirm from RabbitMQ for {exchange}/{routing_key}")
        self.calls.append(Published(exchange, routing_key, body, dict(headers or {}), mandatory))


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()
