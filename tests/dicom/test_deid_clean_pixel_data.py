"""clean.pixel.data: which instances are cleaned, with which mask, and the refusal of an eligible instance
for which the profile has no mask. The pixel operation itself is replaced by a recording fake here."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset

from karnak_dicom.deid import Deidentifier, NoPixelMask, load_profile
from karnak_dicom.deid.errors import InstanceExcluded

SECRET = bytes(range(16))
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"
US = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.7.4"
VL_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"

MASKS = """
masks:
  - stationName: "*"
    color: "ffff00"
    rectangles: ["0 0 10 10"]
  - stationName: "ECHO-1"
    rectangles: ["1 1 5 5", "20 0 4 4"]
  - stationName: "ECHO-1"
    imageWidth: 640
    imageHeight: 480
    rectangles: ["2 2 8 8"]
  - stationName: "SIZED-ONLY"
    imageWidth: 1024
    imageHeight: 768
    rectangles: ["3 3 3 3"]
"""


@pytest.fixture
def cleaned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Dataset, list[tuple[int, int, int, int]]]]:
    calls: list[tuple[Dataset, list[tuple[int, int, int, int]]]] = []
    fake = types.ModuleType("karnak_dicom.pixels")

    def clean_pixel_data(dataset: Dataset, rectangles: list[tuple[int, int, int, int]]) -> None:
        calls.append((dataset, list(rectangles)))

    fake.clean_pixel_data = clean_pixel_data  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "karnak_dicom.pixels", fake)
    return calls


def _engine(masks: str = MASKS, condition: str = "", tag_morphing: bool = False) -> Deidentifier:
    text = 'name: "Pixels"\nprofileElements:\n  - name: "Clean pixel data"\n    codename: "clean.pixel.data"\n'
    if condition:
        text += f'    condition: "{condition}"\n'
    text += '  - name: "Basic"\n    codename: "basic.dicom.profile"\n' + masks
    return Deidentifier.for_project(load_profile(text), "study-x", SECRET, tag_morphing=tag_morphing)


def _image(sop_class: str, station: str | None = "ECHO-1", rows: int = 600, columns: int = 800, **kw: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "PID"
    if station is not None:
        ds.StationName = station
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelData = b"\x00" * 16
    for keyword, value in kw.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("sop_class", [US, US_MULTIFRAME, SECONDARY_CAPTURE, SC_MULTIFRAME, VL_ENDOSCOPIC])
def test_ultrasound_secondary_capture_and_endoscopy_are_cleaned_with_the_station_mask(
    sop_class: str, cleaned: list[Any]
) -> None:
    ds = _image(sop_class)
    outcome = _engine().apply(ds, "PSN")

    assert [rectangles for _, rectangles in cleaned] == [[(1, 1, 5, 5), (20, 0, 4, 4)]]
    assert cleaned[0][0] is ds
    assert outcome.pixels_cleaned and outcome.mask_station == "ECHO-1"
    assert outcome.codes_used == ("113101", "113100")
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113101", "113100"]
    assert ds.StationName == ""  # the basic profile ran; the mask was chosen on the original station name


def test_the_mask_for_the_station_and_the_image_size_comes_first(cleaned: list[Any]) -> None:
    _engine().apply(_image(US, rows=480, columns=640), "PSN")
    assert cleaned[-1][1] == [(2, 2, 8, 8)]


def test_a_station_without_its_own_mask_gets_the_default_one(cleaned: list[Any]) -> None:
    _engine().apply(_image(US, station="OTHER"), "PSN")
    _engine().apply(_image(US, station=None), "PSN")
    _engine().apply(_image(US, station="SIZED-ONLY"), "PSN")  # only a mask for another size: the default
    assert [rectangles for _, rectangles in cleaned] == [[(0, 0, 10, 10)]] * 3


def test_other_images_are_cleaned_only_when_burned_in_annotation_is_yes(cleaned: list[Any]) -> None:
    outcome = _engine().apply(_image(CT), "PSN")
    assert cleaned == [] and not outcome.pixels_cleaned and outcome.codes_used == ("113100",)

    _engine().apply(_image(CT, BurnedInAnnotation="YES"), "PSN")
    assert len(cleaned) == 1


def test_an_instance_without_pixel_data_is_not_cleaned(cleaned: list[Any]) -> None:
    ds = _image(US)
    del ds.PixelData
    _engine().apply(ds, "PSN")
    assert cleaned == []


def test_an_eligible_instance_without_a_mask_is_refused_never_sent_uncleaned(cleaned: list[Any]) -> None:
    engine = _engine(masks='\nmasks:\n  - stationName: "ECHO-1"\n    rectangles: ["1 1 5 5"]\n')
    with pytest.raises(NoPixelMask) as caught:
        engine.apply(_image(US, station="UNKNOWN-STATION"), "PSN")

    assert isinstance(caught.value, InstanceExcluded)
    assert "No mask" in caught.value.reason and "UNKNOWN-STATION" in caught.value.reason
    assert "never sent uncleaned" in caught.value.reason
    with pytest.raises(NoPixelMask):
        _engine(masks="").apply(_image(US), "PSN")
    assert cleaned == []


def test_the_element_condition_can_spare_a_station(cleaned: list[Any]) -> None:
    engine = _engine(condition="!tagValueContains(#Tag.StationName, 'ECHO')")
    engine.apply(_image(US), "PSN")
    engine.apply(_image(US, station="OTHER"), "PSN")
    assert [rectangles for _, rectangles in cleaned] == [[(0, 0, 10, 10)]]


def test_tag_morphing_cleans_pixels_too(cleaned: list[Any]) -> None:
    _engine(tag_morphing=True).apply(_image(US), None)
    assert len(cleaned) == 1


def test_the_sample_pixel_profile_cleans_an_ultrasound_of_its_station(cleaned: list[Any]) -> None:
    engine = Deidentifier.for_project(load_profile(SAMPLES / "profileByPixel.yml"), "study-x", SECRET)
    engine.apply(_image(US, station="VIVID7-003467"), "PSN")
    assert cleaned[-1][1] == [(25, 25, 150, 50), (350, 15, 150, 50)]


def test_the_equipment_sample_marks_and_cleans_the_images_of_one_scanner(cleaned: list[Any]) -> None:
    engine = Deidentifier.for_project(
        load_profile(SAMPLES / "docs-masks-equipment-specific-cleaning.yml"), "study-x", SECRET
    )
    scanner, other = _image(CT, station="ICT256"), _image(CT, station="OTHER-CT")
    engine.apply(scanner, "PSN")
    engine.apply(other, "PSN")

    assert scanner.BurnedInAnnotation == "YES"
    assert "BurnedInAnnotation" not in other
    assert [rectangles for _, rectangles in cleaned] == [[(25, 25, 150, 50), (350, 15, 150, 50)]]
