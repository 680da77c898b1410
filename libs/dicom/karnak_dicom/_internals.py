"""Every use of pydicom's and pynetdicom's internals, in one place, with the versions it was checked against.

The gateway reaches below the two libraries' public APIs where speed or control needs it: the engine and
the Part 10 writer read and write a dataset's element dictionary directly (tens of thousands of elements a
second, without pydicom converting each one), the writer encodes elements with pydicom's own element
writer, the reader walks element headers without reading values, and the dicom-sender streams datasets
from their files. Nothing else in the gateway touches a private name of either library:
`tests/dicom/test_internals.py` checks that every name below still exists and behaves as used, that the
installed versions are the checked ones, and that no other module uses a private name of either.

To move to a new pydicom or pynetdicom: run that test with the new version, adapt this module, then raise
the `CHECKED_*` versions and the upper bounds in libs/dicom/pyproject.toml together.

H4 (receiver hardening) adds pynetdicom transport wrappers here: keep one section per library.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

import pydicom
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag, tag_in_exception

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = [
    "CHECKED_PYDICOM",
    "CHECKED_PYNETDICOM",
    "DicomBytesIO",
    "Elements",
    "convert_raw_data_element",
    "copy_element_dictionary",
    "data_element_generator",
    "decoded_character_set",
    "element_dictionary",
    "forget_private_blocks",
    "pydicom_version",
    "send_datasets_from_files",
    "tag_in_exception",
    "version_problems",
    "write_data_element",
]

# (major, minor) of each library this module was written and tested against.
CHECKED_PYDICOM: Final = (3, 0)
CHECKED_PYNETDICOM: Final = (3, 0)


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def pydicom_version() -> tuple[int, int]:
    """(major, minor) of the installed pydicom."""
    return _major_minor(pydicom.__version__)


def version_problems() -> list[str]:
    """What differs between the installed libraries and the versions this module was checked against."""
    problems = []
    for name, installed, checked in (
        ("pydicom", pydicom.__version__, CHECKED_PYDICOM),
        ("pynetdicom", metadata.version("pynetdicom"), CHECKED_PYNETDICOM),  # not imported: no transport here
    ):
        if _major_minor(installed) != checked:
            problems.append(f"{name} {installed} is installed; karnak_dicom._internals was checked against {checked}")
    return problems


# --- pydicom: a dataset's element dictionary -------------------------------------------------------------

Elements = MutableMapping[BaseTag, "DataElement | RawDataElement"]
"""A dataset's element dictionary (``Dataset._dict``): tag -> element, raw (undecoded) or converted."""


def element_dictionary(dataset: Dataset) -> Elements:
    """The dataset's own element dictionary, read and written directly for speed (no conversion)."""
    elements: Elements = dataset._dict
    return elements


def copy_element_dictionary(source: Dataset, target: Dataset) -> None:
    """Give `target` (a shallow copy of `source`) an element dictionary of its own and no private blocks."""
    target._dict = dict(source._dict)
    target._private_blocks = {}


def forget_private_blocks(dataset: Dataset) -> None:
    """Drop pydicom's cache of private blocks: it goes stale when a private creator is deleted directly."""
    dataset._private_blocks.clear()


def decoded_character_set(dataset: Dataset) -> Any:
    """The character set pydicom decoded the dataset's text with (``Dataset._character_set``)."""
    return dataset._character_set


# --- pynetdicom ---------------------------------------------------------------------------------------------


def send_datasets_from_files() -> None:
    """Make C-STORE send a dataset given as a file path in chunks from the file, never whole in memory."""
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
