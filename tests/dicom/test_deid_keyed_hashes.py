"""The HMAC derivations, checked against values computed here independently with hmac and hashlib."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest

from karnak_dicom.deid import (
    hash_pseudonym,
    parse_project_secret,
    patient_id_from_pseudonym,
    scale_hash,
    uid_hash,
)
from karnak_shared.errors import ConfigError

SECRET_TEXT = "2c5f0a3b-91d4-4e7a-b8c6-0f1e2d3c4b5a"
SECRET = bytes.fromhex(SECRET_TEXT.replace("-", ""))
OTHER_SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")


def _mac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("ascii"), hashlib.sha256).digest()


def test_a_secret_is_32_hex_digits_with_dashes_anywhere() -> None:
    assert parse_project_secret(SECRET_TEXT) == SECRET
    assert parse_project_secret(SECRET_TEXT.replace("-", "").upper()) == SECRET
    assert parse_project_secret("2c5f0a3b91d44e7ab8c60f1e2d3c4b5a") == SECRET


@pytest.mark.parametrize("text", ["", "abc", "2c5f0a3b91d44e7ab8c60f1e2d3c4b5", "zz5f0a3b91d44e7ab8c60f1e2d3c4b5a"])
def test_a_malformed_secret_is_a_configuration_error_that_does_not_repeat_it(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_project_secret(text)
    assert "32 hexadecimal digits" in str(caught.value) or "hexadecimal" in str(caught.value)
    if text:
        assert text not in str(caught.value)


def test_a_uid_becomes_2_25_and_the_hmac_made_a_version_4_uuid() -> None:
    original = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    digest = bytearray(_mac(SECRET, original)[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    expected = "2.25." + str(int.from_bytes(digest, "big"))

    assert uid_hash(SECRET, original) == expected
    # the same number read as a UUID is a random (version 4, RFC 4122 variant) UUID
    as_uuid = uuid.UUID(int=int(expected[5:]))
    assert as_uuid.version == 4
    assert as_uuid.variant == uuid.RFC_4122
    assert len(expected) <= 64


def test_the_patient_id_is_the_hmac_of_the_pseudonym_in_upper_case_hex_without_leading_zeros() -> None:
    pseudonym = "RESEARCH-0042"
    expected = format(int.from_bytes(_mac(SECRET, pseudonym)[:16], "big"), "X")
    assert patient_id_from_pseudonym(SECRET, pseudonym) == expected
    assert expected == expected.upper() and not expected.startswith("0")


def test_leading_zero_bytes_are_dropped_from_the_patient_id() -> None:
    # find a pseudonym whose HMAC starts with a zero nibble, and check the id is shorter than 32 digits
    pseudonym = next(p for p in (f"P{i}" for i in range(1000)) if _mac(SECRET, p)[0] < 0x10)
    assert len(patient_id_from_pseudonym(SECRET, pseudonym)) < 32


def test_the_default_pseudonym_is_the_first_8_bytes_of_the_hmac_of_the_patient_id() -> None:
    assert hash_pseudonym(SECRET, "PID-0012345678") == _mac(SECRET, "PID-0012345678")[:8].hex().upper()
    assert len(hash_pseudonym(SECRET, "x")) == 16


def test_scale_hash_takes_6_bytes_over_2_to_the_48_scaled_and_truncated() -> None:
    value = "PID-0012345678"
    fraction = int.from_bytes(_mac(SECRET, value)[:6], "big") / 2**48
    assert scale_hash(SECRET, value, 50, 100) == int(fraction * 50) + 50
    assert scale_hash(SECRET, value, 0, 86400) == int(fraction * 86400)
    for low, high in ((0, 1), (10, 11), (-5, 5), (0, 365)):
        assert low <= scale_hash(SECRET, value, low, high) < high or low == high


def test_text_outside_ascii_is_hashed_as_java_does_with_a_question_mark_per_character() -> None:
    assert uid_hash(SECRET, "1.2.é") == uid_hash(SECRET, "1.2.?")
    assert hash_pseudonym(SECRET, "Müller") == _mac(SECRET, "M?ller")[:8].hex().upper()


def test_the_derivations_are_stable_and_depend_on_the_secret() -> None:
    uid = "1.2.3.4.5"
    assert uid_hash(SECRET, uid) == uid_hash(SECRET, uid)
    assert uid_hash(SECRET, uid) != uid_hash(OTHER_SECRET, uid)
    assert hash_pseudonym(SECRET, "A") != hash_pseudonym(OTHER_SECRET, "A")
    assert patient_id_from_pseudonym(SECRET, "A") != patient_id_from_pseudonym(OTHER_SECRET, "A")
    assert uid_hash(SECRET, "1.2.3.4.5") != uid_hash(SECRET, "1.2.3.4.6")
