"""Every compressed syntax the gateway encodes, on every kind of source, read back by two decoders.

Sources: a CT (12 bits in 16), its signed variant, an MR (16 bits), an RGB secondary capture and pydicom's
compressed test files (`tests.support.imaging`). Lossless targets decode pixel-identical to the source with
pydicom and with DCMTK (GDCM for JPEG 2000); lossy ones within the PSNR the README states, with Lossy Image
Compression, its ratio and its method set. A source a target cannot carry is refused with the reason, and
left whole in Explicit VR Little Endian, never narrowed to fit.
"""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from karnak_dicom.syntaxes import ENCODABLE, Syntax
from karnak_dicom.transcoding import SyntaxNotCarried, encode_part10, transcode
from tests.support.imaging import (
    MINIMUM_PSNR,
    PYDICOM_COMPRESSED,
    decode_elsewhere,
    pixels,
    psnr,
    pydicom_file,
    rgb_pixels,
    synthetic_sources,
)

BASELINE, EXTENDED, JLS_NEAR, J2K = (f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 81, 91))
TARGETS = [s for s in ENCODABLE if s.uid not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)]
_SYNTHETIC = synthetic_sources()
_SOURCES = {name: lambda n=name: copy.deepcopy(_SYNTHETIC[n]) for name in _SYNTHETIC} | {
    name: lambda n=name: pydicom_file(n) for name in PYDICOM_COMPRESSED
}
_SYNTAX_OF = {name: str(make().file_meta.TransferSyntaxUID) for name, make in _SOURCES.items()}
CASES = [
    pytest.param(target, source, id=f"{target.name} <- {source}")
    for target in TARGETS
    for source in _SOURCES
    if _SYNTAX_OF[source] != target.uid  # already in the target syntax: the plan sends it as it came
]

# The sources a lossy JPEG cannot carry (8 bits for Baseline, 8 or 12 unsigned for Extended), and why.
_SIXTEEN_BITS = ("MR 16", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm")
REFUSED = {
    **{(BASELINE, s): "carries 8-bit samples only" for s in ("CT 12 in 16", "signed CT", "JPGExtended.dcm")},
    **{(BASELINE, s): "carries 8-bit samples only" for s in _SIXTEEN_BITS},
    **{(EXTENDED, s): "carries 8 or 12-bit samples only" for s in _SIXTEEN_BITS},
    (EXTENDED, "signed CT"): "codes unsigned samples only",
}


def _decoded(source: Dataset) -> Any:
    return transcode(copy.deepcopy(source), ExplicitVRLittleEndian)


@pytest.mark.parametrize(("target", "source_name"), CASES)
def test_each_target_decodes_within_its_promise_with_pydicom_and_dcmtk(target: Syntax, source_name: str) -> None:
    source = _SOURCES[source_name]()
    reference = _decoded(source)
    uid = str(source.SOPInstanceUID)
    earlier = _multi(source, "LossyImageCompressionMethod"), _multi(source, "LossyImageCompressionRatio")
    refusal = REFUSED.get((target.uid, source_name))

    if refusal is not None:
        with pytest.raises(SyntaxNotCarried, match=refusal):
            transcode(source, target.uid)
        assert source.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(pixels(source), pixels(reference))  # whole, to go out uncompressed
        return
    part10 = encode_part10(transcode(source, target.uid))

    sent, elsewhere = dcmread(BytesIO(part10)), decode_elsewhere(part10)
    assert sent.file_meta.TransferSyntaxUID == target.uid
    assert sent.SOPInstanceUID == uid
    if not target.lossy:
        assert np.array_equal(pixels(sent), pixels(reference))
        assert np.array_equal(pixels(elsewhere), pixels(reference))
        assert sent.get("LossyImageCompression") == reference.get("LossyImageCompression")
        return
    bits = int(reference.BitsStored)
    assert psnr(rgb_pixels(reference), rgb_pixels(sent), bits) >= MINIMUM_PSNR[target.uid][bits]
    assert psnr(rgb_pixels(reference), rgb_pixels(elsewhere), bits) >= MINIMUM_PSNR[target.uid][bits]
    if target.uid == JLS_NEAR:
        assert np.abs(pixels(sent).astype(np.int64) - pixels(reference).astype(np.int64)).max() <= 2
    assert sent.LossyImageCompression == "01"
    methods, ratios = _multi(sent, "LossyImageCompressionMethod"), _multi(sent, "LossyImageCompressionRatio")
    assert methods[-1] == target.lossy_method
    assert float(ratios[-1]) > 1
    assert (methods[:-1], ratios[:-1]) == earlier  # the earlier compressions kept, in order


def _multi(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword)
    return [] if value is None else [str(v) for v in np.atleast_1d(np.asarray(value, dtype=object))]
