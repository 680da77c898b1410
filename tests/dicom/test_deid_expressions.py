"""The expression language of expression.on.tags and API templates: values, actions and parse errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from karnak_dicom.deid import Expression, ExpressionError, Template
from karnak_dicom.deid.expressions import ExprAction


@dataclass
class Context:
    string_value: str | None = "RESEARCH CT"
    tag: int | None = 0x00081030
    vr: str | None = "LO"
    attributes: dict[int, str] = field(default_factory=lambda: {0x00080080: "Hospital", 0x00100020: "PID-1"})
    nested: set[int] = field(default_factory=lambda: {0x00080104})
    age: str | None = "054Y"

    def get_string(self, tag: int) -> str | None:
        return self.attributes.get(tag)

    def tag_is_present(self, tag: int) -> bool:
        return tag in self.attributes or tag in self.nested

    def patient_age(self) -> str | None:
        return self.age


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'a' + 'b'", "ab"),
        ("'it''s'", "it's"),
        ('"double"', "double"),
        ("1 + 2", 3),
        ("5 - 7", -2),
        ("-3", -3),
        ("null", None),
        ("stringValue", "RESEARCH CT"),
        ("tag == #Tag.StudyDescription", True),
        ("tag == 528432", True),
        ("vr == #VR.LO", True),
        ("vr != #VR.PN && !(vr eq 'PN')", True),
        ("stringValue.contains('SEARCH') and not stringValue.startsWith('X') or false", True),
        ("stringValue.endsWith('CT') ? 'yes' : 'no'", "yes"),
        ("stringValue.toLowerCase().substring(0, 8)", "research"),
        ("stringValue.substring(9, 100)", "CT"),
        ("stringValue.length() > 5", True),
        ("stringValue.indexOf('CT')", 9),
        ("stringValue.replace('CT', 'MR')", "RESEARCH MR"),
        ("stringValue.equalsIgnoreCase('research ct')", True),
        ("' x '.trim().isEmpty()", False),
        ("getString(#Tag.InstitutionName)", "Hospital"),
        ("getString('0010,0020')", "PID-1"),
        ("getString(#Tag.PatientAge) == null", True),
        ("getString(#Tag.PatientAge)?.contains('Y')", None),  # a method on null gives null
        ("getString(#Tag.PatientAge) ?: 'unknown'", "unknown"),
        ("getString(#Tag.PatientAge) + '-'", "null-"),  # as SpEL joins a null
        ("tagIsPresent(#Tag.CodeMeaning)", True),
        ("tagIsPresent('(0010,0010)')", False),
        ("1 < 2 and 'a' lt 'b' and 2 >= 2 and 3 le 2", False),
        ("'1' == 1", False),
    ],
)
def test_expressions_evaluate_as_spel_would(source: str, expected: object) -> None:
    assert Expression(source).evaluate(Context()) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Keep()", ExprAction("K")),
        ("Remove()", ExprAction("X")),
        ("ReplaceNull()", ExprAction("Z")),
        ("UID()", ExprAction("U")),
        ("Replace('v')", ExprAction("D", "v")),
        ("Replace(getString(#Tag.PatientAge))", ExprAction("D", None)),
        ("Replace(42)", ExprAction("D", "42")),
        ("ComputePatientAge()", ExprAction("D", "054Y")),
        ("ExcludeInstance()", ExprAction("E")),
        ("getString(#Tag.PatientAge) == null ? Keep() : null", ExprAction("K")),
        ("stringValue == 'OTHER' ? Keep() : null", None),
    ],
)
def test_action_expressions_give_the_action_or_null(source: str, expected: ExprAction | None) -> None:
    assert Expression.for_action(source).evaluate_action(Context()) == expected


def test_a_null_string_value_makes_tests_false_rather_than_failing() -> None:
    context = Context(string_value=None)
    assert Expression("stringValue.contains('x') ? Keep() : Remove()").evaluate(context) == ExprAction("X")
    assert Expression("!stringValue.contains('x')").evaluate(context) is True


@pytest.mark.parametrize(
    ("source", "message", "position"),
    [
        ("", "empty expression", 0),
        ("Keep(", "expected a value, found end of expression", 5),
        ("Keep() Remove()", "unexpected 'Remove' after a complete expression", 7),
        ("Kep()", "unknown function or variable 'Kep' (did you mean 'Keep'?)", 0),
        ("stringValue.containz('a')", "unknown method 'containz' (did you mean 'contains'?)", 12),
        ("Replace()", "Replace takes 1 argument(s), got 0", 0),
        ("stringValue.substring()", "substring takes 1 or 2 argument(s), got 0", 12),
        ("getString(#Tag.PatientNam)", "unknown DICOM keyword 'PatientNam' (did you mean 'PatientName'?)", 10),
        ("getString('00100')", "invalid tag '00100': expected (gggg,eeee), gggg,eeee or ggggeeee, X for any digit", 10),
        ("getString(true)", "getString needs a tag such as #Tag.PatientID", 10),
        ("vr == #VR.QQ", "unknown VR 'QQ'", 6),
        ("#Foo", "expected '#Tag.<Keyword>' or '#VR.<VR>'", 0),
        ("a == b", "unknown function or variable 'a'", 0),
        ("stringValue = 'x'", "unexpected character '=' (compare with '==')", 12),
        ("'open", "unterminated string (missing closing ')", 0),
        ("true ? Keep()", "expected ':', found end of expression", 13),
        ("stringValue & 'x'", "unexpected character '&' (use '&&' or 'and')", 12),
        ("(" * 101 + "null" + ")" * 101, "expression nested more than 100 levels deep", 100),
    ],
)
def test_invalid_expressions_are_reported_with_the_position(source: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression(source)
    assert caught.value.detail == message
    assert caught.value.position == position


@pytest.mark.parametrize("source", ["stringValue", "'text'", "tagIsPresent(#Tag.PatientID)", "1 + 1"])
def test_an_action_expression_that_can_give_something_else_is_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match="must give an action"):
        Expression.for_action(source)


def test_templates_replace_each_placeholder_by_its_value() -> None:
    template = Template('{"patientId": "{{ getString(#Tag.PatientID) }}", "site": "{{getString(#Tag.StationName)}}"}')
    assert template.render(Context()) == '{"patientId": "PID-1", "site": ""}'
    assert Template("no placeholders").render(Context()) == "no placeholders"


@pytest.mark.parametrize(
    ("source", "message", "position"),
    [
        ("http://x/{{getString(#Tag.PatientID)", "unterminated placeholder (missing '}}')", 9),
        ("http://x/{{ Kep() }}", "unknown function or variable 'Kep' (did you mean 'Keep'?)", 12),
        ("http://x/{{Keep()}}", "a placeholder must give a value, not an action", 9),
    ],
)
def test_invalid_templates_are_reported_with_the_position_in_the_whole_text(
    source: str, message: str, position: int
) -> None:
    with pytest.raises(ExpressionError) as caught:
        Template(source)
    assert (caught.value.detail, caught.value.position) == (message, position)
