"""The routing document of a revision: read from a file, checksummed, compared, exported as YAML.

A document is the JSON form of the file's routing keys (`forward_nodes`, `projects`) as written, with two
differences: each project's `profile` is the profile's YAML text rather than a path (every service then
runs the same profile, whatever its file system holds), and literal secrets are encrypted (`secrets`).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from karnak_shared.config import ROUTING_KEYS, FieldPath, is_profile_text
from karnak_shared.errors import ConfigError
from karnak_shared.revisions.secrets import is_encrypted

Document = dict[str, Any]


def embed_profiles(routing: Document, base_dir: Path, lines: dict[FieldPath, int] | None = None) -> Document:
    """The routing part with each project's profile file replaced by its YAML text.

    Raises `ConfigError` naming `projects[i].profile` (and its line) for a file that cannot be read.
    """
    document = copy.deepcopy(routing)
    problems = []
    projects = document.get("projects")
    stored = document.get("profiles")
    names = {p.get("name") for p in (stored if isinstance(stored, list) else []) if isinstance(p, dict)}
    for index, project in enumerate(projects if isinstance(projects, list) else []):
        profile = project.get("profile") if isinstance(project, dict) else None
        if not isinstance(profile, str) or is_profile_text(profile) or profile in names:
            continue  # left to validation (missing, not a string), already the text, or a stored profile's name
        path = Path(profile) if Path(profile).is_absolute() else base_dir / profile
        try:
            project["profile"] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            line = (lines or {}).get(("projects", index, "profile"))
            reason = getattr(exc, "strerror", None) or exc
            problems.append(
                f"projects[{index}].profile: cannot read {path}: {reason}" + (f" (line {line})" if line else "")
            )
        else:
            if not is_profile_text(project["profile"]):
                # A one-line file would read as a path again when the revision is built.
                project["profile"] += "\n"
    if problems:
        raise ConfigError(problems)
    return document


def routing_part(data: dict[str, Any]) -> Document:
    """The routing keys of a parsed configuration file."""
    return {key: data[key] for key in ROUTING_KEYS if data.get(key) is not None}


def canonical_json(document: Document) -> str:
    """The one JSON text of a document: sorted keys, no spaces (what the checksum is computed over)."""
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the routing configuration holds a value JSON cannot carry: {exc}") from None


def checksum(document: Document) -> str:
    """``sha256:<hex>`` of the canonical JSON of a document."""
    return "sha256:" + hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


# --- comparing two documents -----------------------------------------------------------------------

# The field that names an element of a list, so a change reads `destinations[pacs-b]`, not `[3]`.
_IDENTITIES = ("id", "ae_title", "name", "code")


@dataclass(frozen=True)
class Change:
    """One difference between two documents. Values are shown as stored: secrets stay references or masked."""

    path: str
    kind: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None

    def lines(self) -> list[str]:
        """The change as `karnak config diff` prints it."""
        if self.kind == "added":
            return [f"+ {self.path}: {_show(self.after)}"]
        if self.kind == "removed":
            return [f"- {self.path}: {_show(self.before)}"]
        if _is_text(self.before) and _is_text(self.after):
            body = difflib.unified_diff(
                str(self.before).splitlines(), str(self.after).splitlines(), "before", "after", lineterm="", n=1
            )
            return [f"~ {self.path}:"] + [f"    {line}" for line in list(body)[2:]]
        return [f"~ {self.path}: {_show(self.before)} -> {_show(self.after)}"]


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value


def _mask(value: Any) -> Any:
    if is_encrypted(value):
        return "(encrypted secret)"
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if _is_text(value):
        return f"({len(value.splitlines())} lines of text)"
    return value


def _show(value: Any) -> str:
    masked = _mask(value)
    if isinstance(masked, str) and masked.startswith("(") and masked.endswith(")"):
        return masked
    return json.dumps(masked, ensure_ascii=False, sort_keys=False)


def _identity(before: list[Any], after: list[Any]) -> str | None:
    """The field that tells the elements of both lists apart (each has it, unique in each list), if any."""
    if not all(isinstance(item, dict) for item in before + after):
        return None
    for key in _IDENTITIES:
        if all(_unique(items, key) for items in (before, after)):
            return key
    return None


def _unique(items: list[Any], key: str) -> bool:
    values = [item.get(key) for item in items]
    return all(isinstance(v, str) for v in values) and len(set(values)) == len(values)


def diff_documents(before: Document | None, after: Document) -> list[Change]:
    """Every difference from `before` (None: nothing yet) to `after`, in document order."""
    changes: list[Change] = []
    _compare(before or {}, after, "", changes)
    return changes


def _compare(before: Any, after: Any, path: str, changes: list[Change]) -> None:
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*after, *(k for k in before if k not in after)]:
            here = f"{path}.{key}" if path else str(key)
            # A list that appears or goes is compared with an empty one: one change per element.
            if key not in before and isinstance(after[key], list):
                _compare([], after[key], here, changes)
            elif key not in after and isinstance(before[key], list):
                _compare(before[key], [], here, changes)
            elif key not in before:
                changes.append(Change(here, "added", after=after[key]))
            elif key not in after:
                changes.append(Change(here, "removed", before=before[key]))
            else:
                _compare(before[key], after[key], here, changes)
        return
    if isinstance(before, list) and isinstance(after, list):
        key = _identity(before, after)
        if key is not None:
            old = {item[key]: item for item in before}
            new = {item[key]: item for item in after}
            for name, item in new.items():
                here = f"{path}[{name}]"
                if name not in old:
                    changes.append(Change(here, "added", after=item))
                else:
                    _compare(old[name], item, here, changes)
            for name, item in old.items():
                if name not in new:
                    changes.append(Change(f"{path}[{name}]", "removed", before=item))
            return
        for index in range(max(len(before), len(after))):
            here = f"{path}[{index}]"
            if index >= len(before):
                changes.append(Change(here, "added", after=after[index]))
            elif index >= len(after):
                changes.append(Change(here, "removed", before=before[index]))
            else:
                _compare(before[index], after[index], here, changes)
        return
    changes.append(Change(path, "changed", before=before, after=after))


def format_changes(changes: list[Change]) -> list[str]:
    """The lines of a diff; one line saying so when nothing changed."""
    if not changes:
        return ["no change"]
    return [line for change in changes for line in change.lines()]


# --- YAML -----------------------------------------------------------------------------------------


class _ExportDumper(yaml.SafeDumper):
    """Profiles and other multi-line texts as literal blocks, so an export reads like the file it came from."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_ExportDumper.add_representer(str, _represent_str)


def to_yaml(document: Document, header: str = "") -> str:
    """A document as YAML that `karnak config apply` takes back with no change."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.dump(document, Dumper=_ExportDumper, sort_keys=False, allow_unicode=True, width=120)
