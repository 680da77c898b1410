"""The expression language of ``expression.on.tags`` and of API templates, without ``eval``.

Karnak evaluates these with Spring's expression language (SpEL). This module implements the part of it that
profiles use, with a hand-written tokenizer and recursive-descent parser producing an immutable tree, built
once when the profile is loaded::

    stringValue == 'UNDEFINED' ? Keep() : Remove()
    getString(#Tag.PatientAge) == null ? Keep() : null
    stringValue.contains('R2D2') and tag == #Tag.StudyDescription ? Replace('Done') : null
    Replace(getString(#Tag.InstitutionName) + '-' + getString(#Tag.StationName))

Grammar (lowest precedence first)::

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

Functions: the actions ``Keep()``, ``Remove()``, ``Replace(value)``, ``ReplaceNull()``, ``UID()``,
``ComputePatientAge()``, ``ExcludeInstance()``; ``getString(tag)`` (the attribute's value in the original
instance, null when absent or empty) and ``tagIsPresent(tag)`` (at any depth, as in Karnak). Methods on
strings: contains, startsWith, endsWith, equals, equalsIgnoreCase, toUpperCase, toLowerCase, trim, length,
isEmpty, substring, replace, indexOf. Evaluation never fails: a method called on null gives null (where SpEL
would stop the transfer), a substring out of range is clipped, and null, false and anything that is not a
boolean count as false in a test. Words, functions and keywords are case-sensitive, as in SpEL.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pydicom.datadict import keyword_dict
from pydicom.valuerep import VR

from karnak_dicom.deid.tags import parse_tag_reference
from karnak_dicom.spelling import suggestion

__all__ = [
    "ExprAction",
    "Expression",
    "ExpressionContext",
    "ExpressionError",
    "Template",
]

MAX_NESTING: Final = 100


class ExpressionError(ValueError):
    """An expression cannot be parsed or cannot give what its place needs; ``position`` is 0-based."""

    def __init__(self, detail: str, position: int) -> None:
        self.detail = detail
        self.position = position
        super().__init__(f"{detail} at position {position}")


@dataclass(frozen=True)
class ExprAction:
    """The action an expression chose: ``kind`` is K, X, Z, U, D (with ``value``) or E (exclude the instance)."""

    kind: str
    value: str | None = None


class ExpressionContext(Protocol):
    """What an expression can see: the attribute it is evaluated for and the original instance."""

    @property
    def string_value(self) -> str | None: ...

    @property
    def tag(self) -> int | None: ...

    @property
    def vr(self) -> str | None: ...

    def get_string(self, tag: int) -> str | None: ...

    def tag_is_present(self, tag: int) -> bool: ...

    def patient_age(self) -> str | None: ...


# --- Static kinds: what a node may evaluate to, checked when the profile loads ---------------------------

ACTION, STR, INT, BOOL, NULL = "action", "string", "number", "boolean", "null"
_ANY: Final = frozenset({ACTION, STR, INT, BOOL, NULL})


# --- Tokens -----------------------------------------------------------------------------------------------


class _Kind(enum.Enum):
    STRING = "a string"
    NUMBER = "a number"
    WORD = "a word"
    TAG = "a tag"
    VR = "a VR"
    SYMBOL = "a symbol"
    END = "end of expression"


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str
    position: int
    value: Any = None

    def describe(self) -> str:
        return "end of expression" if self.kind is _Kind.END else repr(self.text)


_SYMBOLS: Final = (
    "?.",
    "?:",
    "==",
    "!=",
    "<=",
    ">=",
    "&&",
    "||",
    "(",
    ")",
    ",",
    ".",
    "?",
    ":",
    "!",
    "<",
    ">",
    "+",
    "-",
)
_WORD_SYMBOLS: Final = {
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
_VRS: Final = frozenset(vr.value for vr in VR)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    length = len(text)
    while True:
        while pos < length and text[pos].isspace():
            pos += 1
        if pos >= length:
            tokens.append(_Token(_Kind.END, "", pos))
            return tokens
        char = text[pos]
        if char in "'\"":
            end, value = _read_string(text, pos)
            tokens.append(_Token(_Kind.STRING, text[pos:end], pos, value))
            pos = end
        elif char.isdigit():
            end = pos
            while end < length and text[end].isdigit():
                end += 1
            tokens.append(_Token(_Kind.NUMBER, text[pos:end], pos, int(text[pos:end])))
            pos = end
        elif char.isalpha() or char == "_":
            end = pos
            while end < length and (text[end].isalnum() or text[end] == "_"):
                end += 1
            word = text[pos:end]
            if word in _WORD_SYMBOLS:
                tokens.append(_Token(_Kind.SYMBOL, word, pos, _WORD_SYMBOLS[word]))
            else:
                tokens.append(_Token(_Kind.WORD, word, pos, word))
            pos = end
        elif char == "#":
            pos = _read_constant(text, pos, tokens)
        else:
            for symbol in _SYMBOLS:
                if text.startswith(symbol, pos):
                    tokens.append(_Token(_Kind.SYMBOL, symbol, pos, symbol))
                    pos += len(symbol)
                    break
            else:
                hint = {"&": " (use '&&' or 'and')", "|": " (use '||' or 'or')", "=": " (compare with '==')"}
                raise ExpressionError(f"unexpected character {char!r}{hint.get(char, '')}", pos)


def _read_string(text: str, start: int) -> tuple[int, str]:
    quote = text[start]
    chars: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            if text[pos + 1 : pos + 2] == quote:  # SpEL escapes a quote by doubling it
                chars.append(quote)
                pos += 2
                continue
            return pos + 1, "".join(chars)
        chars.append(char)
        pos += 1
    raise ExpressionError(f"unterminated string (missing closing {quote})", start)


def _read_constant(text: str, start: int, tokens: list[_Token]) -> int:
    for prefix, kind in (("#Tag.", _Kind.TAG), ("#VR.", _Kind.VR)):
        if text.startswith(prefix, start):
            pos = start + len(prefix)
            end = pos
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            name = text[pos:end]
            if kind is _Kind.TAG:
                tag = keyword_dict.get(name)
                if tag is None:
                    raise ExpressionError(
                        f"unknown DICOM keyword {name!r}{suggestion(name, keyword_dict, cutoff=0.75)}", start
                    )
                tokens.append(_Token(kind, text[start:end], start, int(tag)))
            else:
                if name not in _VRS:
                    raise ExpressionError(f"unknown VR {name!r}", start)
                tokens.append(_Token(kind, text[start:end], start, name))
            return end
    raise ExpressionError("expected '#Tag.<Keyword>' or '#VR.<VR>'", start)


# --- Syntax tree ------------------------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    # SpEL accepts only booleans in a test; anything else (null included) counts as false here.
    return value is True


def _java_string(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Node(ABC):
    position: int

    @abstractmethod
    def evaluate(self, context: ExpressionContext) -> Any: ...

    @abstractmethod
    def kinds(self) -> frozenset[str]: ...

    def uses(self) -> frozenset[str]:
        """The functions and variables this node and its children use."""
        return frozenset()


@dataclass(frozen=True)
class _Literal(_Node):
    value: Any
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
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

    def evaluate(self, context: ExpressionContext) -> Any:
        if self.name == "stringValue":
            return context.string_value
        if self.name == "tag":
            return context.tag
        return context.vr

    def kinds(self) -> frozenset[str]:
        return frozenset({INT, NULL}) if self.name == "tag" else frozenset({STR, NULL})

    def uses(self) -> frozenset[str]:
        return frozenset({self.name})


_VARIABLES: Final = frozenset({"stringValue", "tag", "vr"})


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


@dataclass(frozen=True)
class _Call(_Node):
    name: str
    arguments: tuple[_Node, ...]
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        name = self.name
        if name in _SIMPLE_ACTIONS:
            return _SIMPLE_ACTIONS[name]
        if name == "Replace":
            value = self.arguments[0].evaluate(context)
            return ExprAction("D", None if value is None else _java_string(value))
        if name == "ComputePatientAge":
            return ExprAction("D", context.patient_age())
        tag = _tag_argument(self.arguments[0].evaluate(context))
        if name == "getString":
            return None if tag is None else context.get_string(tag)
        return tag is not None and context.tag_is_present(tag)  # tagIsPresent

    def kinds(self) -> frozenset[str]:
        return _FUNCTIONS[self.name][1]

    def uses(self) -> frozenset[str]:
        result = frozenset({self.name})
        for argument in self.arguments:
            result |= argument.uses()
        return result


_SIMPLE_ACTIONS: Final = {
    "Keep": ExprAction("K"),
    "Remove": ExprAction("X"),
    "ReplaceNull": ExprAction("Z"),
    "UID": ExprAction("U"),
    "ExcludeInstance": ExprAction("E"),
}
# name -> (number of arguments, kinds of the result)
_FUNCTIONS: Final[dict[str, tuple[int, frozenset[str]]]] = {
    **{name: (0, frozenset({ACTION})) for name in _SIMPLE_ACTIONS},
    "ComputePatientAge": (0, frozenset({ACTION})),
    "Replace": (1, frozenset({ACTION})),
    "getString": (1, frozenset({STR, NULL})),
    "tagIsPresent": (1, frozenset({BOOL})),
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


@dataclass(frozen=True)
class _Method(_Node):
    receiver: _Node
    name: str
    arguments: tuple[_Node, ...]
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        receiver = self.receiver.evaluate(context)
        if not isinstance(receiver, str):
            return None
        return _METHODS[self.name][2](receiver, *(argument.evaluate(context) for argument in self.arguments))

    def kinds(self) -> frozenset[str]:
        return _METHODS[self.name][1] | {NULL}

    def uses(self) -> frozenset[str]:
        result = self.receiver.uses()
        for argument in self.arguments:
            result |= argument.uses()
        return result


@dataclass(frozen=True)
class _Not(_Node):
    operand: _Node
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        return not _truth(self.operand.evaluate(context))

    def kinds(self) -> frozenset[str]:
        return frozenset({BOOL})

    def uses(self) -> frozenset[str]:
        return self.operand.uses()


@dataclass(frozen=True)
class _Negate(_Node):
    operand: _Node
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        value = self.operand.evaluate(context)
        return -value if isinstance(value, int) and not isinstance(value, bool) else None

    def kinds(self) -> frozenset[str]:
        return frozenset({INT, NULL})

    def uses(self) -> frozenset[str]:
        return self.operand.uses()


@dataclass(frozen=True)
class _Logical(_Node):
    operator: str  # '&&' or '||'
    operands: tuple[_Node, ...]
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        if self.operator == "&&":
            return all(_truth(operand.evaluate(context)) for operand in self.operands)
        return any(_truth(operand.evaluate(context)) for operand in self.operands)

    def kinds(self) -> frozenset[str]:
        return frozenset({BOOL})

    def uses(self) -> frozenset[str]:
        result: frozenset[str] = frozenset()
        for operand in self.operands:
            result |= operand.uses()
        return result


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

    def evaluate(self, context: ExpressionContext) -> Any:
        left = self.left.evaluate(context)
        right = self.right.evaluate(context)
        if self.operator == "+":
            if isinstance(left, str) or isinstance(right, str):
                return _java_string(left) + _java_string(right)
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

    def uses(self) -> frozenset[str]:
        return self.left.uses() | self.right.uses()


@dataclass(frozen=True)
class _Conditional(_Node):
    test: _Node
    when_true: _Node
    when_false: _Node
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        if _truth(self.test.evaluate(context)):
            return self.when_true.evaluate(context)
        return self.when_false.evaluate(context)

    def kinds(self) -> frozenset[str]:
        return self.when_true.kinds() | self.when_false.kinds()

    def uses(self) -> frozenset[str]:
        return self.test.uses() | self.when_true.uses() | self.when_false.uses()


@dataclass(frozen=True)
class _Elvis(_Node):
    value: _Node
    fallback: _Node
    position: int

    def evaluate(self, context: ExpressionContext) -> Any:
        value = self.value.evaluate(context)
        return self.fallback.evaluate(context) if value is None or value == "" else value

    def kinds(self) -> frozenset[str]:
        return (self.value.kinds() - {NULL}) | self.fallback.kinds()

    def uses(self) -> frozenset[str]:
        return self.value.uses() | self.fallback.uses()


# --- Parser -----------------------------------------------------------------------------------------------

_COMPARISONS: Final = frozenset({"==", "!=", "<", ">", "<=", ">="})


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._index = 0
        self._depth = 0

    @property
    def _token(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _is(self, symbol: str) -> bool:
        token = self._token
        return token.kind is _Kind.SYMBOL and token.value == symbol

    def _expect(self, symbol: str) -> _Token:
        if not self._is(symbol):
            raise ExpressionError(f"expected '{symbol}', found {self._token.describe()}", self._token.position)
        return self._advance()

    def _at_end(self) -> bool:
        return self._tokens[self._index].kind is _Kind.END

    def parse(self) -> _Node:
        if self._at_end():
            raise ExpressionError("empty expression", 0)
        node = self._expression()
        if not self._at_end():
            raise ExpressionError(
                f"unexpected {self._token.describe()} after a complete expression", self._token.position
            )
        return node

    def _nest(self, position: int) -> None:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise ExpressionError(f"expression nested more than {MAX_NESTING} levels deep", position)

    def _expression(self) -> _Node:
        start = self._token.position
        self._nest(start)
        node = self._or()
        if self._is("?"):
            self._advance()
            when_true = self._expression()
            self._expect(":")
            when_false = self._expression()
            node = _Conditional(node, when_true, when_false, start)
        elif self._is("?:"):
            self._advance()
            node = _Elvis(node, self._expression(), start)
        self._depth -= 1
        return node

    def _or(self) -> _Node:
        start = self._token.position
        operands = [self._and()]
        while self._is("||"):
            self._advance()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else _Logical("||", tuple(operands), start)

    def _and(self) -> _Node:
        start = self._token.position
        operands = [self._compare()]
        while self._is("&&"):
            self._advance()
            operands.append(self._compare())
        return operands[0] if len(operands) == 1 else _Logical("&&", tuple(operands), start)

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
                raise ExpressionError(f"expected a method name, found {name.describe()}", name.position)
            self._advance()
            method = _METHODS.get(str(name.value))
            if method is None:
                raise ExpressionError(
                    f"unknown method {name.text!r}{suggestion(name.text, _METHODS, cutoff=0.75)}", name.position
                )
            arguments = self._arguments(name)
            if len(arguments) not in method[0]:
                expected = " or ".join(str(n) for n in method[0])
                raise ExpressionError(f"{name.text} takes {expected} argument(s), got {len(arguments)}", name.position)
            node = _Method(node, name.text, arguments, name.position)
        return node

    def _arguments(self, name: _Token) -> tuple[_Node, ...]:
        if not self._is("("):
            raise ExpressionError(f"expected '(' after {name.text!r}", self._token.position)
        self._advance()
        arguments: list[_Node] = []
        if not self._is(")"):
            arguments.append(self._expression())
            while self._is(","):
                self._advance()
                arguments.append(self._expression())
        self._expect(")")
        return tuple(arguments)

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
            word = str(token.value)
            self._advance()
            if word in ("null", "true", "false"):
                return _Literal({"null": None, "true": True, "false": False}[word], token.position)
            if word in _VARIABLES:
                return _Variable(word, token.position)
            if word not in _FUNCTIONS:
                candidates = [*_FUNCTIONS, *_VARIABLES]
                raise ExpressionError(
                    f"unknown function or variable {word!r}{suggestion(word, candidates, cutoff=0.75)}", token.position
                )
            arguments = self._arguments(token)
            expected = _FUNCTIONS[word][0]
            if len(arguments) != expected:
                raise ExpressionError(f"{word} takes {expected} argument(s), got {len(arguments)}", token.position)
            if word in ("getString", "tagIsPresent"):
                self._check_tag_argument(word, arguments[0])
            return _Call(word, arguments, token.position)
        raise ExpressionError(f"expected a value, found {token.describe()}", token.position)

    @staticmethod
    def _check_tag_argument(function: str, argument: _Node) -> None:
        if isinstance(argument, _Literal):
            if isinstance(argument.value, str):
                try:
                    parse_tag_reference(argument.value)
                except ValueError as error:
                    raise ExpressionError(str(error), argument.position) from None
            elif not isinstance(argument.value, int) or isinstance(argument.value, bool):
                raise ExpressionError(f"{function} needs a tag such as #Tag.PatientID", argument.position)


# --- Public API -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A parsed expression; constructing one parses ``source`` and raises ExpressionError when it is invalid."""

    source: str
    _root: _Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_root", _Parser(self.source).parse())

    @classmethod
    def for_action(cls, source: str) -> Expression:
        """Parse an ``expression.on.tags`` expression: it must give an action or null."""
        expression = cls(source)
        unexpected = expression._root.kinds() - {ACTION, NULL}
        if unexpected:
            raise ExpressionError(
                "the expression must give an action (Keep(), Remove(), Replace('v'), ReplaceNull(), UID(), "
                f"ComputePatientAge(), ExcludeInstance()) or null, but it can give a {' or '.join(sorted(unexpected))}",
                0,
            )
        return expression

    @property
    def uses(self) -> frozenset[str]:
        """Names of the functions and variables used (e.g. to know whether the engine must index nested tags)."""
        return self._root.uses()

    def evaluate(self, context: ExpressionContext) -> Any:
        """The value of the expression: an ExprAction, a string, a number, a boolean or None."""
        return self._root.evaluate(context)

    def evaluate_action(self, context: ExpressionContext) -> ExprAction | None:
        """The action chosen, or None (move on to the next profile element)."""
        result = self._root.evaluate(context)
        return result if isinstance(result, ExprAction) else None


