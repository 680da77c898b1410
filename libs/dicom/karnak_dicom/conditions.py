"""Karnak's condition language: boolean expressions over the attributes of a DICOM instance.

A condition such as ``tagValueContains(#Tag.StudyDescription, 'RESEARCH') && !tagIsPresent('0010,0020')``
decides whether a destination, a profile element or a filter applies to an instance. Karnak evaluates these
with Spring's expression language; here they are parsed by a small hand-written tokenizer and
recursive-descent parser into an immutable tree, once when the configuration is loaded, and that tree is
evaluated for every instance. Nothing is ever handed to ``eval``: a condition comes from a configuration
file and must not be able to run code.

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

import enum
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Final, Protocol

from pydicom import Dataset
from pydicom.datadict import keyword_dict

from karnak_dicom.attributes import attribute_text
from karnak_dicom.errors import ConfigError
from karnak_dicom.spelling import did_you_mean

__all__ = ["Condition", "ConditionError", "parse_condition"]

# Parentheses and 'not' recurse in the parser and in evaluation; a bound turns a pathological condition
# into a configuration error instead of a RecursionError deep inside a service.
MAX_NESTING: Final = 100


class ConditionError(ConfigError):
    """A condition cannot be parsed; ``position`` is the 0-based offset of the problem in its text."""

    def __init__(self, detail: str, position: int, hint: str | None = None) -> None:
        self.detail = detail
        self.position = position
        message = f"{detail} at position {position}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


# --- Tokens -----------------------------------------------------------------------------------------------


class _Kind(enum.Enum):
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    AND = "'&&'"
    OR = "'||'"
    NOT = "'!'"
    BOOL = "a boolean"
    STRING = "a string"
    TAG = "a tag"
    WORD = "a word"
    END = "end of condition"


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str
    position: int
    string: str = ""
    tag: int = 0
    boolean: bool = False

    def describe(self) -> str:
        if self.kind is _Kind.END:
            return "end of condition"
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return repr(text)


_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TAG_REFERENCE: Final = re.compile(r"#Tag\.([A-Za-z0-9_]*)")
_SYMBOLS: Final = {"(": _Kind.LPAREN, ")": _Kind.RPAREN, ",": _Kind.COMMA, "!": _Kind.NOT}
_DOUBLE_SYMBOLS: Final = {"&&": _Kind.AND, "||": _Kind.OR}
_WORD_OPERATORS: Final = {"and": _Kind.AND, "or": _Kind.OR, "not": _Kind.NOT}
_BOOLEANS: Final = {"true": True, "false": False}


class _Lexer:
    """Produces tokens on demand, so the first error reported is the first one in the text."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def next_token(self) -> _Token:
        text = self._text
        pos = self._pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            self._pos = pos
            return _Token(_Kind.END, "", pos)
        char = text[pos]
        pair = text[pos : pos + 2]
        if pair in _DOUBLE_SYMBOLS:
            return self._emit(_Token(_DOUBLE_SYMBOLS[pair], pair, pos))
        if char in _SYMBOLS:
            return self._emit(_Token(_SYMBOLS[char], char, pos))
        if char in "'\"":
            return self._emit(self._string(pos))
        if char == "#":
            return self._emit(self._tag_reference(pos))
        word = _WORD.match(text, pos)
        if word:
            return self._emit(self._word(word.group(), pos))
        hint = {"&": "use '&&' or 'and'", "|": "use '||' or 'or'", "=": "compare with tagValueIsPresent"}
        raise ConditionError(f"unexpected character {char!r}", pos, hint.get(char))

    def _emit(self, token: _Token) -> _Token:
        self._pos = token.position + len(token.text)
        return token

    def _string(self, start: int) -> _Token:
        text = self._text
        quote = text[start]
        chars: list[str] = []
        pos = start + 1
        while pos < len(text):
            char = text[pos]
            if char == "\\" and pos + 1 < len(text) and text[pos + 1] in (quote, "\\"):
                chars.append(text[pos + 1])
                pos += 2
            elif char == quote and text[pos + 1 : pos + 2] == quote:
                chars.append(quote)
                pos += 2
            elif char == quote:
                return _Token(_Kind.STRING, text[start : pos + 1], start, string="".join(chars))
            else:
                chars.append(char)
                pos += 1
        raise ConditionError("unterminated string", start, f"missing closing {quote}")

    def _tag_reference(self, start: int) -> _Token:
        match = _TAG_REFERENCE.match(self._text, start)
        if match is None:
            raise ConditionError("expected '#Tag.<Keyword>'", start)
        keyword = match.group(1)
        if not keyword:
            raise ConditionError("expected a DICOM keyword after '#Tag.'", start + len("#Tag."))
        tag = keyword_dict.get(keyword)
        if tag is None:
            raise ConditionError(f"unknown DICOM keyword {keyword!r}", start, did_you_mean(keyword, keyword_dict))
        return _Token(_Kind.TAG, match.group(), start, tag=tag)

    @staticmethod
    def _word(word: str, start: int) -> _Token:
        lowered = word.lower()
        if lowered in _WORD_OPERATORS:
            return _Token(_WORD_OPERATORS[lowered], word, start)
        if lowered in _BOOLEANS:
            return _Token(_Kind.BOOL, word, start, boolean=_BOOLEANS[lowered])
        return _Token(_Kind.WORD, word, start)


