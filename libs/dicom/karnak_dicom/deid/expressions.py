"""The expressions of ``expression.on.tags`` and of API templates: the `ACTION` and `VALUE` dialects.

The language itself (tokenizer, parser, functions, grammar and semantics) is `karnak_dicom.language`, the
one shared with conditions; this module gives profiles their public types::

    stringValue == 'UNDEFINED' ? Keep() : Remove()
    getString(#Tag.PatientAge) == null ? Keep() : null
    Replace(getString(#Tag.InstitutionName) + '-' + getString(#Tag.StationName))
    https://pseudonyms.example/{{ getString(#Tag.PatientID) }}      (a template)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from karnak_dicom import language
from karnak_dicom.language import KIND_ACTION, NULL, ExprAction, ValueContext

__all__ = [
    "ExprAction",
    "Expression",
    "ExpressionContext",
    "ExpressionError",
    "Template",
    "split_template",
]

ExpressionContext = ValueContext


class ExpressionError(ValueError):
    """An expression cannot be parsed or cannot give what its place needs; ``position`` is 0-based."""

    def __init__(self, detail: str, position: int) -> None:
        self.detail = detail
        self.position = position
        super().__init__(f"{detail} at position {position}")


def _compiled(source: str, dialect: language.Dialect) -> language.Program:
    try:
        return language.compile_text(source, dialect)
    except language.LanguageError as error:
        # Expressions say their hints inside the detail: "unknown method 'x' (did you mean 'y'?)".
        raise ExpressionError(error.detail + (f" ({error.hint})" if error.hint else ""), error.position) from None


@dataclass(frozen=True)
class Expression:
    """A parsed expression; constructing one parses ``source`` and raises ExpressionError when it is invalid."""

    source: str
    dialect: language.Dialect = field(default=language.ACTION, repr=False, compare=False)
    _program: language.Program = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_program", _compiled(self.source, self.dialect))

    @classmethod
    def for_action(cls, source: str) -> Expression:
        """Parse an ``expression.on.tags`` expression: it must give an action or null."""
        expression = cls(source)
        unexpected = expression._program.kinds - {KIND_ACTION, NULL}
        if unexpected:
            raise ExpressionError(
                "the expression must give an action (Keep(), Remove(), Replace('v'), ReplaceNull(), UID(), "
                f"ComputePatientAge(), ExcludeInstance()) or null, but it can give a {' or '.join(sorted(unexpected))}",
                0,
            )
        return expression

    @classmethod
    def for_value(cls, source: str) -> Expression:
        """Parse a template's placeholder: it must give a value (text, a number...), not an action."""
        expression = cls(source, language.VALUE)
        if KIND_ACTION in expression._program.kinds:
            raise ExpressionError("a placeholder must give a value, not an action", 0)
        return expression

    @property
    def uses(self) -> frozenset[str]:
        """Names of the functions and variables used (e.g. to know whether the engine must index nested tags)."""
        return self._program.uses

    def evaluate(self, context: ExpressionContext) -> Any:
        """The value of the expression: an ExprAction, a string, a number, a boolean or None."""
        return self._program.evaluate(context)

    def evaluate_action(self, context: ExpressionContext) -> ExprAction | None:
        """The action chosen, or None (move on to the next profile element)."""
        result = self._program.evaluate(context)
        return result if isinstance(result, ExprAction) else None


def split_template(text: str) -> list[str | tuple[int, str]]:
    """The pieces of a template: plain text, and (position of its ``{{``, inner text) for each placeholder.

    Raises ExpressionError for a ``{{`` without its ``}}``.
    """
    pieces: list[str | tuple[int, str]] = []
    position = 0
    while (start := text.find("{{", position)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            raise ExpressionError("unterminated placeholder (missing '}}')", start)
        pieces += [text[position:start], (start, text[start + 2 : end])]
        position = end + 2
    pieces.append(text[position:])
    return pieces


@dataclass(frozen=True)
class Template:
    """Text with ``{{ expression }}`` placeholders (API URLs and bodies), parsed once."""

    source: str
    _parts: tuple[str | Expression, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[str | Expression] = []
        for piece in split_template(self.source):
            if isinstance(piece, str):
                parts.append(piece)
                continue
            start, inner = piece
            try:
                parts.append(Expression.for_value(inner.strip()))
            except ExpressionError as error:
                offset = start + 2 + (len(inner) - len(inner.lstrip()))
                # An action is refused for the whole placeholder, a syntax error where it is.
                position = start if error.detail.startswith("a placeholder") else offset + error.position
                raise ExpressionError(error.detail, position) from None
        object.__setattr__(self, "_parts", tuple(part for part in parts if part != ""))

    def render(self, context: ExpressionContext, escape: Callable[[str], str] = str) -> str:
        """The text with each placeholder replaced by its value, escaped (null gives an empty string)."""
        pieces: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                pieces.append(part)
            else:
                value = part.evaluate(context)
                pieces.append("" if value is None else escape(language.java_string(value)))
        return "".join(pieces)