@dataclass(frozen=True)
class Template:
    """Text with ``{{ expression }}`` placeholders (API URLs and bodies), parsed once."""

    source: str
    _parts: tuple[str | Expression, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[str | Expression] = []
        position = 0
        text = self.source
        while True:
            start = text.find("{{", position)
            if start < 0:
                parts.append(text[position:])
                break
            end = text.find("}}", start + 2)
            if end < 0:
                raise ExpressionError("unterminated placeholder (missing '}}')", start)
            parts.append(text[position:start])
            inner = text[start + 2 : end]
            try:
                expression = Expression(inner.strip())
            except ExpressionError as error:
                offset = start + 2 + (len(inner) - len(inner.lstrip()))
                raise ExpressionError(error.detail, offset + error.position) from None
            if ACTION in expression._root.kinds():
                raise ExpressionError("a placeholder must give a value, not an action", start)
            parts.append(expression)
            position = end + 2
        object.__setattr__(self, "_parts", tuple(part for part in parts if part != ""))

    def render(self, context: ExpressionContext) -> str:
        """The text with each placeholder replaced by its value (null gives an empty string)."""
        pieces: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                pieces.append(part)
            else:
                value = part.evaluate(context)
                pieces.append("" if value is None else _java_string(value))
        return "".join(pieces)
