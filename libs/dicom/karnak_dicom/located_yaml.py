"""YAML read with the line of every value: the one loader of the gateway's configuration and of profiles.

Users edit these files by hand, so every problem names the field by its path (``forward_nodes[0].port``,
``profileElements[2]``) and the line it is on. `load_located_yaml` parses the text once into plain Python
values (``yaml.safe_load`` semantics) and a map from each value's path to its line; `LocatedYaml.locate`
writes a problem the way users read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from karnak_dicom.errors import ConfigError

__all__ = ["FieldPath", "LocatedYaml", "as_mapping", "format_path", "load_located_yaml"]

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """``a.b[0].c`` for ``("a", "b", 0, "c")``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass(frozen=True)
class LocatedYaml:
    """A YAML document's values, with the 1-based line of each value and of each mapping key."""

    data: Any
    lines: Mapping[FieldPath, int] = field(default_factory=dict)
    key_lines: Mapping[FieldPath, int] = field(default_factory=dict)

    def line(self, path: FieldPath, *, key: bool = False) -> int | None:
        """The line of `path` (its key's line with `key`), else of its nearest ancestor that has one."""
        lines = self.key_lines if key else self.lines
        for length in range(len(path), -1, -1):
            line = lines.get(path[:length]) or (self.lines.get(path[:length]) if key else None)
            if line:
                return line
        return None

    def locate(self, path: FieldPath, message: str, *, name: str | None = None, key: bool = False) -> str:
        """``path: message (line N)``; `name` replaces the formatted path (e.g. ``profileElements[2] 'x'``)."""
        line = self.line(path, key=key)
        where = name or format_path(path) or "(top level)"
        return f"{where}: {message}" + (f" (line {line})" if line else "")


def load_located_yaml(text: str, source: str) -> LocatedYaml:
    """Parse `text`; raise `ConfigError` ``<source>: not valid YAML (line L, column C): <problem>``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    lines: dict[FieldPath, int] = {}
    key_lines: dict[FieldPath, int] = {}
    if root is not None:
        _walk(root, (), lines, key_lines)
    return LocatedYaml(data, lines, key_lines)


def _walk(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], key_lines: dict[FieldPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            key_lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, key_lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, key_lines)


def as_mapping(document: LocatedYaml, source: str, what: str) -> dict[Any, Any]:
    """The document's top-level mapping; `ConfigError` ``<source>: <what>`` when it is something else."""
    if not isinstance(document.data, dict):
        raise ConfigError(f"{source}: {what}")
    return document.data
