"""Atheris harness: any bytes as a received instance, through the reader the processor routes with.

`read_instance` must say what is wrong with an instance by raising `InvalidInstance` and nothing else
(no other exception, no hang, no memory blow-up): every instance it cannot read is parked with a reason.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["karnak_dicom", "pydicom"]):
    from karnak_dicom.errors import InvalidInstance
    from karnak_dicom.instance import read_instance


def one_input(data: bytes) -> None:
    try:
        read_instance(bytes(data))
    except InvalidInstance:
        pass


def seeds() -> list[bytes]:
    from karnak_dicom.testing import pydicom_test_files

    return [path.read_bytes() for path in pydicom_test_files("*.dcm") if path.stat().st_size < 1_000_000]


if __name__ == "__main__":
    from tests.support.fuzzing import fuzz_main

    fuzz_main(one_input, seeds)
    sys.exit(0)
