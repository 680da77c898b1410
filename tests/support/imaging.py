"""Images with realistic pixel content for the codec tests, and two independent decoders to read them back.

The phantom is a body-like slice (tissue, lungs, spine, smooth texture, noise): codecs compress it as they
would a real image, so the PSNR and ratio figures mean something. The sources every target is tried on:
a CT (12 bits stored in 16), its signed variant, an MR (16 bits stored), an RGB secondary capture, and
pydicom's own compressed test files. The second decoder is DCMTK (`dcmdjpeg`, `dcmdjpls`, `dcmdrle`),
and GDCM's `gdcmconv` for JPEG 2000, which DCMTK's free toolkit does not decode.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

# pydicom's compressed test files, one or two per codec.
PYDICOM_COMPRESSED = (
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG Baseline, YBR_FULL_422
    "JPGExtended.dcm",  # JPEG Extended, 12 bits
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1, RGB
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless, signed 16 bits
    "examples_jpeg2k.dcm",  # JPEG 2000 Lossless, YBR_RCT
    "JPEG2000.dcm",  # JPEG 2000, signed 16 bits
    "MR_small_RLE.dcm",  # RLE Lossless, signed 16 bits
)
# What each lossy target promises at the gateway's fixed settings: the lowest PSNR (dB, the peak being the
# largest value of Bits Stored) by Bits Stored. JPEG-LS near-lossless promises more: no sample off by > 2.
MINIMUM_PSNR = {
    "1.2.840.10008.1.2.4.50": {8: 33.0},  # JPEG quality 85
    "1.2.840.10008.1.2.4.51": {8: 33.0, 12: 55.0},
    "1.2.840.10008.1.2.4.81": {8: 42.0, 12: 66.0, 16: 90.0},  # NEAR 2
    "1.2.840.10008.1.2.4.91": {8: 35.0, 12: 50.0, 16: 60.0},  # 10:1
}
_SECOND_DECODER = {
    "1.2.840.10008.1.2.4.50": ("dcmdjpeg", "+cn"),
    "1.2.840.10008.1.2.4.51": ("dcmdjpeg", "+cn"),
    "1.2.840.10008.1.2.4.57": ("dcmdjpeg", "+cn"),
    "1.2.840.10008.1.2.4.70": ("dcmdjpeg", "+cn"),
    "1.2.840.10008.1.2.4.80": ("dcmdjpls",),
    "1.2.840.10008.1.2.4.81": ("dcmdjpls",),
    "1.2.840.10008.1.2.4.90": ("gdcmconv", "--raw"),
    "1.2.840.10008.1.2.4.91": ("gdcmconv", "--raw"),
    "1.2.840.10008.1.2.5": ("dcmdrle",),
}


def phantom(rows: int, columns: int, seed: int = 1) -> Any:
    """A body-like slice with values in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = rows / 2, columns / 2
    image = np.zeros((rows, columns))
    body = ((x - cx) / (0.42 * columns)) ** 2 + ((y - cy) / (0.34 * rows)) ** 2 < 1
    image[body] = 0.26
    for side in (-0.18, 0.18):
        lung = ((x - cx - side * columns) / (0.12 * columns)) ** 2 + ((y - cy) / (0.2 * rows)) ** 2 < 1
        image[lung] = 0.06
    spine = ((x - cx) / (0.05 * columns)) ** 2 + ((y - cy - 0.22 * rows) / (0.05 * rows)) ** 2 < 1
    image[spine] = 0.55
    image += 0.03 * np.sin(x / 9.0) * np.cos(y / 13.0) * body
    image += rng.normal(0, 0.006, size=image.shape) * body
    return np.clip(image, 0, 1)


def _image(sop_class: str, rows: int, columns: int, description: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "CODEC^PHANTOM", "PHANTOM-1"
    ds.SeriesDescription, ds.InstanceNumber = description, 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = rows, columns
    ds.PixelRepresentation = 0
    return ds


def _monochrome(ds: Dataset, stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, stored, stored - 1


def ct_image(signed: bool = False) -> Dataset:
    """A 512 x 512 CT, 12 bits stored in 16 (0.5 MB): unsigned with intercept -1024, or signed."""
    ds = _image(CTImageStorage, 512, 512, "CT AXIAL")
    _monochrome(ds, 12)
    ds.RescaleSlope, ds.RescaleType = 1, "HU"
    values = phantom(512, 512) * 4095
    if signed:
        ds.PixelRepresentation, ds.RescaleIntercept = 1, 0
        ds.PixelData = (values - 1024).astype("<i2").tobytes()
    else:
        ds.RescaleIntercept = -1024
        ds.PixelData = values.astype("<u2").tobytes()
    return ds


def mr_image() -> Dataset:
    """A 256 x 256 MR with 16 bits stored (values up to 30000): more than any lossy JPEG carries."""
    ds = _image(MRImageStorage, 256, 256, "MR T1")
    _monochrome(ds, 16)
    ds.PixelData = (phantom(256, 256, seed=3) * 30000).astype("<u2").tobytes()
    return ds


def rgb_image() -> Dataset:
    """A 640 x 480 RGB secondary capture, 8 bits per sample, interleaved."""
    ds = _image(SecondaryCaptureImageStorage, 480, 640, "SC RGB")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    base = phantom(480, 640, seed=5)
    y, x = np.mgrid[0:480, 0:640]
    planes = [base * 255, (x / 640) * 255, ((np.sin(y / 20) + 1) / 2) * 200 * (base > 0.1)]
    ds.PixelData = np.stack(planes, axis=-1).astype("u1").tobytes()
    return ds


def synthetic_sources() -> dict[str, Dataset]:
    return {"CT 12 in 16": ct_image(), "signed CT": ct_image(signed=True), "MR 16": mr_image(), "RGB SC": rgb_image()}


def pydicom_path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's test file {name} is missing"
    return str(path)


def pydicom_file(name: str) -> Dataset:
    return dcmread(pydicom_path(name))


def pixels(ds: Dataset) -> Any:
    """Decoded pixels in the colour space the data is stored in (pydicom would turn YBR into RGB)."""
    return pixel_array(ds, raw=True)


def rgb_pixels(ds: Dataset) -> Any:
    """Decoded pixels, colour ones as RGB: compares a subsampled lossy YBR copy with an RGB source."""
    return pixel_array(ds)


def psnr(source: Any, decoded: Any, bits_stored: int) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the largest value of `bits_stored` bits."""
    error = np.mean((np.asarray(source, dtype=np.float64) - np.asarray(decoded, dtype=np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(((1 << bits_stored) - 1) ** 2 / error))


def decode_elsewhere(part10: bytes) -> Dataset:
    """The instance decompressed by DCMTK (or GDCM for JPEG 2000) into native pixel data."""
    syntax = str(dcmread(BytesIO(part10), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    tool, *options = _SECOND_DECODER[syntax]
    executable = shutil.which(tool)
    assert executable is not None, f"{tool} is not installed (.ci/run installs dcmtk and libgdcm-tools)"
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.dcm"), Path(folder, "out.dcm")
        source.write_bytes(part10)
        run = subprocess.run([executable, *options, str(source), str(target)], capture_output=True, text=True)
        assert run.returncode == 0, f"{tool} cannot decode: {run.stdout}{run.stderr}"
        return dcmread(target)
