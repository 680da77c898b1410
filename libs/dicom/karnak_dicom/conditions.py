"""Karnak's condition language: boolean expressions over the attributes of a DICOM instance.

A condition such as ``tagValueContains(#Tag.StudyDescription, 'RESEARCH') && !tagIsPresent('0010,0020')``
decides whether a destination, a profile element or a filter applies to an instance. Karnak evaluates these
with Spring's expression language; here they are the `CONDITION` dialect of `karnak_dicom.language` (the
one tokenizer and parser of every expression of a configuration), compiled once when the configuration is
loaded into an immutable tree evaluated for every instance. Nothing is ever handed to ``eval``.

Grammar (``not`` binds tighter than ``and``, which binds tighter than ``or``)::

    condition := or_expr END                 (empty text: always true)
    or_expr   := and_expr (('||' | 'or') and_expr)*
    and_expr  := unary (('&&' | 'and') unary)*
    unary     := ('!' | 'not') unary | primary
    primary   := '(' or_expr ')' | 'true' | 'false' | call
    call      := FUNCTION '(' [argument (',' argument)*] ')'
    argument  := '#Tag.' KEYWORD | STRING

The words ``and``, ``or``, ``not``, ``true`` and ``false`` are case-insensitive; function names and tag
keywords are case-sensitive, as in Karnak. A tag is ``#Tag.<Keyword>`` or a quoted hex string
(``'0010,0010'``, ``'(0010,0010)'`` or ``'00100010'``). In a string, a backslash escapes the quote
character or another backslash (so a needle can end with ``\\``), any other backslash is kept as is (so
``'ORIGINAL\\PRIMARY'`` matches a multi-valued attribute); a doubled quote is also an escaped quote, which
is how Karnak's expression language spells it, so Karnak conditions can be copied over unchanged.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic_core import core_schema
from pydicom import Dataset

from karnak_dicom import language
from karnak_dicom.errors import ConfigError

__all__ = ["Condition", "ConditionError", "parse_condition"]

MAX_NESTING: Final = language.MAX_NESTING


class ConditionError(ConfigError):
    """A condition cannot be parsed; ``position`` is the 0-based offset of the problem in its text."""

    def __init__(self, detail: str, position: int, hint: str | None = None) -> None:
        self.detail = detail
        self.position = position
        message = f"{detail} at position {position}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class Condition(str):
    """A parsed condition: its text (it is a ``str``: compared, hashed and printed as the text), compiled.

    Constructing one parses ``source`` (so an invalid condition can never exist), raising ConditionError;
    it is immutable and safe to share across threads. In a pydantic model a ``Condition`` field takes the
    text and holds the compiled condition; it is written back (and shown in JSON schemas) as the text.
    """

    _program: language.Program

    def __new__(cls, source: str) -> Condition:
        try:
            program = language.compile_text(source, language.CONDITION)
        except language.LanguageError as error:
            raise ConditionError(error.detail, error.position, error.hint) from None
        condition = super().__new__(cls, source)
        condition._program = program
        return condition

    @property
    def source(self) -> str:
        """The condition's text."""
        return str.__str__(self)

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``text``; empty or blank text is the condition that is always true."""
        return cls(text)

    @property
    def always_true(self) -> bool:
        """Whether it is the empty condition (no text), which every instance satisfies."""
        return not self.strip()

    def evaluate(self, dataset: Dataset) -> bool:
        """Whether the instance's top-level attributes satisfy the condition."""
        return self._program.evaluate(language.DatasetValues(dataset)) is True

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: str) -> Condition:
            if isinstance(value, Condition):
                return value
            try:
                return cls(value)
            except ConditionError as exc:
                # pydantic reports ValueErrors beside the field's path; ConditionError is a ConfigError.
                raise ValueError(f"invalid condition: {exc}") from None

        return core_schema.no_info_after_validator_function(
            validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str.__str__),
        )


def parse_condition(text: str) -> Condition:
    """Parse ``text`` into a Condition (the same as ``Condition.parse``); raises ConditionError."""
    return Condition.parse(text)
