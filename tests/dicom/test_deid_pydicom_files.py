"""pydicom's own test files, of many modalities and transfer syntaxes, through the basic profile."""

from __future__ import annotations

import warnings
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread, dcmwrite

from karnak_dicom.deid import Deidentifier, hash_pseudonym, load_profile
from karnak_dicom.testing import pydicom_test_files

SECRET = bytes.fromhex("e4da3b7fbbce2345d7772b0674a318d5")
PROFILE = load_profile(Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml")


def _readable_files() -> list[tuple[str, Dataset]]:
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in map(str, pydicom_test_files()):
            try:
                files.append((path, dcmread(path)))
            except Exception:  # noqa: BLE001 - pydicom ships deliberately broken files; only those that parse count
                continue
    return files


FILES = _readable_files()


def _writable(ds: Dataset) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcmwrite(BytesIO(), ds)
    except Exception:  # noqa: BLE001 - a few files cannot be written back by pydicom even untouched
        return False
    return True


def test_there_are_enough_files_of_enough_modalities_to_mean_something() -> None:
    modalities = Counter(str(ds.get("Modality", "none")) for _, ds in FILES)
    assert len(FILES) >= 100
    assert {"CT", "MR", "US", "NM", "RTDOSE", "RTPLAN", "SR", "SEG", "CR", "OT"} <= set(modalities)


@pytest.mark.parametrize("path", [path for path, _ in FILES], ids=lambda path: Path(path).name)
def test_a_pydicom_test_file_goes_through_the_basic_profile(path: str) -> None:
    engine = Deidentifier.for_project(PROFILE, "study-x", SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
        writable = _writable(dcmread(path))
        original_ids = {str(ds.get("PatientID", "")), str(ds.get("PatientName", ""))} - {""}

        outcome = engine.apply(ds, hash_pseudonym(SECRET, str(ds.get("PatientID", ""))))

        assert outcome.codes_used == ("113100",)
        assert ds.PatientIdentityRemoved == "YES"
        assert [e for e in ds.iterall() if e.tag.is_private] == []
        if writable:
            buffer = BytesIO()
            dcmwrite(buffer, ds)
            result = dcmread(BytesIO(buffer.getvalue()))
            values = [str(e.value) for e in result.iterall() if e.VR in ("PN", "LO", "SH")]
            assert not original_ids & set(values)
