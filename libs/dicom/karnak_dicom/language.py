"""Karnak's one expression language: a tokenizer, a parser and a table of functions, with three dialects.

Karnak evaluates destination and profile conditions, ``expression.on.tags`` and API templates with
Spring's expression language (SpEL). This module implements the part of it that Karnak's configurations
use, once, with a hand-written tokenizer and recursive-descent parser producing an immutable tree, built
when the configuration or profile is loaded. Nothing is ever handed to ``eval``: the text comes from a
configuration file and must not be able to run code. The dialects (`CONDITION`, `ACTION`, `VALUE`) differ
in what they accept, not in how they are read:

- conditions (`karnak_dicom.conditions`): ``&&``/``||``/``!`` and ``and``/``or``/``not`` (case-insensitive,
  as are ``true``/``false``), parentheses, and the functions ``tagValueIsPresent(tag, 'v')`` (equals),
  ``tagValueContains``, ``tagValueBeginsWith``, ``tagValueEndsWith`` and ``tagIsPresent(tag)``, whose
  arguments are a tag (``#Tag.Keyword`` or a quoted hex tag: ``'0010,0010'``, ``'(0010,0010)'``,
  ``'00100010'``) or a quoted string (a backslash escapes the quote or another backslash; any other
  backslash is kept, so ``'ORIGINAL\\PRIMARY'`` matches a multi-valued attribute); empty text is true;
- action expressions (``expression.on.tags``) and value expressions (the ``{{ }}`` placeholders of API
  templates), which are SpEL proper::

    expression := or_expr ['?' expression ':' expression | '?:' expression]
    or_expr    := and_expr (('||' | 'or') and_expr)*
    and_expr   := compare (('&&' | 'and') compare)*
    compare    := additive [('==' | '!=' | '<' | '>' | '<=' | '>=' | 'eq' | 'ne' | 'lt' | 'gt' | 'le' | 'ge')
                  additive]
    additive   := unary (('+' | '-') unary)*
    unary      := ('!' | 'not' | '-') unary | postfix
    postfix    := primary (('.' | '?.') METHOD '(' [arguments] ')')*
    primary    := STRING | NUMBER | 'null' | 'true' | 'false' | '#Tag.' KEYWORD | '#VR.' VR
                | FUNCTION '(' [arguments] ')' | 'stringValue' | 'tag' | 'vr' | '(' expression ')'

  with the actions ``Keep()``, ``Remove()``, ``Replace(value)``, ``ReplaceNull()``, ``UID()``,
  ``ComputePatientAge()``, ``ExcludeInstance()``, and ``getString(tag)`` (the attribute's value in the
  original instance, null when absent or empty) and ``tagIsPresent(tag)`` (at any depth, as in Karnak).
  Methods on strings: contains, startsWith, endsWith, equals, equalsIgnoreCase, toUpperCase, toLowerCase,
  trim, length, isEmpty, substring, replace, indexOf. A quote is escaped by doubling it.

Evaluation never fails: a method called on null gives null (where SpEL would stop the transfer), a
substring out of range is clipped, and null, false and anything that is not a boolean count as false in a
test. Function names and tag keywords are case-sensitive, as in Karnak. Every function is in `FUNCTIONS`,
one table, with the dialects it belongs to; values are read as `karnak_dicom.attributes` says.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pydicom import Dataset
from pydicom.datadict import keyword_dict
from pydicom.valuerep import VR

from karnak_dicom.attributes import attribute_text
from karnak_dicom.spelling import did_you_mean
from karnak_dicom.tags import parse_tag_reference

__all__ = [
    "ACTION",
    "CONDITION",
    "FUNCTIONS",
    "VALUE",
    "DatasetValues",
    "Dialect",
    "ExprAction",
    "Function",
    "LanguageError",
    "Program",
    "ValueContext",
    "compile_text",
    "java_string",
]

# Parentheses and unary operators recurse in the parser and in evaluation; a bound turns a pathological
# text into a configuration error instead of a RecursionError deep inside a service.
MAX_NESTING: Final = 100


class LanguageError(Exception):
    """A text cannot be compiled: `detail` at 0-based `position`, with an optional `hint`."""

    def __init__(self, detail: str, position: int, hint: str | None = None) -> None:
        self.detail = detail
        self.position = position
        self.hint = hint
        super().__init__(f"{detail} at position {position}" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class ExprAction:
    """The action an expression chose: ``kind`` is K, X, Z, U, D (with ``value``) or E (exclude the instance)."""

    kind: str
    value: str | None = None


class ValueContext(Protocol):
    """What a program can see: the attribute it is evaluated for, and the instance's other attributes."""

    @property
    def string_value(self) -> str | None: ...

    @property
    def tag(self) -> int | None: ...

    @property
    def vr(self) -> str | None: ...

    def get_string(self, tag: int) -> str | None: ...

    def tag_is_present(self, tag: int) -> bool: ...

    def patient_age(self) -> str | None: ...


