"""The subject pattern's Java `String.format` semantics (expected values checked against Java 17)."""

from __future__ import annotations

import pytest

from karnak_notifier.java_format import PatternError, java_format

LONG_DESCRIPTION = "A VERY LONG STUDY DESCRIPTION THAT GOES ON AND ON"


def test_the_karnak_default_pattern_cuts_the_second_value_at_thirty_characters() -> None:
    subject = java_format("[Karnak Notification] %s %.30s", ["PID-1", LONG_DESCRIPTION])
    assert subject == "[Karnak Notification] PID-1 A VERY LONG STUDY DESCRIPTION "
    assert subject.endswith(LONG_DESCRIPTION[:30])


def test_a_value_shorter_than_the_precision_is_kept_whole() -> None:
    assert java_format("%.30s|", ["SHORT"]) == "SHORT|"


def test_precision_zero_prints_nothing() -> None:
    assert java_format("%.0s|", ["abc"]) == "|"


def test_a_double_percent_is_one_percent_sign() -> None:
    assert java_format("100%% %s", ["done"]) == "100% done"


def test_a_double_percent_takes_a_width_and_the_minus_flag() -> None:
    assert java_format("%5%|%-5%|", []) == "    %|%    |"


def test_fewer_values_than_placeholders_is_an_error_as_in_java() -> None:
    with pytest.raises(PatternError, match="needs value number 3 but only 2"):
        java_format("%s %s %s", ["a", "b"])


def test_more_values_than_placeholders_leaves_the_extra_ones_out() -> None:
    assert java_format("%s %s", ["a", "b", "c"]) == "a b"


def test_width_pads_on_the_left_and_the_minus_flag_on_the_right() -> None:
    assert java_format("%.3s|%-6s|%6s|%-6.2s|", ["abcdef", "ab", "ab", "xyz"]) == "abc|ab    |    ab|xy    |"


def test_upper_case_s_upper_cases_after_the_cut() -> None:
    assert java_format("%.2S", ["abc"]) == "AB"


def test_explicit_indexes_do_not_move_the_ordinary_index() -> None:
    assert java_format("%2$s %1$s %s %<s", ["a", "b"]) == "b a a a"
    assert java_format("%1$s %s %s", ["a", "b"]) == "a a b"


def test_a_relative_index_repeats_the_previous_value() -> None:
    assert java_format("%2$s %<s %s", ["a", "b"]) == "b b a"


def test_a_null_value_prints_null_as_in_java() -> None:
    assert java_format("%s", [None]) == "null"


def test_percent_n_is_a_line_break() -> None:
    assert java_format("a%nb", []) == "a\nb"


def test_text_right_after_a_placeholder_is_kept() -> None:
    assert java_format("%ss", ["a"]) == "as"


def test_a_pattern_without_placeholders_is_itself() -> None:
    assert java_format("Karnak", ["a"]) == "Karnak"


@pytest.mark.parametrize(
    ("pattern", "values", "message"),
    [
        pytest.param("%<s", ["a"], "refers to a previous value", id="relative-without-previous"),
        pytest.param("%3$s", ["a", "b"], "needs value number 3", id="index-past-the-values"),
        pytest.param("%0$s", ["a"], "start at 1", id="index-zero"),
        pytest.param("%.2%", [], "takes only a width", id="precision-on-percent"),
        pytest.param("%-s", ["a"], "needs a width", id="minus-without-width"),
        pytest.param("%--5s", ["a"], "duplicate flag", id="duplicate-flag"),
        pytest.param("%#s", ["a"], "do not apply to text", id="alternate-flag"),
        pytest.param("%+s", ["a"], "do not apply to text", id="plus-flag"),
        pytest.param("%d", ["a"], "unsupported conversion 'd'", id="number-conversion"),
        pytest.param("%tY", ["a"], "date or time", id="date-conversion"),
        pytest.param("%b", ["a"], "unsupported conversion 'b'", id="boolean-conversion"),
        pytest.param("%q", ["a"], "unsupported conversion 'q'", id="unknown-conversion"),
        pytest.param("end %", ["a"], "unknown format conversion at position 4", id="dangling-percent"),
        pytest.param("a%nb%1$n", [], "takes no index", id="indexed-line-break"),
    ],
)
def test_patterns_java_throws_on_are_refused(pattern: str, values: list[str], message: str) -> None:
    with pytest.raises(PatternError, match=message):
        java_format(pattern, values)
