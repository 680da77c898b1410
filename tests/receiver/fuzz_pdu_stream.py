"""Atheris harness: bytes a peer sends to the DICOM port, through the PDU and DIMSE decoding path.

What the receiver does with each PDU: its header checked by the transport (`PduLimits.refusal`); the PDU
decoded by pynetdicom; P-DATA-TF values joined into DIMSE messages; a complete C-STORE request's dataset
checked (`check_dataset`) and its file meta written as the listener does. pynetdicom's DUL turns any
exception of its decoding into an abort of that association, so those end the input; a fault is an
exception of our own checks, or resources (time, memory) running away.
"""

from __future__ import annotations

import struct
import sys

import atheris

with atheris.instrument_imports(include=["pynetdicom", "karnak_receiver", "karnak_dicom", "pydicom"]):
    from pydicom import dcmread
    from pydicom.uid import UID
    from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF, PDU

    from karnak_dicom._internals import PduLimits
    from karnak_receiver.checks import check_dataset

LIMITS = PduLimits(max_pdata_bytes=131072, max_request_bytes=1048576, request_timeout=10, pdu_timeout=60)
_PDU_CLASSES: dict[int, type[PDU]] = {}


def _pdu_classes() -> dict[int, type[PDU]]:
    if not _PDU_CLASSES:
        from pynetdicom.dul import _PDU_TYPES

        _PDU_CLASSES.update({key[0]: value[0] for key, value in _PDU_TYPES.items()})
    return _PDU_CLASSES


def _split(data: bytes) -> list[bytes]:
    """The PDUs of a byte stream, as the DUL reads them (header, then the length it gives)."""
    pdus, offset = [], 0
    while offset + 6 <= len(data):
        _, length = struct.unpack(">BxL", data[offset : offset + 6])
        pdus.append(data[offset : offset + 6 + length])
        offset += 6 + length
    return pdus


def one_input(data: bytes) -> None:
    message: DIMSEMessage | None = None
    requested = False
    for raw in _split(data):
        if LIMITS.refusal(raw[:6], requested) is not None or len(raw) < 6:
            return  # refused unread: the connection is closed
        cls = _pdu_classes().get(raw[0])
        if cls is None:
            return  # the DUL aborts on an unknown PDU type
        pdu = cls()
        try:
            pdu.decode(raw)
        except Exception:  # noqa: BLE001 - the DUL aborts the association on any decoding error
            return
        if isinstance(pdu, A_ASSOCIATE_RQ):
            requested = True
        if not isinstance(pdu, P_DATA_TF):
            continue
        primitive = pdu.to_primitive()
        message = message or DIMSEMessage()
        try:
            complete = message.decode_msg(primitive)
            request = message.message_to_primitive() if complete else None
        except Exception:  # noqa: BLE001 - pynetdicom's state machine aborts the association on these
            return
        if not complete:
            continue
        message = None
        if isinstance(request, C_STORE) and request.DataSet is not None:
            dataset = request.DataSet.getvalue()
            # What the listener does before its intake: never raises, whatever the bytes.
            for syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"):
                check_dataset(dataset, syntax, str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))


def _pdata_stream(path: str) -> bytes:
    """A C-STORE-RQ of a pydicom test file, as the P-DATA-TF PDUs an SCU sends."""
    ds = dcmread(path)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    from io import BytesIO

    from pynetdicom.dsutils import encode

    syntax = UID(ds.file_meta.TransferSyntaxUID)
    encoded = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian)
    request.DataSet = BytesIO(encoded or b"")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    out = b""
    for primitive in message.encode_msg(1, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += pdu.encode()
    return out


def seeds() -> list[bytes]:
    from karnak_dicom.testing import pydicom_test_files
    from tests.receiver.rawpdus import associate_rq

    request = associate_rq()
    found = [request]
    for path in pydicom_test_files("*.dcm")[:40]:
        try:
            found.append(request + _pdata_stream(str(path)))
        except Exception:  # noqa: BLE001 - some of pydicom's files are broken on purpose
            continue
    return found


if __name__ == "__main__":
    from tests.support.fuzzing import fuzz_main

    fuzz_main(one_input, seeds)
    sys.exit(0)
