"""karnak_dicom._internals: the pydicom and pynetdicom internals the gateway uses still exist and behave as used,
the installed versions are the ones checked, and no other module of the gateway uses a private name of either."""

from __future__ import annotations

import ast
import copy
import inspect
import threading
from io import BytesIO
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pynetdicom.association import Association

from karnak_dicom import _internals
from karnak_dicom.testing import to_part10

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "libs", ROOT / "shared", ROOT / "services"]


def _part10(**attributes: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_part10(ds)


def test_the_installed_pydicom_and_pynetdicom_are_the_versions_checked() -> None:
    assert _internals.version_problems() == []


def test_the_upper_bounds_of_the_library_match_the_versions_checked() -> None:
    pyproject = (ROOT / "libs" / "dicom" / "pyproject.toml").read_text()
    for name, (major, minor) in (
        ("pydicom", _internals.CHECKED_PYDICOM),
        ("pynetdicom", _internals.CHECKED_PYNETDICOM),
    ):
        assert f'"{name}>={major}.{minor},<{major}.{minor + 1}"' in pyproject


def test_the_element_dictionary_is_the_datasets_own_and_raw_elements_stay_raw() -> None:
    ds = pydicom.dcmread(BytesIO(_part10(PatientName="Doe^John", StudyDescription="CT")))
    elements = _internals.element_dictionary(ds)

    assert isinstance(elements[0x00100010], RawDataElement)
    del elements[0x00081030]
    assert "StudyDescription" not in ds
    elements[0x00081030] = DataElement(0x00081030, "LO", "MR")
    assert ds.StudyDescription == "MR"


def test_a_copied_element_dictionary_is_independent_of_the_original() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^John"
    ds.private_block(0x0011, "ACME", create=True).add_new(0x01, "LO", "x")
    snapshot = copy.copy(ds)
    _internals.copy_element_dictionary(ds, snapshot)

    del ds.PatientName
    assert snapshot.PatientName == "Doe^John"
    assert snapshot._private_blocks == {}


def test_forgetting_private_blocks_lets_a_deleted_creator_be_made_again() -> None:
    ds = Dataset()
    ds.private_block(0x0011, "ACME", create=True)
    del _internals.element_dictionary(ds)[0x00110010]
    _internals.forget_private_blocks(ds)

    block = ds.private_block(0x0011, "ACME", create=True)
    assert block.block_start == 0x1000 and 0x00110010 in ds


def test_the_decoded_character_set_is_the_one_pydicom_read_with() -> None:
    ds = pydicom.dcmread(BytesIO(_part10(SpecificCharacterSet="ISO_IR 100", PatientName="Müller")))
    ds.PatientName  # noqa: B018 - decoding sets the character set

    assert _internals.decoded_character_set(ds) == ["latin_1"]


def test_the_element_header_walk_gives_raw_elements_with_their_value_offsets() -> None:
    data = _part10(PatientName="Doe^John")
    stream = BytesIO(data)
    meta = pydicom.dcmread(BytesIO(data)).file_meta
    stream.seek(132 + 12 + int(meta.FileMetaInformationGroupLength))

    elements = list(_internals.data_element_generator(stream, False, True, defer_size=1))
    (element,) = [element for element in elements if element.tag == 0x00100010]
    assert isinstance(element, RawDataElement)
    assert data[element.value_tell : element.value_tell + element.length] == b"Doe^John"


def test_the_element_writer_and_its_helpers_take_what_the_part10_writer_passes() -> None:
    assert list(inspect.signature(_internals.write_data_element).parameters)[:3] == ["fp", "elem", "encodings"]
    fp = _internals.DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    with _internals.tag_in_exception(0x00100010):
        _internals.write_data_element(fp, DataElement(0x00100010, "PN", "Doe^John"))
    assert fp.getvalue() == b"\x10\x00\x10\x00PN\x08\x00Doe^John"
    raw = pydicom.dcmread(BytesIO(_part10(PatientName="Doe^John")))._dict[0x00100010]
    assert _internals.convert_raw_data_element(raw).value == "Doe^John"


def test_pynetdicom_still_has_the_chunked_send_switch() -> None:
    from pynetdicom import _config

    assert isinstance(_config.STORE_SEND_CHUNKED_DATASET, bool)


def test_a_c_store_sent_from_the_callers_thread_reaches_storescp_whole_in_pdus_it_accepts(tmp_path: Path) -> None:
    from pynetdicom import AE

    from karnak_dicom.testing import write_ct_series
    from karnak_shared.service.testing.servers import StoreSCP, free_port

    (path,) = write_ct_series(tmp_path / "study", 1)
    scp = StoreSCP("PACS", free_port(), tmp_path / "pacs").start()  # DCMTK takes PDUs of 16 KB at most
    sent: list[tuple[int, threading.Thread]] = []
    try:
        ae = AE("SCU")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="PACS")
        assert assoc.is_established
        _internals.send_dimse_from_caller(assoc)
        raw_send = assoc.dul.socket.send
        assoc.dul.socket.send = lambda data: (sent.append((len(data), threading.current_thread())), raw_send(data))[1]
        status = assoc.send_c_store(path)
        assoc.release()
    finally:
        scp.stop()

    assert status.Status == 0x0000
    (stored,) = scp.files()
    assert pydicom.dcmread(stored).PixelData == pydicom.dcmread(path).PixelData
    data_pdus = [(length, thread) for length, thread in sent if length > 100]
    assert len(data_pdus) > 30 and max(length for length, _ in data_pdus) <= 16384 + 6
    assert {thread for _, thread in data_pdus} == {threading.current_thread()}  # none through the DUL's thread


