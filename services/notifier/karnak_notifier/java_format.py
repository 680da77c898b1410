"""Java `String.format` for the text conversions a Karnak subject pattern uses (DESIGN.md section 5).

Karnak fills the subject with `String.format(pattern, values)`, so a configuration moved from Karnak must
give the same subject here: `%s` and `%S` with Java's argument index (`%2$s`, `%<s`), `-` flag, width and
precision (`%.30s` keeps the first 30 characters), plus `%%` and `%n`. Java's other conversions take
numbers or dates, which a subject value never is, and are refused as Java refuses a string for them;
`%b` and `%h`, which Java would print as `true` or a hash code, are refused too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The specifier syntax of java.util.Formatter: %[argument_index$][flags][width][.precision]conversion
_SPECIFIER = re.compile(r"%(\d+\$)?([-#+ 0,(<]*)?(\d+)?(\.\d+)?([tT])?([a-zA-Z%])")


class PatternError(ValueError):
    """The pattern is one Java's `String.format` would throw on (with these values)."""


def java_format(pattern: str, values: Sequence[str | None]) -> str:
    """Format `values` into `pattern` as Java's `String.format` does; a None value prints `null` as in Java.

    Raises `PatternError` where Java throws: a placeholder without a value (MissingFormatArgument), an
    unknown or non-text conversion, or flags, width or precision a conversion does not take.
    """
    out: list[str] = []
    position = 0
    ordinary = 0  # the next value taken by a placeholder without an explicit index
    last: int | None = None  # the value of the previous placeholder, for `%<s`
    while True:
        start = pattern.find("%", position)
        if start < 0:
            out.append(pattern[position:])
            return "".join(out)
        out.append(pattern[position:start])
        match = _SPECIFIER.match(pattern, start)
        if match is None:
            raise PatternError(f"unknown format conversion at position {start}: {pattern[start : start + 2]!r}")
        position = match.end()
        index_text, flags, width_text, precision_text, time_prefix, conversion = match.groups()
        spec = match.group(0)
        flags = flags or ""
        if len(set(flags)) != len(flags):
            raise PatternError(f"duplicate flag in {spec!r}")
        if time_prefix:
            raise PatternError(f"{spec!r} formats a date or time; subject values are text: use %s")
        width = int(width_text) if width_text else None
        precision = int(precision_text[1:]) if precision_text else None
        left = "-" in flags
        if left and width is None:
            raise PatternError(f"{spec!r}: the '-' flag needs a width")
        if conversion == "%":
            if index_text or precision is not None or set(flags) - {"-"}:
                raise PatternError(f"{spec!r}: '%%' takes only a width and the '-' flag")
            out.append(_justify("%", width, left))
            continue
        if conversion == "n":
            if index_text or flags or width is not None or precision is not None:
                raise PatternError(f"{spec!r}: '%n' takes no index, flag, width or precision")
            out.append("\n")
            continue
        if conversion not in ("s", "S"):
            raise PatternError(f"{spec!r}: unsupported conversion '{conversion}' (subject values are text: use %s)")
        if set(flags) - {"-", "<"}:
            raise PatternError(f"{spec!r}: flags {''.join(sorted(set(flags) - {'-', '<'}))!r} do not apply to text")
        if "<" in flags:
            if last is None:
                raise PatternError(f"{spec!r}: '<' refers to a previous value but there is none")
            chosen = last
        elif index_text:
            chosen = int(index_text[:-1]) - 1
            if chosen < 0:
                raise PatternError(f"{spec!r}: argument indexes start at 1")
        else:
            chosen = ordinary
            ordinary += 1
        if chosen >= len(values):
            raise PatternError(f"{spec!r} needs value number {chosen + 1} but only {len(values)} value(s) are given")
        last = chosen
        value = values[chosen]
        text = "null" if value is None else value
        if precision is not None:
            text = text[:precision]
        if conversion == "S":
            text = text.upper()
        out.append(_justify(text, width, left))


def _justify(text: str, width: int | None, left: bool) -> str:
    if width is None or len(text) >= width:
        return text
    return text.ljust(width) if left else text.rjust(width)