# --- Syntax tree ------------------------------------------------------------------------------------------


class _Node(Protocol):
    def evaluate(self, dataset: Dataset) -> bool: ...


@dataclass(frozen=True)
class _Constant:
    value: bool

    def evaluate(self, dataset: Dataset) -> bool:
        return self.value


@dataclass(frozen=True)
class _Not:
    operand: _Node

    def evaluate(self, dataset: Dataset) -> bool:
        return not self.operand.evaluate(dataset)


@dataclass(frozen=True)
class _AllOf:
    # n-ary rather than binary so that a long chain of '&&' does not nest (and recurse) one level per term.
    operands: tuple[_Node, ...]

    def evaluate(self, dataset: Dataset) -> bool:
        return all(operand.evaluate(dataset) for operand in self.operands)


@dataclass(frozen=True)
class _AnyOf:
    operands: tuple[_Node, ...]

    def evaluate(self, dataset: Dataset) -> bool:
        return any(operand.evaluate(dataset) for operand in self.operands)


@dataclass(frozen=True)
class _TagIsPresent:
    tag: int

    def evaluate(self, dataset: Dataset) -> bool:
        return self.tag in dataset


@dataclass(frozen=True)
class _ValueTest(ABC):
    tag: int
    needle: str

    def evaluate(self, dataset: Dataset) -> bool:
        value = attribute_text(dataset, self.tag)
        return value is not None and self.matches(value)

    @abstractmethod
    def matches(self, value: str) -> bool:
        """Whether the (present) attribute value satisfies the test."""


class _ValueEquals(_ValueTest):
    def matches(self, value: str) -> bool:
        return value == self.needle


class _ValueContains(_ValueTest):
    def matches(self, value: str) -> bool:
        return self.needle in value


class _ValueBeginsWith(_ValueTest):
    def matches(self, value: str) -> bool:
        return value.startswith(self.needle)


class _ValueEndsWith(_ValueTest):
    def matches(self, value: str) -> bool:
        return value.endswith(self.needle)


_VALUE_TESTS: Final[dict[str, type[_ValueTest]]] = {
    "tagValueIsPresent": _ValueEquals,
    "tagValueContains": _ValueContains,
    "tagValueBeginsWith": _ValueBeginsWith,
    "tagValueEndsWith": _ValueEndsWith,
}
_PARAMETERS: Final[dict[str, tuple[str, ...]]] = {
    **{name: ("tag", "value") for name in _VALUE_TESTS},
    "tagIsPresent": ("tag",),
}

# '(gggg,eeee)' with both parentheses or neither, 'gggg,eeee', or 'ggggeeee'.
_HEX_TAG: Final = re.compile(
    r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)"
    r"|([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})"
    r"|([0-9A-Fa-f]{8})"
)


def _parse_hex_tag(text: str) -> int | None:
    match = _HEX_TAG.fullmatch(text.strip())
    if match is None:
        return None
    return int("".join(group for group in match.groups() if group), 16)


