"""HTTP headers of a STOW-RS destination: Karnak's form, YAML mappings, and Authorization generators.

Karnak's UI stores a destination's headers as text of ``<key>NAME</key><value>VALUE</value>`` pairs (its
generator puts a newline between the two tags), so a configuration moved over from Karnak keeps them as
they are; a YAML mapping ``{Authorization: "Bearer ..."}`` is accepted too. Like Karnak's UI, a second
Authorization header is refused: two credentials for one request are a configuration mistake, and which
one a server would honour is undefined.

Header values usually hold credentials, so no message raised here ever quotes a value.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping

from karnak_shared.errors import ConfigError

AUTHORIZATION = "Authorization"

# RFC 9110 field names are tokens.
_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PAIR = re.compile(r"\s*<key>(?P<key>.*?)</key>\s*<value>(?P<value>.*?)</value>\s*", re.DOTALL | re.IGNORECASE)


class HeaderError(ConfigError):
    """Headers that cannot be sent: malformed Karnak text, a bad name or value, a second Authorization."""


def parse_headers(headers: str | Mapping[str, str] | None) -> dict[str, str]:
    """The headers of a destination as a dict, from Karnak's ``<key>..</key><value>..</value>`` text or a mapping.

    Raises `HeaderError` for text that is not a sequence of pairs, an invalid name, a value with a line
    break, a header given twice, or a second Authorization header.
    """
    if headers is None:
        return {}
    if isinstance(headers, Mapping):
        pairs = [(str(key), "" if value is None else str(value)) for key, value in headers.items()]
    else:
        pairs = _karnak_pairs(headers)
    result: dict[str, str] = {}
    seen: dict[str, str] = {}
    for position, (name, value) in enumerate(pairs, start=1):
        name = name.strip()
        value = value.strip()
        if not _NAME.match(name):
            # Not quoted: a misplaced credential would end up in the error message.
            raise HeaderError(f"header {position}: the name is not a valid HTTP header name (letters, digits, '-')")
        if "\r" in value or "\n" in value or "\x00" in value:
            raise HeaderError(f"header {name}: the value may not contain line breaks")
        folded = name.lower()
        if folded in seen:
            if folded == AUTHORIZATION.lower():
                raise HeaderError(
                    "a second Authorization header is not allowed (one destination sends one credential); "
                    "remove one of them"
                )
            raise HeaderError(f"header {seen[folded]} is given twice")
        seen[folded] = name
        result[name] = value
    return result


def _karnak_pairs(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            if not text[position:].strip():
                break
            offset = position + len(text[position:]) - len(text[position:].lstrip())
            raise HeaderError(
                f"expected <key>NAME</key><value>VALUE</value> pairs, found something else at position {offset}"
            )
        # Karnak's UI reads these with an HTML parser, so entities such as &amp; are decoded.
        pairs.append((html.unescape(match.group("key")), html.unescape(match.group("value"))))
        position = match.end()
    return pairs


def basic_authorization(user: str, password: str) -> str:
    """The value of a Basic Authorization header: ``Basic base64(user:password)`` (UTF-8)."""
    if ":" in user:
        raise HeaderError("a Basic authorization user name may not contain ':'")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def bearer_authorization(token: str) -> str:
    """The value of a Bearer Authorization header."""
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise HeaderError("a bearer token must be one word, without spaces or line breaks")
    return f"Bearer {token}"


def karnak_form(headers: Mapping[str, str]) -> str:
    """Headers written as Karnak writes them: ``<key>NAME</key>\\n<value>VALUE</value>``, one pair a line."""
    parse_headers(headers)  # refuse what could not be read back
    return "\n".join(
        f"<key>{html.escape(name, quote=False)}</key>\n<value>{html.escape(value, quote=False)}</value>"
        for name, value in headers.items()
    )
