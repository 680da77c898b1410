"""Pseudonym sources that need no peer: hash (known answers computed with hmac here), tag, and the parts of
the api source that are pure (templates, JSON paths, configuration errors)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydicom import Dataset

from karnak_dicom.conditions import Condition
from karnak_dicom.deid import hash_pseudonym
from karnak_processor.pseudonyms import (
    ApiPseudonyms,
    ApiSettings,
    HashPseudonyms,
    JsonPath,
    PseudonymMissing,
    TagPseudonyms,
    compile_get_string,
    parse_tag,
    pseudonym_source,
)
from karnak_shared.config import Pseudonym
from karnak_shared.errors import ConfigError, KarnakError

SECRET = bytes.fromhex("0123456789abcdef0123456789abcdef")
OTHER_SECRET = bytes.fromhex("fedcba9876543210fedcba9876543210")


def instance(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


# --- hash ------------------------------------------------------------------------------------------------


def test_hash_pseudonym_is_the_first_8_bytes_of_the_hmac_of_the_patient_id_in_upper_case_hex() -> None:
    expected = hmac.new(SECRET, b"PAT-0042", hashlib.sha256).hexdigest()[:16].upper()

    pseudonym = HashPseudonyms(SECRET).pseudonym_for(instance(PatientID="PAT-0042"))

    assert pseudonym == expected
    assert len(pseudonym) == 16 and pseudonym == pseudonym.upper()


def test_hash_pseudonym_is_stable_and_depends_on_the_secret_and_the_patient() -> None:
    source = HashPseudonyms(SECRET)

    first = source.pseudonym_for(instance(PatientID="PAT-0042"))

    assert source.pseudonym_for(instance(PatientID="PAT-0042", PatientName="Other^Name")) == first
    assert HashPseudonyms(SECRET).pseudonym_for(instance(PatientID="PAT-0043")) != first
    assert HashPseudonyms(OTHER_SECRET).pseudonym_for(instance(PatientID="PAT-0042")) != first


def test_hash_of_a_non_ascii_patient_id_hashes_question_marks_as_karnaks_java_does() -> None:
    expected = hmac.new(SECRET, b"M?LLER-1", hashlib.sha256).hexdigest()[:16].upper()

    assert HashPseudonyms(SECRET).pseudonym_for(instance(PatientID="MÜLLER-1")) == expected


def test_hash_without_a_patient_id_is_missing_rather_than_one_pseudonym_for_everyone() -> None:
    with pytest.raises(PseudonymMissing, match=r"no PatientID"):
        HashPseudonyms(SECRET).pseudonym_for(instance(PatientName="Doe^John"))
    with pytest.raises(PseudonymMissing, match=r"no PatientID"):
        HashPseudonyms(SECRET).pseudonym_for(instance(PatientID=""))


def test_hash_is_the_default_source() -> None:
    source = pseudonym_source(Pseudonym(), SECRET, None, None)

    assert isinstance(source, HashPseudonyms)


# --- tag -------------------------------------------------------------------------------------------------


def test_tag_pseudonym_is_the_whole_value_without_a_delimiter() -> None:
    source = pseudonym_source(Pseudonym(type="tag", tag="(0010,4000)"), SECRET, None, None)

    assert source.pseudonym_for(instance(PatientComments="  SUBJ-7  ")) == "SUBJ-7"


@pytest.mark.parametrize(
    ("value", "delimiter", "position", "expected"),
    [
        ("STUDY_SUBJ-7_SITE", "_", 1, "SUBJ-7"),
        ("STUDY_SUBJ-7_SITE", "_", 0, "STUDY"),
        ("STUDY_SUBJ-7_SITE", "_", None, "STUDY"),
        ("STUDY_SUBJ-7_SITE", "_", 2, "SITE"),
        ("A-B-C", "-", 2, "C"),
        ("ONE", "_", 0, "ONE"),
    ],
)
def test_tag_pseudonym_takes_the_part_at_the_zero_based_position(
    value: str, delimiter: str, position: int | None, expected: str
) -> None:
    config = Pseudonym(type="tag", tag="PatientComments", delimiter=delimiter, position=position)

    assert pseudonym_source(config, SECRET, None, None).pseudonym_for(instance(PatientComments=value)) == expected


def test_tag_pseudonym_from_a_multi_valued_attribute_splits_on_the_backslash() -> None:
    source = TagPseudonyms(parse_tag("#Tag.OtherPatientIDs", "tag"), "\\", 1)

    assert source.pseudonym_for(instance(OtherPatientIDs=["HOSPITAL-1", "STUDY-9"])) == "STUDY-9"


@pytest.mark.parametrize(
    ("attributes", "position", "reason"),
    [
        ({}, 0, r"no \(0010,4000\) to read the pseudonym from"),
        ({"PatientComments": "A_B"}, 2, r"\(0010,4000\) has 2 part\(s\) separated by '_': no part at position 2"),
        ({"PatientComments": "A__B"}, 1, r"the pseudonym from \(0010,4000\) is empty"),
        ({"PatientComments": "X" * 65}, 0, "longer than 64 characters"),
    ],
)
def test_tag_pseudonym_missing_names_the_tag_never_the_value(
    attributes: dict[str, str], position: int, reason: str
) -> None:
    source = TagPseudonyms(0x00104000, "_", position)

    with pytest.raises(PseudonymMissing, match=reason) as caught:
        source.pseudonym_for(instance(**attributes))

    for value in attributes.values():
        assert value not in caught.value.reason
    assert isinstance(caught.value, KarnakError) and not caught.value.transient


@pytest.mark.parametrize(
    "text", ["(0010,0020)", "0010,0020", "00100020", "PatientID", "#Tag.PatientID", " (0010, 0020) "]
)
def test_tags_are_written_in_every_karnak_way(text: str) -> None:
    assert parse_tag(text, "pseudonym.tag") == 0x00100020


def test_tag_configuration_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"pseudonym.tag: 'PatientIdent' is neither a tag"):
        pseudonym_source(Pseudonym(type="tag", tag="PatientIdent"), SECRET, None, None)
    with pytest.raises(ConfigError, match=r"pseudonym.tag: is required"):
        pseudonym_source(Pseudonym(type="tag"), SECRET, None, None)


# --- configuration of cache and api ----------------------------------------------------------------------


def test_cache_without_a_database_or_project_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"database"):
        pseudonym_source(Pseudonym(type="cache"), SECRET, None, "DEFAULT", project="study-x")
    with pytest.raises(ConfigError, match=r"project"):
        pseudonym_source(Pseudonym(type="cache"), SECRET, lambda: None, "DEFAULT")  # type: ignore[arg-type,return-value]


def test_api_configuration_errors_name_the_field_and_position() -> None:
    with pytest.raises(ConfigError, match=r"pseudonym.url: is required"):
        pseudonym_source(Pseudonym(type="api"), SECRET, None, None)
    with pytest.raises(ConfigError, match=r"pseudonym.body: placeholder at position 8: .*getString"):
        ApiPseudonyms(ApiSettings(url="http://x.example/", method="POST", body='{"id": "{{PatientID}}"}'))
    with pytest.raises(ConfigError, match=r"pseudonym.url: '\{\{' at position 22 has no closing"):
        ApiPseudonyms(ApiSettings(url="http://x.example/p?id={{getString(#Tag.PatientID)"))
    with pytest.raises(ConfigError, match=r"pseudonym.url: placeholder at position 17: .*keyword 'PatientIdentity'"):
        ApiPseudonyms(ApiSettings(url="http://x.example/{{getString(#Tag.PatientIdentity)}}"))
    with pytest.raises(ConfigError, match=r"pseudonym.response_path: cannot read"):
        ApiPseudonyms(ApiSettings(url="http://x.example/", response_path="$.data..id"))


def test_placeholders_read_attributes_by_keyword_or_hex_and_accept_quoted_text() -> None:
    ds = instance(PatientID="PAT-1", IssuerOfPatientID="HOSP")

    assert compile_get_string("getString(#Tag.PatientID)")(ds) == "PAT-1"
    assert compile_get_string("getString('0010,0021')")(ds) == "HOSP"
    assert compile_get_string('getString("(0010,0021)")')(ds) == "HOSP"
    assert compile_get_string("getString(#Tag.PatientAge)")(ds) is None
    assert compile_get_string("'fixed'")(ds) == "fixed"


@pytest.mark.parametrize(
    ("path", "document", "expected"),
    [
        ("$.pseudonym", {"pseudonym": "P-1"}, "P-1"),
        ("pseudonym", {"pseudonym": "P-1"}, "P-1"),
        ("$.data.items[1].id", {"data": {"items": [{"id": "A"}, {"id": "B"}]}}, "B"),
        ("$['the id']", {"the id": 7}, 7),
        ('$["x"][0]', {"x": ["Z"]}, "Z"),
        ("$[0]", ["first"], "first"),
        ("$.missing", {"pseudonym": "P-1"}, None),
        ("$.items[5]", {"items": []}, None),
        ("$.a.b", {"a": "text"}, None),
    ],
)
def test_json_paths_find_members_and_indices(path: str, document: object, expected: object) -> None:
    assert JsonPath(path).find(document) == expected


def test_hash_pseudonyms_and_conditions_read_the_patient_id_as_the_same_text() -> None:
    ds = Dataset()
    ds.PatientID = " 0042 "
    condition = Condition("tagValueIsPresent(#Tag.PatientID, '0042')")
    secret = bytes.fromhex("0123456789abcdef0123456789abcdef")

    assert condition.evaluate(ds)
    assert HashPseudonyms(secret).pseudonym_for(ds) == hash_pseudonym(secret, "0042")