# --- Parser -----------------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the grammar in the module docstring, with one token of lookahead."""

    def __init__(self, text: str) -> None:
        self._lexer = _Lexer(text)
        self._token = self._lexer.next_token()
        self._depth = 0

    def parse(self) -> _Node:
        node: _Node = _Constant(True) if self._token.kind is _Kind.END else self._or()
        token = self._token
        if token.kind is not _Kind.END:
            hint = "unbalanced parentheses?" if token.kind is _Kind.RPAREN else "missing 'and' or 'or'?"
            raise ConditionError(f"unexpected {token.describe()} after a complete condition", token.position, hint)
        return node

    def _advance(self) -> _Token:
        token = self._token
        self._token = self._lexer.next_token()
        return token

    def _expect(self, kind: _Kind, what: str | None = None) -> _Token:
        if self._token.kind is not kind:
            raise ConditionError(
                f"expected {what or kind.value}", self._token.position, f"found {self._token.describe()}"
            )
        return self._advance()

    def _nest(self, position: int) -> None:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise ConditionError(f"condition nested more than {MAX_NESTING} levels deep", position)

    def _or(self) -> _Node:
        operands = [self._and()]
        while self._token.kind is _Kind.OR:
            self._advance()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else _AnyOf(tuple(operands))

    def _and(self) -> _Node:
        operands = [self._unary()]
        while self._token.kind is _Kind.AND:
            self._advance()
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else _AllOf(tuple(operands))

    def _unary(self) -> _Node:
        if self._token.kind is not _Kind.NOT:
            return self._primary()
        self._nest(self._advance().position)
        node = _Not(self._unary())
        self._depth -= 1
        return node

    def _primary(self) -> _Node:
        token = self._token
        if token.kind is _Kind.LPAREN:
            self._advance()
            self._nest(token.position)
            node = self._or()
            self._expect(_Kind.RPAREN)
            self._depth -= 1
            return node
        if token.kind is _Kind.BOOL:
            self._advance()
            return _Constant(token.boolean)
        if token.kind is _Kind.WORD:
            return self._call()
        raise ConditionError("expected a condition", token.position, f"found {token.describe()}")

    def _call(self) -> _Node:
        name = self._advance()
        parameters = _PARAMETERS.get(name.text)
        if parameters is None:
            if self._token.kind is _Kind.LPAREN:
                raise ConditionError(
                    f"unknown function {name.text!r}", name.position, did_you_mean(name.text, _PARAMETERS)
                )
            raise ConditionError(
                f"unexpected word {name.text!r}", name.position, "expected a function call, 'not' or '('"
            )
        self._expect(_Kind.LPAREN, f"'(' after {name.text!r}")
        arguments: list[_Token] = []
        if self._token.kind is not _Kind.RPAREN:
            arguments.append(self._argument())
            while self._token.kind is _Kind.COMMA:
                self._advance()
                arguments.append(self._argument())
        self._expect(_Kind.RPAREN)
        if len(arguments) != len(parameters):
            raise ConditionError(
                f"wrong number of arguments for {name.text}",
                name.position,
                f"it takes {', '.join(parameters)}; got {len(arguments)}",
            )
        tag = self._tag(arguments[0])
        if name.text == "tagIsPresent":
            return _TagIsPresent(tag)
        value = arguments[1]
        if value.kind is not _Kind.STRING:
            raise ConditionError(
                f"expected a quoted string as the value of {name.text}",
                value.position,
                f"found {value.describe()}",
            )
        return _VALUE_TESTS[name.text](tag, value.string)

    def _argument(self) -> _Token:
        if self._token.kind in (_Kind.STRING, _Kind.TAG):
            return self._advance()
        raise ConditionError(
            "expected a tag or a quoted string", self._token.position, f"found {self._token.describe()}"
        )

    @staticmethod
    def _tag(token: _Token) -> int:
        if token.kind is _Kind.TAG:
            return token.tag
        tag = _parse_hex_tag(token.string)
        if tag is None:
            raise ConditionError(
                f"invalid tag {token.text}",
                token.position,
                "expected #Tag.<Keyword> or a hex tag such as '0010,0010', '(0010,0010)' or '00100010'",
            )
        return tag


# --- Public API -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A parsed condition: immutable, compared and hashed by its source text, safe to share across threads.

    Constructing one parses ``source`` (so an invalid condition can never exist), raising ConditionError.
    """

    source: str
    _root: _Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_root", _Parser(self.source).parse())

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Parse ``text``; empty or blank text is the condition that is always true."""
        return cls(text)

    def evaluate(self, dataset: Dataset) -> bool:
        """Whether the instance's top-level attributes satisfy the condition."""
        return self._root.evaluate(dataset)


def parse_condition(text: str) -> Condition:
    """Parse ``text`` into a Condition (the same as ``Condition.parse``); raises ConditionError."""
    return Condition.parse(text)