@dataclass(frozen=True)
class DatasetValues:
    """A `ValueContext` over an instance alone (conditions, API templates): its top-level attributes,
    read as Karnak compares them; there is no current attribute (``stringValue``, ``tag``, ``vr`` are null)."""

    dataset: Dataset
    string_value: None = None
    tag: None = None
    vr: None = None

    def attribute_text(self, tag: int) -> str | None:
        return attribute_text(self.dataset, tag)

    def get_string(self, tag: int) -> str | None:
        return attribute_text(self.dataset, tag) or None

    def tag_is_present(self, tag: int) -> bool:
        return tag in self.dataset

    def patient_age(self) -> str | None:
        return None


# --- Static kinds: what a node may evaluate to, checked when the text is compiled ------------------------

KIND_ACTION, STR, INT, BOOL, NULL = "action", "string", "number", "boolean", "null"


# --- Functions: one table ----------------------------------------------------------------------------------

TAG_PARAMETER, TEXT_PARAMETER, VALUE_PARAMETER = "tag", "value", "any"


@dataclass(frozen=True)
class Function:
    """A function of the language: its parameters (`TAG_PARAMETER`...), result kinds, dialects and code."""

    parameters: tuple[str, ...]
    kinds: frozenset[str]
    dialects: frozenset[str]
    evaluate: Callable[..., Any]  # (context, *argument values) -> value


