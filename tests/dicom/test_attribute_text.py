"""`attribute_text`: the value as Karnak compares it, the same for conditions, expressions and pseudonyms."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from karnak_dicom.attributes import attribute_text

PATIENT_ID = 0x00100020


def test_the_padding_dicom_adds_is_not_part_of_the_value() -> None:
    ds = Dataset()
    ds.add(DataElement(0x00091001, "UN", b"ACME\x00"))
    ds.add(DataElement(0x00081030, "LO", "RESEARCH "))

    assert attribute_text(ds, 0x00091001) == "ACME"
    assert attribute_text(ds, 0x00081030) == "RESEARCH"


def test_case_is_part_of_the_value_and_leading_spaces_only_in_text_vrs() -> None:
    ds = Dataset()
    ds.PatientID = "  Ab12"
    ds.add(DataElement(0x00324000, "LT", "  indented comment"))

    assert attribute_text(ds, PATIENT_ID) == "Ab12"
    assert attribute_text(ds, 0x00324000) == "  indented comment"


def test_values_are_joined_with_a_backslash() -> None:
    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]

    assert attribute_text(ds, 0x00080008) == "ORIGINAL\\PRIMARY\\AXIAL"


def test_an_absent_attribute_and_a_sequence_have_no_text_and_an_empty_one_is_empty() -> None:
    ds = Dataset()
    ds.ReferencedSeriesSequence = Sequence([Dataset()])
    ds.StudyDescription = ""

    assert attribute_text(ds, PATIENT_ID) is None
    assert attribute_text(ds, 0x00081115) is None
    assert attribute_text(ds, 0x00081030) == ""
