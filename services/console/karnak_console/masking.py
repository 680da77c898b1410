"""Secrets as the console shows them: `••••cdef` (the last four characters), never the value.

The configuration's secret fields are named here once; every response, audit entry and diff goes
through `mask_secrets`, so no route can return a secret by forgetting to hide it.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_FIELDS = frozenset(
    {"secret", "client_secret", "token_destination", "token_source", "private_key", "password", "headers"}
)
MASK = "••••"
_REFERENCE = re.compile(r"^\$\{(?!encrypted:)[^}]*\}$")
_KARNAK_VALUE = re.compile(r"(<value>)(.*?)(</value>)", re.DOTALL)


def mask(value: str) -> str:
    """`••••` and the last four characters (none for a short value); a `${ENV}` reference is no secret."""
    if _REFERENCE.match(value.strip()):
        return value
    if value.startswith("${encrypted:"):
        return MASK  # the ciphertext's last characters would say nothing of the secret
    return MASK + (value[-4:] if len(value) >= 12 else "")


def mask_headers(value: Any) -> Any:
    """Header values masked, names kept (a mapping, or Karnak's `<key>..</key><value>..</value>` text)."""
    if isinstance(value, dict):
        return {name: mask(str(v)) for name, v in value.items()}
    if isinstance(value, str):
        if "<value>" in value:
            return _KARNAK_VALUE.sub(lambda m: m.group(1) + mask(m.group(2).strip()) + m.group(3), value)
        return mask(value) if value else value
    return value


def mask_secrets(value: Any) -> Any:
    """A copy of a JSON-like value with every secret field masked."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "headers":
                out[key] = mask_headers(item)
            elif key in SECRET_FIELDS and isinstance(item, str):
                out[key] = mask(item)
            else:
                out[key] = mask_secrets(item)
        return out
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    return value


def is_masked(value: Any) -> bool:
    """Whether a value sent back is a mask the console showed (keep the stored secret), not a new secret."""
    return isinstance(value, str) and value.startswith(MASK)
