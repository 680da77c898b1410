"""Suggestions for misspelt names (functions, keywords, profile keys, codenames): written once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, candidates: Iterable[str], *, cutoff: float = 0.8) -> str | None:
    """``did you mean 'x'?`` for the closest candidate at least `cutoff` similar, else None."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f"did you mean {matches[0]!r}?" if matches else None


def suggestion(word: str, candidates: Iterable[str], *, cutoff: float = 0.8) -> str:
    """The same in parentheses, to append to a message (empty when nothing is close)."""
    hint = did_you_mean(word, candidates, cutoff=cutoff)
    return f" ({hint})" if hint else ""
