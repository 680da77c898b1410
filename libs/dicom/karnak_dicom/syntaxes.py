"""The transfer syntaxes a destination may ask for: the one list the configuration, the processor and the console use.

A destination's `transfer_syntax` is `keep` or one of `ENCODABLE`. The configuration check refuses anything
else with `requested_syntax_problem`'s message, so a configuration that validates is one the processor runs.
This module imports no codec: the configuration check stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ENCODABLE", "KEEP", "RETIRED", "Syntax", "encodable", "requested_syntax_problem"]

KEEP: Final = "keep"


@dataclass(frozen=True)
class Syntax:
    """A transfer syntax the gateway encodes.

    `lossy_method`: for the lossy ones, the Lossy Image Compression Method (0028,2114) defined term
    (PS3.3 C.7.6.1.1.5.1) that an instance encoded in it gets appended.
    """

    uid: str
    name: str
    lossy_method: str | None = None

    @property
    def lossy(self) -> bool:
        return self.lossy_method is not None


# In the order Karnak's Transfer Syntax choice lists them (uncompressed first, then the JPEG family).
ENCODABLE: Final[tuple[Syntax, ...]] = (
    Syntax("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    Syntax("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    Syntax("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", "ISO_10918_1"),
    Syntax("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", "ISO_10918_1"),
    Syntax("1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)"),
    Syntax("1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [SV1])"),
    Syntax("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    Syntax("1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless)", "ISO_14495_1"),
    Syntax("1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)"),
    Syntax("1.2.840.10008.1.2.4.91", "JPEG 2000", "ISO_15444_1"),
    Syntax("1.2.840.10008.1.2.5", "RLE Lossless"),
)
_BY_UID: Final = {syntax.uid: syntax for syntax in ENCODABLE}

# Karnak offers these two; DICOM retired them (PS3.5 Annex A) and today's decoders rarely read them.
RETIRED: Final[dict[str, str]] = {
    "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8)",
    "1.2.840.10008.1.2.4.55": "JPEG Full Progression, Non-Hierarchical (Process 10 & 12)",
}


def encodable(uid: str) -> Syntax | None:
    """The encodable syntax of `uid`, or None when the gateway does not encode it."""
    return _BY_UID.get(uid)


def requested_syntax_problem(requested: str) -> str | None:
    """Why a destination cannot ask for `requested` (None when it is `keep` or an encodable syntax)."""
    if requested == KEEP or requested in _BY_UID:
        return None
    if requested in RETIRED:
        return (
            f"{requested} ({RETIRED[requested]}) is retired in DICOM and the gateway does not encode it; "
            "choose JPEG Extended (1.2.840.10008.1.2.4.51) or a lossless syntax"
        )
    offered = ", ".join(f"{syntax.uid} ({syntax.name})" for syntax in ENCODABLE)
    return f"the gateway encodes only keep, {offered}"
