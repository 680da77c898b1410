"""Text from messages and files made safe to print or log: control characters shown, never obeyed.

A UID, an AE title or a reason comes from a modality or the broker; printed as is, a carriage return, an
ANSI escape sequence, a line separator or a bidirectional override in it can fake lines of `karnak dead
list` or of a log, or hide what follows. Each such character is written as a Python escape instead
(``\\r``, ``\\x1b``, ``\\u202e``), so what is shown is exactly what was received.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import TextIO

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_control(char: str) -> bool:
    # Cc: C0, DEL and C1 controls; Cf: format characters (bidi overrides, zero-width joiners);
    # Zl, Zp: the line and paragraph separators.
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def has_controls(text: str) -> bool:
    """Whether `text` holds a character `escape_controls` would escape."""
    return any(_is_control(c) for c in text)


def escape_controls(text: str) -> str:
    """`text` with every control, format and separator character escaped (a backslash stays as it is)."""
    if not has_controls(text):
        return text
    out = []
    for char in text:
        if char in _NAMED:
            out.append(_NAMED[char])
        elif _is_control(char):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def emit(line: str, file: TextIO | None = None, flush: bool = False) -> None:
    """Print one line of command output, its control characters escaped (a newline in it included)."""
    print(escape_controls(line), file=file if file is not None else sys.stdout, flush=flush)
