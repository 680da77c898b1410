"""The HMAC-SHA256 derivations Karnak uses, bit for bit, so a hospital keeps its pseudonyms, UIDs and dates.

Every value is keyed with the project secret (16 bytes). Text is hashed as US-ASCII with each character
outside it replaced by ``?``, which is what Java's ``String.getBytes(US_ASCII)`` does in Karnak.
"""

from __future__ import annotations

import hmac
from typing import Final

from karnak_dicom.errors import ConfigError

__all__ = [
    "SECRET_BYTES",
    "hash_pseudonym",
    "keyed_digest",
    "parse_project_secret",
    "patient_id_from_pseudonym",
    "scale_hash",
    "uid_hash",
]

SECRET_BYTES: Final = 16
_TWO_POW_48: Final = float(1 << 48)


def parse_project_secret(text: str) -> bytes:
    """The 16 bytes of a project secret written as 32 hexadecimal digits (dashes allowed anywhere).

    Raises ConfigError without repeating the text, which is a secret.
    """
    digits = text.strip().replace("-", "")
    if len(digits) != 2 * SECRET_BYTES:
        raise ConfigError(f"project secret: must be {2 * SECRET_BYTES} hexadecimal digits (dashes allowed)")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ConfigError("project secret: must contain only hexadecimal digits (dashes allowed)") from None


def keyed_digest(secret: bytes, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` (as US-ASCII, '?' for other characters) keyed with ``secret``."""
    return hmac.digest(secret, value.encode("ascii", "replace"), "sha256")


def uid_hash(secret: bytes, uid: str) -> str:
    """The replacement of a UID: ``2.25.`` and the first 16 bytes of the HMAC made a version-4 UUID, in decimal."""
    digest = bytearray(keyed_digest(secret, uid)[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return "2.25." + str(int.from_bytes(digest, "big"))


def patient_id_from_pseudonym(secret: bytes, pseudonym: str) -> str:
    """The PatientID of a de-identified instance: the first 16 bytes of HMAC(pseudonym), upper-case hexadecimal
    without leading zeros."""
    return format(int.from_bytes(keyed_digest(secret, pseudonym)[:16], "big"), "X")


def hash_pseudonym(secret: bytes, patient_id: str) -> str:
    """The default pseudonym: the first 8 bytes of HMAC(PatientID) in upper-case hexadecimal (16 digits)."""
    return keyed_digest(secret, patient_id)[:8].hex().upper()


def scale_hash(secret: bytes, value: str, low: int, high: int) -> int:
    """A number in [low, high) drawn from HMAC(value): its first 6 bytes over 2^48, scaled and truncated.

    Computed in binary floating point exactly as Karnak's Java code does, so the shifts agree to the day.
    """
    fraction = int.from_bytes(keyed_digest(secret, value)[:6], "big") / _TWO_POW_48
    return int(fraction * (float(high) - float(low))) + low
