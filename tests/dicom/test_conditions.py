"""The condition language: what each expression means on a real dataset, and how bad ones are reported."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from karnak_dicom.conditions import Condition, ConditionError, parse_condition
from karnak_shared.errors import ConfigError


def _instance() -> Dataset:
    ds = Dataset()
    ds.StudyDescription = "RESEARCH CT"
    ds.PatientName = "Doe^John"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = ""
    ds.InstanceNumber = 5
    ds.SliceThickness = "1.50"
    ds.Rows = 512
    ds.add_new(0x00091001, "LO", "SITE-A")
    ds.add_new(0x00091002, "UN", b"SITE-B")
    ds.ReferencedSeriesSequence = [Dataset()]
    return ds


EXPRESSIONS = [
    # tagValueIsPresent is equality, case-sensitive, on the whole value
    ("tagValueIsPresent(#Tag.StudyDescription, 'RESEARCH CT')", True),
    ("tagValueIsPresent(#Tag.StudyDescription, 'RESEARCH')", False),
    ("tagValueIsPresent(#Tag.StudyDescription, 'research ct')", False),
    ('tagValueIsPresent(#Tag.Modality, "CT")', True),
    # the other value functions
    ("tagValueContains(#Tag.StudyDescription, 'SEARCH')", True),
    ("tagValueContains(#Tag.StudyDescription, 'search')", False),
    ("tagValueBeginsWith(#Tag.StudyDescription, 'RESEARCH')", True),
    ("tagValueBeginsWith(#Tag.StudyDescription, 'CT')", False),
    ("tagValueEndsWith(#Tag.StudyDescription, ' CT')", True),
    ("tagValueEndsWith(#Tag.StudyDescription, 'RESEARCH')", False),
    ("tagIsPresent(#Tag.StudyDescription)", True),
    ("tagIsPresent(#Tag.AccessionNumber)", False),
    # the three hex spellings, either quote, either case
    ("tagValueIsPresent('0010,0010', 'Doe^John')", True),
    ("tagValueIsPresent('(0010,0010)', 'Doe^John')", True),
    ("tagValueIsPresent('00100010', 'Doe^John')", True),
    ('tagValueIsPresent("0008,103e", "")', True),
    ("tagIsPresent('(0008,103E)')", True),
    ('tagIsPresent("00080050")', False),
    # private tags by hex, including undecoded UN bytes
    ("tagValueBeginsWith('0009,1001', 'SITE')", True),
    ("tagValueIsPresent('00091002', 'SITE-B')", True),
    # multi-valued attributes compare as their values joined with a backslash
    (r"tagValueIsPresent(#Tag.ImageType, 'ORIGINAL\PRIMARY\AXIAL')", True),
    ("tagValueIsPresent(#Tag.ImageType, 'ORIGINAL')", False),
    (r"tagValueContains(#Tag.ImageType, 'PRIMARY\AXIAL')", True),
    (r"tagValueEndsWith(#Tag.ImageType, '\AXIAL')", True),
    (r"tagValueBeginsWith(#Tag.ImageType, 'ORIGINAL\\')", True),
    # numbers compare as their string form
    ("tagValueIsPresent(#Tag.InstanceNumber, '5')", True),
    ("tagValueIsPresent(#Tag.SliceThickness, '1.50')", True),
    ("tagValueIsPresent(#Tag.Rows, '512')", True),
    # an empty needle matches any present value, even an empty one, and no absent one
    ("tagValueContains(#Tag.StudyDescription, '')", True),
    ("tagValueIsPresent(#Tag.SeriesDescription, '')", True),
    ("tagValueBeginsWith(#Tag.SeriesDescription, '')", True),
    ("tagValueEndsWith(#Tag.SeriesDescription, '')", True),
    ("tagValueContains(#Tag.AccessionNumber, '')", False),
    ("tagValueIsPresent(#Tag.AccessionNumber, '')", False),
    # a sequence is present but has no string value
    ("tagIsPresent(#Tag.ReferencedSeriesSequence)", True),
    ("tagValueContains(#Tag.ReferencedSeriesSequence, '')", False),
    # symbol and word operators, words in any case
    ("!tagIsPresent(#Tag.AccessionNumber)", True),
    ("not tagIsPresent(#Tag.Modality)", False),
    ("NOT tagIsPresent(#Tag.Modality)", False),
    ("tagIsPresent(#Tag.Modality) && tagIsPresent(#Tag.AccessionNumber)", False),
    ("tagIsPresent(#Tag.Modality) and tagIsPresent(#Tag.PatientName)", True),
    ("tagIsPresent(#Tag.AccessionNumber) || tagIsPresent(#Tag.Modality)", True),
    ("tagIsPresent(#Tag.AccessionNumber) Or tagIsPresent(#Tag.OperatorsName)", False),
    ("!tagIsPresent(#Tag.Modality)||tagValueIsPresent(#Tag.Modality,'CT')", True),
    # literals and precedence: not > and > or (each case differs under the wrong grouping)
    ("TRUE", True),
    ("False", False),
    ("true or true and false", True),
    ("false and true or true", True),
    ("not false and false", False),
    ("not true or true", True),
    ("!(true && false)", True),
    ("(true || false) && false", False),
    ("true && !!true", True),
    (
        (
            '(tagValueIsPresent(#Tag.Modality, "CT") or tagValueIsPresent(#Tag.Modality, "MR"))'
            ' and not tagValueContains(#Tag.StudyDescription, "TEST")'
        ),
        True,
    ),
]


@pytest.mark.parametrize(("expression", "expected"), EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_expression_evaluates_as_karnak_does(expression: str, expected: bool) -> None:
    assert Condition.parse(expression).evaluate(_instance()) is expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r"'O\'Brien'", "O'Brien"),
        ("'O''Brien'", "O'Brien"),
        ('"O\'Brien"', "O'Brien"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\'", "back\\"),
        (r"'A\B'", "A\\B"),
    ],
)
def test_string_escapes_reach_the_comparison(literal: str, value: str) -> None:
    ds = Dataset()
    ds.StudyDescription = value
    assert Condition.parse(f"tagValueIsPresent(#Tag.StudyDescription, {literal})").evaluate(ds)


@pytest.mark.parametrize(
    "function", ["tagValueIsPresent", "tagValueContains", "tagValueBeginsWith", "tagValueEndsWith"]
)
def test_absent_attribute_makes_contains_false_even_for_empty_needle(function: str) -> None:
    condition = Condition.parse(f"{function}(#Tag.StudyDescription, '')")
    assert condition.evaluate(Dataset()) is False


def test_attribute_present_without_value_counts_as_empty_string() -> None:
    ds = Dataset()
    ds.add_new(0x00280010, "US", None)
    assert Condition.parse("tagIsPresent(#Tag.Rows) && tagValueIsPresent(#Tag.Rows, '')").evaluate(ds)


def test_person_name_compares_as_its_string_form() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^John^^Dr"
    assert Condition.parse("tagValueIsPresent(#Tag.PatientName, 'Doe^John^^Dr')").evaluate(ds)


def test_tag_is_present_looks_only_at_the_top_level() -> None:
    item = Dataset()
    item.SeriesInstanceUID = "1.2.3"
    ds = Dataset()
    ds.ReferencedSeriesSequence = [item]
    assert Condition.parse("tagIsPresent(#Tag.SeriesInstanceUID)").evaluate(ds) is False


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_condition_is_always_true(text: str) -> None:
    assert Condition.parse(text).evaluate(Dataset()) is True


def test_a_condition_is_parsed_once_and_evaluated_against_many_datasets() -> None:
    condition = Condition.parse("tagValueBeginsWith(#Tag.Modality, 'M')")
    outcomes = []
    for modality in ["MR", "CT", "MG", "US"]:
        ds = Dataset()
        ds.Modality = modality
        outcomes.append(condition.evaluate(ds))
    assert outcomes == [True, False, True, False]


def test_parse_condition_is_the_same_as_condition_parse() -> None:
    text = "tagIsPresent(#Tag.Modality)"
    assert parse_condition(text) == Condition.parse(text) == Condition(text)
    assert hash(parse_condition(text)) == hash(Condition(text))
    assert parse_condition(text).source == text


def test_constructing_a_condition_directly_validates_it() -> None:
    with pytest.raises(ConditionError):
        Condition("tagIsPresent(")


def test_condition_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_condition("tagIsPresent(#Tag.NotAKeyword)")
    assert isinstance(caught.value, ConditionError)
    assert caught.value.problems == [str(caught.value)]


def test_long_chains_of_operators_do_not_recurse_per_term() -> None:
    text = " or ".join(["false"] * 5000 + ["true"])
    assert Condition.parse(text).evaluate(Dataset()) is True


def test_pathological_nesting_is_a_condition_error_not_a_recursion_error() -> None:
    with pytest.raises(ConditionError, match="nested"):
        Condition.parse("(" * 1000 + "true" + ")" * 1000)
    with pytest.raises(ConditionError, match="nested"):
        Condition.parse("!" * 1000 + "true")


def test_unknown_names_come_with_a_suggestion() -> None:
    with pytest.raises(ConditionError, match="did you mean 'StudyDescription'"):
        parse_condition("tagValueContains(#Tag.StudyDescripton, 'x')")
    with pytest.raises(ConditionError, match="did you mean 'tagValueContains'"):
        parse_condition("tagValueContain(#Tag.StudyDescription, 'x')")


MALFORMED = [
    ("tagValueContain(#Tag.StudyDescription, 'x')", "unknown function 'tagValueContain'", 0),
    ("tagValueContains(#Tag.StudyDescripton, 'x')", "unknown DICOM keyword 'StudyDescripton'", 17),
    ("tagIsPresent(#Tag.NotAKeyword)", "unknown DICOM keyword 'NotAKeyword'", 13),
    ("tagValueContains(#Tag.StudyDescription, 'x'", "expected ')'", 43),
    ("tagIsPresent(#Tag.Modality", "expected ')'", 26),
    ("tagIsPresent(#Tag.Modality, 'x')", "wrong number of arguments for tagIsPresent", 0),
    ("true and tagValueIsPresent(#Tag.Modality)", "wrong number of arguments for tagValueIsPresent", 9),
    ("tagIsPresent()", "wrong number of arguments for tagIsPresent", 0),
    ("tagIsPresent('0010,001G')", "invalid tag '0010,001G'", 13),
    ("tagIsPresent('(0010,0010')", "invalid tag '(0010,0010'", 13),
    ("tagIsPresent('0010001')", "invalid tag '0010001'", 13),
    ("tagIsPresent('PatientName')", "invalid tag 'PatientName'", 13),
    ("tagValueIsPresent(#Tag.Modality, 'CT)", "unterminated string", 33),
    (r"tagValueIsPresent(#Tag.Modality, 'CT\')", "unterminated string", 33),
    ("tagIsPresent(#Tag.Modality) tagIsPresent(#Tag.PatientName)", "after a complete condition", 28),
    ("tagValueIsPresent(#Tag.Modality, 'CT') 'MR'", "after a complete condition", 39),
    ("tagIsPresent(#Tag.Modality))", "unexpected ')' after a complete condition", 27),
    ("tagIsPresent(#Tag.Modality) &&", "expected a condition", 30),
    ("tagIsPresent(#Tag.Modality) and not", "expected a condition", 35),
    ("()", "expected a condition", 1),
    ("tagIsPresent(#Tag.Modality) & tagIsPresent(#Tag.PatientName)", "unexpected character '&'", 28),
    ("tagIsPresent(#Tag.Modality) | true", "unexpected character '|'", 28),
    ("  tagIsPresent(#Tag.Modality) == 'CT'", "unexpected character '='", 30),
    ("tagIsPresent(#Tag.)", "expected a DICOM keyword after '#Tag.'", 18),
    ("tagIsPresent(#Modality)", "expected '#Tag.<Keyword>'", 13),
    (
        "tagValueIsPresent(#Tag.Modality, #Tag.PatientName)",
        "expected a quoted string as the value of tagValueIsPresent",
        33,
    ),
    ("tagIsPresent", "expected '(' after 'tagIsPresent'", 12),
    ("tagIsPresent(#Tag.Modality,)", "expected a tag or a quoted string", 27),
    ("PatientName", "unexpected word 'PatientName'", 0),
]


@pytest.mark.parametrize(("expression", "fragment", "position"), MALFORMED, ids=[e for e, _, _ in MALFORMED])
def test_malformed_expression_is_reported_with_what_and_where(expression: str, fragment: str, position: int) -> None:
    with pytest.raises(ConditionError) as caught:
        Condition.parse(expression)
    assert fragment in str(caught.value)
    assert f"at position {position}" in str(caught.value)
    assert caught.value.position == position