def java_string(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tag_argument(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return parse_tag_reference(value)
        except ValueError:
            return None
    return None


def _value_test(test: Callable[[str, str], bool]) -> Callable[..., bool]:
    def evaluate(context: Any, tag: Any, needle: Any) -> bool:
        value = context.attribute_text(tag)
        return value is not None and test(value, needle)

    return evaluate


def _constant(result: Any) -> Callable[..., Any]:
    return lambda context: result


def _get_string(context: Any, tag: Any) -> str | None:
    number = _tag_argument(tag)
    return None if number is None else context.get_string(number)


def _tag_is_present(context: Any, tag: Any) -> bool:
    number = _tag_argument(tag)
    return number is not None and bool(context.tag_is_present(number))


_EXPRESSIONS: Final = frozenset({"action", "value"})
_CONDITIONS: Final = frozenset({"condition"})
_ACTIONS: Final = frozenset({KIND_ACTION})
FUNCTIONS: Final[Mapping[str, Function]] = {
    "Keep": Function((), _ACTIONS, _EXPRESSIONS, _constant(ExprAction("K"))),
    "Remove": Function((), _ACTIONS, _EXPRESSIONS, _constant(ExprAction("X"))),
    "ReplaceNull": Function((), _ACTIONS, _EXPRESSIONS, _constant(ExprAction("Z"))),
    "UID": Function((), _ACTIONS, _EXPRESSIONS, _constant(ExprAction("U"))),
    "ExcludeInstance": Function((), _ACTIONS, _EXPRESSIONS, _constant(ExprAction("E"))),
    "ComputePatientAge": Function((), _ACTIONS, _EXPRESSIONS, lambda c: ExprAction("D", c.patient_age())),
    "Replace": Function(
        (VALUE_PARAMETER,),
        _ACTIONS,
        _EXPRESSIONS,
        lambda c, value: ExprAction("D", None if value is None else java_string(value)),
    ),
    "getString": Function((TAG_PARAMETER,), frozenset({STR, NULL}), _EXPRESSIONS, _get_string),
    # In conditions at the top level (the instance's attributes), in expressions at any depth (Karnak's).
    "tagIsPresent": Function((TAG_PARAMETER,), frozenset({BOOL}), _EXPRESSIONS | _CONDITIONS, _tag_is_present),
    "tagValueIsPresent": Function(
        (TAG_PARAMETER, TEXT_PARAMETER), frozenset({BOOL}), _CONDITIONS, _value_test(lambda v, n: v == n)
    ),
    "tagValueContains": Function(
        (TAG_PARAMETER, TEXT_PARAMETER), frozenset({BOOL}), _CONDITIONS, _value_test(lambda v, n: n in v)
    ),
    "tagValueBeginsWith": Function(
        (TAG_PARAMETER, TEXT_PARAMETER), frozenset({BOOL}), _CONDITIONS, _value_test(str.startswith)
    ),
    "tagValueEndsWith": Function(
        (TAG_PARAMETER, TEXT_PARAMETER), frozenset({BOOL}), _CONDITIONS, _value_test(str.endswith)
    ),
}


def _substring(text: str, *bounds: Any) -> str:
    numbers = [b if isinstance(b, int) and not isinstance(b, bool) else 0 for b in bounds]
    start = max(0, numbers[0])
    return text[start : max(start, numbers[1])] if len(numbers) > 1 else text[start:]


# name -> (accepted numbers of arguments, kinds of the result, implementation)
_METHODS: Final[dict[str, tuple[tuple[int, ...], frozenset[str], Callable[..., Any]]]] = {
    "contains": ((1,), frozenset({BOOL}), lambda s, a: isinstance(a, str) and a in s),
    "startsWith": ((1,), frozenset({BOOL}), lambda s, a: isinstance(a, str) and s.startswith(a)),
    "endsWith": ((1,), frozenset({BOOL}), lambda s, a: isinstance(a, str) and s.endswith(a)),
    "equals": ((1,), frozenset({BOOL}), lambda s, a: s == a),
    "equalsIgnoreCase": ((1,), frozenset({BOOL}), lambda s, a: isinstance(a, str) and s.lower() == a.lower()),
    "toUpperCase": ((0,), frozenset({STR}), lambda s: s.upper()),
    "toLowerCase": ((0,), frozenset({STR}), lambda s: s.lower()),
    "trim": ((0,), frozenset({STR}), lambda s: s.strip()),
    "length": ((0,), frozenset({INT}), len),
    "isEmpty": ((0,), frozenset({BOOL}), lambda s: not s),
    "substring": ((1, 2), frozenset({STR}), _substring),
    "replace": (
        (2,),
        frozenset({STR}),
        lambda s, a, b: s.replace(a, b) if isinstance(a, str) and isinstance(b, str) else s,
    ),
    "indexOf": ((1,), frozenset({INT}), lambda s, a: s.find(a) if isinstance(a, str) else -1),
}
_VARIABLES: Final = frozenset({"stringValue", "tag", "vr"})


# --- Dialects ----------------------------------------------------------------------------------------------

# '(gggg,eeee)' with both parentheses or neither, 'gggg,eeee', or 'ggggeeee'.
_HEX_TAG: Final = re.compile(
    r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)"
    r"|([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})"
    r"|([0-9A-Fa-f]{8})"
)


def _hex_tag(text: str) -> int:
    match = _HEX_TAG.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid tag {text!r}")
    return int("".join(group for group in match.groups() if group), 16)


@dataclass(frozen=True)
class Dialect:
    """What a place of the configuration accepts, and how its messages read."""

    name: str  # the dialect's name in `Function.dialects`
    noun: str  # "condition" or "expression", as messages name the text
    value_noun: str  # what a primary must be: "a condition", "a value"
    symbols: tuple[str, ...]  # longest first
    word_symbols: Mapping[str, str]
    words_ignore_case: bool
    literals: Mapping[str, Any]
    constants: tuple[str, ...]  # '#Tag.' and, in expressions, '#VR.'
    numbers: bool
    variables: frozenset[str]
    backslash_escapes: bool
    literal_arguments: bool  # arguments are a tag or a quoted string, never an expression
    empty_is_true: bool
    parse_tag_text: Callable[[str], int]
    tag_hint: str | None
    character_hints: Mapping[str, str]
    # Conditions give "found ..." and explanations as hints; expressions say "..., found X" in the detail.
    found_as_hint: bool
    arity: Callable[[str, tuple[str, ...], int], tuple[str, str | None]]

    @property
    def functions(self) -> dict[str, Function]:
        return {name: function for name, function in FUNCTIONS.items() if self.name in function.dialects}


_EXPRESSION_SYMBOLS: Final = ("?.", "?:", "==", "!=", "<=", ">=", "&&", "||", *"(),.?:!<>+-")
_EXPRESSION_WORDS: Final = {
    "and": "&&",
    "or": "||",
    "not": "!",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "gt": ">",
    "le": "<=",
    "ge": ">=",
}

CONDITION: Final = Dialect(
    name="condition",
    noun="condition",
    value_noun="a condition",
    symbols=("&&", "||", "(", ")", ",", "!"),
    word_symbols={"and": "&&", "or": "||", "not": "!"},
    words_ignore_case=True,
    literals={"true": True, "false": False},
    constants=("#Tag.",),
    numbers=False,
    variables=frozenset(),
    backslash_escapes=True,
    literal_arguments=True,
    empty_is_true=True,
    parse_tag_text=_hex_tag,
    tag_hint="expected #Tag.<Keyword> or a hex tag such as '0010,0010', '(0010,0010)' or '00100010'",
    character_hints={"&": "use '&&' or 'and'", "|": "use '||' or 'or'", "=": "compare with tagValueIsPresent"},
    found_as_hint=True,
    arity=lambda name, parameters, got: (
        f"wrong number of arguments for {name}",
        f"it takes {', '.join('tag' if p == TAG_PARAMETER else 'value' for p in parameters)}; got {got}",
    ),
)
ACTION: Final = Dialect(
    name="action",
    noun="expression",
    value_noun="a value",
    symbols=_EXPRESSION_SYMBOLS,
    word_symbols=_EXPRESSION_WORDS,
    words_ignore_case=False,
    literals={"null": None, "true": True, "false": False},
    constants=("#Tag.", "#VR."),
    numbers=True,
    variables=_VARIABLES,
    backslash_escapes=False,
    literal_arguments=False,
    empty_is_true=False,
    parse_tag_text=parse_tag_reference,
    tag_hint=None,
    character_hints={"&": "use '&&' or 'and'", "|": "use '||' or 'or'", "=": "compare with '=='"},
    found_as_hint=False,
    arity=lambda name, parameters, got: (f"{name} takes {len(parameters)} argument(s), got {got}", None),
)
# The `{{ }}` placeholders of API templates: the same language, giving a value rather than an action.
VALUE: Final = dataclasses.replace(ACTION, name="value")


# --- Tokens ------------------------------------------------------------------------------------------------


class _Kind(enum.Enum):
    STRING = "a string"
    NUMBER = "a number"
    WORD = "a word"
    TAG = "a tag"
    VR = "a VR"
    SYMBOL = "a symbol"
    END = "end"


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str
    position: int
    value: Any = None


_VRS: Final = frozenset(vr.value for vr in VR)


class _Lexer:
    """Produces tokens on demand, so the first error reported is the first one in the text."""

    def __init__(self, text: str, dialect: Dialect) -> None:
        self._text = text
        self._pos = 0
        self._dialect = dialect

    def next_token(self) -> _Token:
        text, dialect = self._text, self._dialect
        pos = self._pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return self._emit(_Token(_Kind.END, "", pos))
        char = text[pos]
        if char in "'\"":
            return self._emit(self._string(pos))
        if char.isdigit() and dialect.numbers:
            end = pos
            while end < len(text) and text[end].isdigit():
                end += 1
            return self._emit(_Token(_Kind.NUMBER, text[pos:end], pos, int(text[pos:end])))
        if char.isalpha() or char == "_":
            end = pos
            while end < len(text) and (text[end].isalnum() or text[end] == "_") and text[end].isascii():
                end += 1
            word = text[pos:end]
            key = word.lower() if dialect.words_ignore_case else word
            if key in dialect.word_symbols:
                return self._emit(_Token(_Kind.SYMBOL, word, pos, dialect.word_symbols[key]))
            return self._emit(_Token(_Kind.WORD, word, pos, word))
        if char == "#":
            return self._emit(self._constant(pos))
        for symbol in dialect.symbols:
            if text.startswith(symbol, pos):
                return self._emit(_Token(_Kind.SYMBOL, symbol, pos, symbol))
        raise LanguageError(f"unexpected character {char!r}", pos, dialect.character_hints.get(char))

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
            if self._dialect.backslash_escapes and char == "\\" and text[pos + 1 : pos + 2] in (quote, "\\"):
                chars.append(text[pos + 1])
                pos += 2
            elif char == quote and text[pos + 1 : pos + 2] == quote:  # SpEL escapes a quote by doubling it
                chars.append(quote)
                pos += 2
            elif char == quote:
                return _Token(_Kind.STRING, text[start : pos + 1], start, "".join(chars))
            else:
                chars.append(char)
                pos += 1
        raise LanguageError("unterminated string", start, f"missing closing {quote}")

    def _constant(self, start: int) -> _Token:
        text = self._text
        for prefix in self._dialect.constants:
            if not text.startswith(prefix, start):
                continue
            pos = end = start + len(prefix)
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            name = text[pos:end]
            if prefix == "#VR.":
                if name not in _VRS:
                    raise LanguageError(f"unknown VR {name!r}", start)
                return _Token(_Kind.VR, text[start:end], start, name)
            if not name:
                raise LanguageError("expected a DICOM keyword after '#Tag.'", pos)
            tag = keyword_dict.get(name)
            if tag is None:
                raise LanguageError(
                    f"unknown DICOM keyword {name!r}", start, did_you_mean(name, keyword_dict, cutoff=0.75)
                )
            return _Token(_Kind.TAG, text[start:end], start, int(tag))
        names = {"#Tag.": "'#Tag.<Keyword>'", "#VR.": "'#VR.<VR>'"}
        expected = " or ".join(names[prefix] for prefix in self._dialect.constants)
        raise LanguageError(f"expected {expected}", start)


# --- Syntax tree -------------------------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    # SpEL accepts only booleans in a test; anything else (null included) counts as false here.
    return value is True


class _Node(ABC):
    position: int

    @abstractmethod
    def evaluate(self, context: Any) -> Any: ...

    @abstractmethod
    def kinds(self) -> frozenset[str]: ...

    def children(self) -> tuple[_Node, ...]:
        return ()

    def uses(self) -> frozenset[str]:
        """The functions and variables this node and its children use."""
        result: frozenset[str] = frozenset()
        for child in self.children():
            result |= child.uses()
        return result


@dataclass(frozen=True)
class _Literal(_Node):
    value: Any
    position: int

    def evaluate(self, context: Any) -> Any:
        return self.value

    def kinds(self) -> frozenset[str]:
        if self.value is None:
            return frozenset({NULL})
        if isinstance(self.value, bool):
            return frozenset({BOOL})
        if isinstance(self.value, int):
            return frozenset({INT})
        return frozenset({STR})


@dataclass(frozen=True)
class _Variable(_Node):
    name: str
    position: int

    def evaluate(self, context: Any) -> Any:
        if self.name == "stringValue":
            return context.string_value
        if self.name == "tag":
            return context.tag
        return context.vr

    def kinds(self) -> frozenset[str]:
        return frozenset({INT, NULL}) if self.name == "tag" else frozenset({STR, NULL})

    def uses(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True)
class _Call(_Node):
    name: str
    function: Function = field(repr=False)
    arguments: tuple[_Node, ...]
    position: int

    def evaluate(self, context: Any) -> Any:
        return self.function.evaluate(context, *(argument.evaluate(context) for argument in self.arguments))

    def kinds(self) -> frozenset[str]:
        return self.function.kinds

    def children(self) -> tuple[_Node, ...]:
        return self.arguments

    def uses(self) -> frozenset[str]:
        return super().uses() | {self.name}


@dataclass(frozen=True)
class _Method(_Node):
    receiver: _Node
    name: str
    arguments: tuple[_Node, ...]
    position: int

    def evaluate(self, context: Any) -> Any:
        receiver = self.receiver.evaluate(context)
        if not isinstance(receiver, str):
            return None
        return _METHODS[self.name][2](receiver, *(argument.evaluate(context) for argument in self.arguments))

    def kinds(self) -> frozenset[str]:
        return _METHODS[self.name][1] | {NULL}

    def children(self) -> tuple[_Node, ...]:
        return (self.receiver, *self.arguments)


@dataclass(frozen=True)
class _Not(_Node):
    operand: _Node
    position: int

    def evaluate(self, context: Any) -> Any:
        return not _truth(self.operand.evaluate(context))

    def kinds(self) -> frozenset[str]:
        return frozenset({BOOL})

    def children(self) -> tuple[_Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class _Negate(_Node):
    operand: _Node
    position: int

    def evaluate(self, context: Any) -> Any:
        value = self.operand.evaluate(context)
        return -value if isinstance(value, int) and not isinstance(value, bool) else None

    def kinds(self) -> frozenset[str]:
        return frozenset({INT, NULL})

    def children(self) -> tuple[_Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class _Logical(_Node):
    # n-ary rather than binary so that a long chain of '&&' does not nest (and recurse) one level per term.
    operator: str  # '&&' or '||'
    operands: tuple[_Node, ...]
    position: int

    def evaluate(self, context: Any) -> Any:
        if self.operator == "&&":
            return all(_truth(operand.evaluate(context)) for operand in self.operands)
        return any(_truth(operand.evaluate(context)) for operand in self.operands)

    def kinds(self) -> frozenset[str]:
        return frozenset({BOOL})

    def children(self) -> tuple[_Node, ...]:
        return self.operands


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "==":
        if left is None or right is None or isinstance(left, bool) or isinstance(right, bool):
            return left is right
        if isinstance(left, int) and isinstance(right, int):
            return int(left) == int(right)
        if isinstance(left, str) and isinstance(right, str):
            return str(left) == str(right)
        return bool(left == right) if type(left) is type(right) else False
    if operator == "!=":
        return not _compare("==", left, right)
    comparable = (isinstance(left, int) and isinstance(right, int)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable:
        return False
    if operator == "<":
        return bool(left < right)
    if operator == ">":
        return bool(left > right)
    if operator == "<=":
        return bool(left <= right)
    return bool(left >= right)


@dataclass(frozen=True)
class _Binary(_Node):
    operator: str
    left: _Node
    right: _Node
    position: int

    def evaluate(self, context: Any) -> Any:
        left = self.left.evaluate(context)
        right = self.right.evaluate(context)
        if self.operator == "+":
            if isinstance(left, str) or isinstance(right, str):
                return java_string(left) + java_string(right)
            if isinstance(left, int) and isinstance(right, int):
                return left + right
            return None
        if self.operator == "-":
            if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool):
                return left - right
            return None
        return _compare(self.operator, left, right)

    def kinds(self) -> frozenset[str]:
        if self.operator == "+":
            return frozenset({STR, INT, NULL})
        if self.operator == "-":
            return frozenset({INT, NULL})
        return frozenset({BOOL})

    def children(self) -> tuple[_Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class _Conditional(_Node):
    test: _Node
    when_true: _Node
    when_false: _Node
    position: int

    def evaluate(self, context: Any) -> Any:
        if _truth(self.test.evaluate(context)):
            return self.when_true.evaluate(context)
        return self.when_false.evaluate(context)

    def kinds(self) -> frozenset[str]:
        return self.when_true.kinds() | self.when_false.kinds()

    def children(self) -> tuple[_Node, ...]:
        return (self.test, self.when_true, self.when_false)


@dataclass(frozen=True)
class _Elvis(_Node):
    value: _Node
    fallback: _Node
    position: int

    def evaluate(self, context: Any) -> Any:
        value = self.value.evaluate(context)
        return self.fallback.evaluate(context) if value is None or value == "" else value

    def kinds(self) -> frozenset[str]:
        return (self.value.kinds() - {NULL}) | self.fallback.kinds()

    def children(self) -> tuple[_Node, ...]:
        return (self.value, self.fallback)


# --- Parser ------------------------------------------------------------------------------------------------

_COMPARISONS: Final = frozenset({"==", "!=", "<", ">", "<=", ">="})
_LOGICAL: Final = ("||", "&&")  # from the loosest


class _Parser:
    """Recursive descent over the grammar in the module docstring, with one token of lookahead."""

    def __init__(self, text: str, dialect: Dialect) -> None:
        self._dialect = dialect
        self._functions = dialect.functions
        self._lexer = _Lexer(text, dialect)
        self._token = self._lexer.next_token()
        self._depth = 0

    # --- messages ---

    def _describe(self, token: _Token) -> str:
        if token.kind is _Kind.END:
            return f"end of {self._dialect.noun}"
        return repr(token.text if len(token.text) <= 40 else token.text[:37] + "...")

    def _error(
        self, detail: str, position: int, *, found: _Token | None = None, hint: str | None = None
    ) -> LanguageError:
        """The dialect's way of saying it: a "found X" hint for conditions, "detail, found X" otherwise."""
        if found is not None:
            if self._dialect.found_as_hint:
                hint = hint or f"found {self._describe(found)}"
            else:
                detail = f"{detail}, found {self._describe(found)}"
        return LanguageError(detail, position, hint)

    # --- tokens ---

    def _advance(self) -> _Token:
        token = self._token
        self._token = self._lexer.next_token()
        return token

    def _is(self, symbol: str) -> bool:
        return self._token.kind is _Kind.SYMBOL and self._token.value == symbol

    def _expect(self, symbol: str, what: str | None = None) -> _Token:
        if not self._is(symbol):
            raise self._error(f"expected {what or repr(symbol)}", self._token.position, found=self._token)
        return self._advance()

    def _nest(self, position: int) -> None:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise self._error(f"{self._dialect.noun} nested more than {MAX_NESTING} levels deep", position)

    # --- grammar ---

    def parse(self) -> _Node:
        if self._token.kind is _Kind.END:
            if self._dialect.empty_is_true:
                return _Literal(True, 0)
            raise self._error(f"empty {self._dialect.noun}", 0)
        node = self._expression()
        token = self._token
        if token.kind is not _Kind.END:
            hint = None
            if self._dialect.found_as_hint:
                hint = "unbalanced parentheses?" if token.value == ")" else "missing 'and' or 'or'?"
            detail = f"unexpected {self._describe(token)} after a complete {self._dialect.noun}"
            raise self._error(detail, token.position, hint=hint)
        return node

    def _expression(self) -> _Node:
        start = self._token.position
        self._nest(start)
        node = self._logical()
        if self._is("?"):
            self._advance()
            when_true = self._expression()
            self._expect(":")
            node = _Conditional(node, when_true, self._expression(), start)
        elif self._is("?:"):
            self._advance()
            node = _Elvis(node, self._expression(), start)
        self._depth -= 1
        return node

    def _logical(self, level: int = 0) -> _Node:
        """``||`` (level 0) of ``&&`` (level 1) of comparisons; one frame per level, no helper in between,
        so 100 levels of nesting stay well inside Python's recursion limit."""
        operator, start, operands = _LOGICAL[level], self._token.position, []
        while True:
            operands.append(self._logical(level + 1) if level + 1 < len(_LOGICAL) else self._compare())
            if not self._is(operator):
                return operands[0] if len(operands) == 1 else _Logical(operator, tuple(operands), start)
            self._advance()

    def _compare(self) -> _Node:
        left = self._additive()
        token = self._token
        if token.kind is _Kind.SYMBOL and token.value in _COMPARISONS:
            self._advance()
            return _Binary(str(token.value), left, self._additive(), token.position)
        return left

    def _additive(self) -> _Node:
        node = self._unary()
        while self._is("+") or self._is("-"):
            token = self._advance()
            node = _Binary(str(token.value), node, self._unary(), token.position)
        return node

    def _unary(self) -> _Node:
        token = self._token
        if self._is("!") or self._is("-"):
            self._advance()
            self._nest(token.position)
            operand = self._unary()
            self._depth -= 1
            return _Not(operand, token.position) if token.value == "!" else _Negate(operand, token.position)
        return self._postfix()

    def _postfix(self) -> _Node:
        node = self._primary()
        while self._is(".") or self._is("?."):
            self._advance()
            name = self._token
            if name.kind is not _Kind.WORD:
                raise self._error("expected a method name", name.position, found=name)
            self._advance()
            method = _METHODS.get(str(name.value))
            if method is None:
                hint = did_you_mean(name.text, _METHODS, cutoff=0.75)
                raise self._error(f"unknown method {name.text!r}", name.position, hint=hint)
            arguments = self._arguments(name)
            if len(arguments) not in method[0]:
                expected = " or ".join(str(n) for n in method[0])
                raise self._error(f"{name.text} takes {expected} argument(s), got {len(arguments)}", name.position)
            node = _Method(node, name.text, arguments, name.position)
        return node

    def _arguments(self, name: _Token) -> tuple[_Node, ...]:
        self._expect("(", f"'(' after {name.text!r}")
        arguments: list[_Node] = []
        argument = self._literal_argument if self._dialect.literal_arguments else self._expression
        if not self._is(")"):
            arguments.append(argument())
            while self._is(","):
                self._advance()
                arguments.append(argument())
        self._expect(")")
        return tuple(arguments)

    def _literal_argument(self) -> _Node:
        token = self._token
        if token.kind not in (_Kind.STRING, _Kind.TAG):
            raise self._error("expected a tag or a quoted string", token.position, found=token)
        self._advance()
        return _Literal(token.value, token.position)

    def _primary(self) -> _Node:
        token = self._token
        if token.kind in (_Kind.STRING, _Kind.NUMBER, _Kind.TAG, _Kind.VR):
            self._advance()
            return _Literal(token.value, token.position)
        if self._is("("):
            self._advance()
            node = self._expression()
            self._expect(")")
            return node
        if token.kind is _Kind.WORD:
            return self._word()
        raise self._error(f"expected {self._dialect.value_noun}", token.position, found=token)

    def _word(self) -> _Node:
        token = self._advance()
        word = str(token.value)
        dialect = self._dialect
        literal = word.lower() if dialect.words_ignore_case else word
        if literal in dialect.literals:
            return _Literal(dialect.literals[literal], token.position)
        if word in dialect.variables:
            return _Variable(word, token.position)
        function = self._functions.get(word)
        if function is None:
            if dialect.variables:
                hint = did_you_mean(word, [*self._functions, *dialect.variables], cutoff=0.75)
                raise self._error(f"unknown function or variable {word!r}", token.position, hint=hint)
            if self._is("("):
                hint = did_you_mean(word, self._functions, cutoff=0.75)
                raise self._error(f"unknown function {word!r}", token.position, hint=hint)
            raise self._error(
                f"unexpected word {word!r}", token.position, hint="expected a function call, 'not' or '('"
            )
        arguments = self._arguments(token)
        if len(arguments) != len(function.parameters):
            detail, hint = dialect.arity(word, function.parameters, len(arguments))
            raise self._error(detail, token.position, hint=hint)
        checked = tuple(
            self._checked_argument(word, parameter, argument)
            for parameter, argument in zip(function.parameters, arguments, strict=True)
        )
        return _Call(word, function, checked, token.position)

    def _checked_argument(self, function: str, parameter: str, argument: _Node) -> _Node:
        """The argument as its parameter needs it: a tag given as text is read now, once."""
        if not isinstance(argument, _Literal):
            return argument
        value = argument.value
        if parameter == TAG_PARAMETER:
            if isinstance(value, str):
                try:
                    return _Literal(self._dialect.parse_tag_text(value), argument.position)
                except ValueError as error:
                    raise self._error(str(error), argument.position, hint=self._dialect.tag_hint) from None
            if not isinstance(value, int) or isinstance(value, bool):
                raise self._error(f"{function} needs a tag such as #Tag.PatientID", argument.position)
        elif parameter == TEXT_PARAMETER and not isinstance(value, str):
            raise self._error(f"expected a quoted string as the value of {function}", argument.position)
        return argument


# --- Compiled programs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """A compiled text: immutable, safe to share across threads."""

    source: str
    dialect: Dialect = field(repr=False, compare=False)
    root: _Node = field(repr=False, compare=False)

    @property
    def kinds(self) -> frozenset[str]:
        """What the program may give: `KIND_ACTION`, `STR`, `INT`, `BOOL`, `NULL`."""
        return self.root.kinds()

    @property
    def uses(self) -> frozenset[str]:
        """Names of the functions and variables used."""
        return self.root.uses()

    def evaluate(self, context: Any) -> Any:
        return self.root.evaluate(context)


def compile_text(source: str, dialect: Dialect) -> Program:
    """Compile `source` in `dialect`; raise `LanguageError` saying what is wrong and where."""
    return Program(source, dialect, _Parser(source, dialect).parse())