def _private_names_of_the_libraries() -> set[str]:
    """Private attribute names of the pydicom and pynetdicom classes the gateway handles."""
    classes = [Dataset, FileMetaDataset, DataElement, Sequence, pynetdicom.AE, Association]
    names = {name for cls in classes for name in dir(cls)}
    names |= set(vars(Dataset()))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _uses(path: Path, private: set[str]) -> list[str]:
    return _uses_of_text(path, path.read_text(), private)


def _uses_of_text(path: Path, text: str, private: set[str]) -> list[str]:
    found = []
    for node in sorted(ast.walk(ast.parse(text)), key=lambda n: getattr(n, "lineno", 0)):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("pydicom", "pynetdicom"):
            module_private = any(part.startswith("_") for part in node.module.split("."))
            low_level = node.module in ("pydicom.filereader", "pydicom.filebase") or (
                node.module == "pydicom.filewriter" and any(a.name != "dcmwrite" for a in node.names)
            )
            if (
                module_private
                or low_level
                or any(a.name.startswith("_") and not a.name.startswith("__") for a in node.names)
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ...")
    return found


def test_no_module_but_internals_uses_a_private_name_of_pydicom_or_pynetdicom() -> None:
    private = _private_names_of_the_libraries()
    assert {"_dict", "_private_blocks", "_character_set"} <= private
    uses = [
        use
        for source in SOURCES
        for path in sorted(source.rglob("*.py"))
        if path.name != "_internals.py" and ".egg-info" not in str(path)
        for use in _uses(path, private)
    ]
    assert uses == []


def test_the_scan_finds_a_private_name_used_elsewhere() -> None:
    module = ROOT / "libs" / "scan_example.py"  # only read: the scan needs a path under the repository
    text = "from pynetdicom import _config\nfrom pydicom.filebase import DicomBytesIO\nds._dict.clear()\n"
    tree_uses = _uses_of_text(module, text, _private_names_of_the_libraries())

    assert [use.split(": ", 1)[1] for use in tree_uses] == [
        "from pynetdicom import ...",
        "from pydicom.filebase import ...",
        "._dict",
    ]


@pytest.mark.parametrize("bad", [(2, 4), (3, 1), (4, 0)])
def test_a_version_other_than_the_checked_one_is_reported(
    monkeypatch: pytest.MonkeyPatch, bad: tuple[int, int]
) -> None:
    monkeypatch.setattr(pydicom, "__version__", f"{bad[0]}.{bad[1]}.0")

    (problem,) = _internals.version_problems()
    assert problem.startswith(f"pydicom {bad[0]}.{bad[1]}.0 is installed")
