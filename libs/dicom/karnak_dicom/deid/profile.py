"""Karnak de-identification profiles (YAML): loaded, validated and turned into immutable elements.

A profile is checked completely when it is loaded: every problem is reported at once, each naming the
element (its index in ``profileElements`` and its name), the field, and the line, e.g.::

    profileElements[2] 'Missing tags (generate an error)': tags: at least one tag is required for
    action.on.specific.tags (line 23)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from pydicom.datadict import dictionary_VR
from pydicom.valuerep import VR as VR_

from karnak_dicom.conditions import Condition, ConditionError
from karnak_dicom.deid.errors import ProfileError
from karnak_dicom.deid.expressions import Expression, ExpressionError, Template
from karnak_dicom.errors import ConfigError
from karnak_dicom.located_yaml import LocatedYaml, as_mapping, load_located_yaml
from karnak_dicom.spelling import suggestion
from karnak_dicom.tags import TagPattern, TagSelector, format_tag, parse_tag_pattern, parse_tag_reference

__all__ = [
    "AddPrivateTagElement",
    "AddTagElement",
    "BasicProfileElement",
    "CleanPixelDataElement",
    "DatesElement",
    "ExpressionElement",
    "Mask",
    "PrivateTagsElement",
    "Profile",
    "ProfileElement",
    "ReplaceApiElement",
    "ReplaceUidElement",
    "TagActionElement",
    "load_profile",
]


# --- Elements ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileElement:
    """What every element has: its position, name, codename and optional condition."""

    index: int
    name: str
    condition: Condition | None

    codename: ClassVar[str] = ""
    code_value: ClassVar[str | None] = None  # DCM code of the option the element implements
    code_meaning: ClassVar[str | None] = None

    @property
    def label(self) -> str:
        """How errors and rejections name the element."""
        return f"profileElements[{self.index}] {self.name!r}"


@dataclass(frozen=True)
class BasicProfileElement(ProfileElement):
    codename: ClassVar[str] = "basic.dicom.profile"
    code_value: ClassVar[str | None] = "113100"
    code_meaning: ClassVar[str | None] = "Basic Application Confidentiality Profile"


@dataclass(frozen=True)
class TagActionElement(ProfileElement):
    """``action.on.specific.tags``: K, X, Z, U, or D (with ``dummy``, else the dummy of the VR)."""

    selector: TagSelector
    action: str
    dummy: str | None = None

    codename: ClassVar[str] = "action.on.specific.tags"


@dataclass(frozen=True)
class PrivateTagsElement(ProfileElement):
    """``action.on.privatetags``: the action for private attributes (all of them when no tags are given)."""

    selector: TagSelector
    action: str
    dummy: str | None = None

    codename: ClassVar[str] = "action.on.privatetags"
    code_value: ClassVar[str | None] = "113111"
    code_meaning: ClassVar[str | None] = "Retain Safe Private Option"


@dataclass(frozen=True)
class DatesElement(ProfileElement):
    """``action.on.dates`` on AS, DA, DT and TM attributes (all of them when no tags are given)."""

    selector: TagSelector
    option: str  # shift | shift_range | shift_by_tag | date_format
    days: int = 0
    seconds: int = 0
    min_days: int = 0
    max_days: int = 0
    min_seconds: int = 0
    max_seconds: int = 0
    days_tag: int | None = None
    seconds_tag: int | None = None
    remove: str | None = None  # day | month_day

    codename: ClassVar[str] = "action.on.dates"
    code_value: ClassVar[str | None] = "113107"
    code_meaning: ClassVar[str | None] = "Retain Longitudinal Temporal Information Modified Dates Option"


@dataclass(frozen=True)
class ExpressionElement(ProfileElement):
    """``expression.on.tags``: an expression giving the action for each covered attribute."""

    selector: TagSelector
    expression: Expression

    codename: ClassVar[str] = "expression.on.tags"


@dataclass(frozen=True)
class AddTagElement(ProfileElement):
    """``action.add.tag``: set an attribute that is absent or empty."""

    tag: int
    vr: str
    value: str

    codename: ClassVar[str] = "action.add.tag"


@dataclass(frozen=True)
class AddPrivateTagElement(ProfileElement):
    """``action.add.private.tag``: set a private attribute under its creator, created when missing."""

    tag: int
    vr: str
    value: str
    private_creator: str

    codename: ClassVar[str] = "action.add.private.tag"

    @property
    def creator_tag(self) -> int:
        return (self.tag & 0xFFFF0000) | ((self.tag >> 8) & 0xFF)


@dataclass(frozen=True)
class ReplaceUidElement(ProfileElement):
    """``replace.uid``: U, X or Z on the listed UID attributes."""

    selector: TagSelector
    action: str

    codename: ClassVar[str] = "replace.uid"


@dataclass(frozen=True)
class CleanPixelDataElement(ProfileElement):
    """``clean.pixel.data``: blank the profile's mask in eligible images."""

    codename: ClassVar[str] = "clean.pixel.data"
    code_value: ClassVar[str | None] = "113101"
    code_meaning: ClassVar[str | None] = "Clean Pixel Data Option"


@dataclass(frozen=True)
class ReplaceApiElement(ProfileElement):
    """``action.replace.api``: the covered attributes take values an HTTP API gives.

    The engine does not call the API itself: ``Deidentifier.for_project(..., replace_api=...)`` receives
    the function that does, called with this element and the original instance.
    """

    selector: TagSelector
    url: Template
    method: str  # GET | POST
    body: Template | None
    response_path: str
    auth_config: str | None
    default_value: str | None

    codename: ClassVar[str] = "action.replace.api"


@dataclass(frozen=True)
class Mask:
    """Rectangles (x, y, width, height) to blank for one station (``*``: any), optionally one image size."""

    station_name: str
    rectangles: tuple[tuple[int, int, int, int], ...]
    color: str | None = None
    image_width: int | None = None
    image_height: int | None = None


@dataclass(frozen=True)
class Profile:
    """A loaded, valid profile: metadata, elements in order, and masks."""

    name: str
    version: str | None
    elements: tuple[ProfileElement, ...]
    masks: tuple[Mask, ...] = ()
    minimum_karnak_version: str | None = None
    default_issuer_of_patient_id: str | None = None

    def uses(self, codename: str) -> bool:
        return any(element.codename == codename for element in self.elements)


# --- Loading ----------------------------------------------------------------------------------------------

_TOP_KEYS: Final = ("name", "version", "minimumKarnakVersion", "defaultIssuerOfPatientID", "profileElements", "masks")
_ELEMENT_KEYS: Final = ("name", "codename", "condition", "action", "option", "arguments", "tags", "excludedTags")
_MASK_KEYS: Final = ("stationName", "color", "rectangles", "imageWidth", "imageHeight")
_ACTIONS: Final = ("K", "X", "Z", "U", "D")
_DATE_OPTIONS: Final = {
    "shift": (("days", "seconds"), ()),
    "shift_range": (("max_days", "max_seconds"), ("min_days", "min_seconds")),
    "shift_by_tag": ((), ("days_tag", "seconds_tag")),
    "date_format": (("remove",), ()),
}
_UNSUPPORTED: Final = {
    "clean.recognizable.visual.features": "defacing is not supported by this gateway",
}


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str, line: int | None) -> None:
        self.items.append(f"{where}: {message}" + (f" (line {line})" if line else ""))


def _looks_like_yaml(text: str) -> bool:
    return "\n" in text or ": " in text or text.lstrip().startswith(("{", "["))


def load_profile(source: str | Path) -> Profile:
    """Load a profile from a Path, a path string or YAML text; raises ProfileError.

    A string is YAML text when it has a line break, a ``key: value`` pair or starts a flow collection.
    """
    if isinstance(source, Path) or not _looks_like_yaml(source):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"profile {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        text = source
    return _ProfileReader(text).read()


class _ProfileReader:
    def __init__(self, text: str) -> None:
        self._text = text
        self._problems = _Problems()

    def read(self) -> Profile:
        try:
            document = load_located_yaml(self._text, "profile")
            data = as_mapping(document, "profile", "expected a mapping with name, version and profileElements")
        except ConfigError as exc:
            raise ProfileError(exc.problems) from None
        key_lines = {str(key): document.line((str(key),), key=True) for key in data}
        problems = self._problems
        for key in data:
            if key not in _TOP_KEYS:
                problems.add(
                    str(key), f"unknown key{suggestion(str(key), _TOP_KEYS, cutoff=0.7)}", key_lines.get(str(key))
                )
        name = self._optional_text(data, "name", key_lines) or ""
        version = self._optional_text(data, "version", key_lines)
        minimum = self._optional_text(data, "minimumKarnakVersion", key_lines)
        issuer = self._optional_text(data, "defaultIssuerOfPatientID", key_lines)
        raw_elements = data.get("profileElements")
        elements: list[ProfileElement] = []
        if not isinstance(raw_elements, list) or not raw_elements:
            line = key_lines.get("profileElements")
            problems.add("profileElements", "a non-empty list of elements is required", line)
        else:
            for index, raw in enumerate(raw_elements):
                element = self._element(index, raw, document.line(("profileElements", index)))
                if element is not None:
                    elements.append(element)
        masks = self._masks(data.get("masks"), document, key_lines.get("masks"))
        if problems.items:
            raise ProfileError(problems.items)
        return Profile(
            name=name,
            version=version,
            elements=tuple(elements),
            masks=masks,
            minimum_karnak_version=minimum,
            default_issuer_of_patient_id=issuer,
        )

    def _optional_text(self, data: dict[str, Any], key: str, lines: dict[str, int | None]) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        self._problems.add(key, "must be text", lines.get(key))
        return None

    # --- one element ---

    def _element(self, index: int, raw: Any, line: int | None) -> ProfileElement | None:
        problems = self._problems
        if not isinstance(raw, dict):
            problems.add(f"profileElements[{index}]", "must be a mapping with name and codename", line)
            return None
        name = raw.get("name")
        where = f"profileElements[{index}]" + (f" {name!r}" if isinstance(name, str) else "")
        before = len(problems.items)

        def fail(message: str) -> None:
            problems.add(where, message, line)

        for key in raw:
            if key not in _ELEMENT_KEYS:
                fail(f"{key}: unknown key{suggestion(str(key), _ELEMENT_KEYS, cutoff=0.7)}")
        if not isinstance(name, str) or not name.strip():
            fail("name: required")
            name = ""
        codename = raw.get("codename")
        condition = self._condition(raw.get("condition"), fail)
        if not isinstance(codename, str) or not codename:
            fail("codename: required")
            return None
        builder = _BUILDERS.get(codename)
        if builder is None:
            reason = _UNSUPPORTED.get(codename)
            if reason:
                fail(f"codename: {codename!r} is not supported: {reason}")
            else:
                fail(f"codename: unknown codename {codename!r}{suggestion(codename, _BUILDERS, cutoff=0.7)}")
            return None
        element = builder(self, _ElementInput(index, name, condition, raw, fail))
        return element if len(problems.items) == before else None

    @staticmethod
    def _condition(value: Any, fail: Callable[[str], None]) -> Condition | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            fail("condition: must be text")
            return None
        try:
            return Condition.parse(value)
        except ConditionError as exc:
            fail(f"condition: {exc}")
            return None

    # --- masks ---

    def _masks(self, raw: Any, document: LocatedYaml, key_line: int | None) -> tuple[Mask, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self._problems.add("masks", "must be a list", key_line)
            return ()
        masks: list[Mask] = []
        for index, item in enumerate(raw):
            line = document.line(("masks", index))
            where = f"masks[{index}]"
            if not isinstance(item, dict):
                self._problems.add(where, "must be a mapping with stationName and rectangles", line)
                continue
            before = len(self._problems.items)
            for key in item:
                if key not in _MASK_KEYS:
                    self._problems.add(where, f"{key}: unknown key{suggestion(str(key), _MASK_KEYS, cutoff=0.7)}", line)
            station = item.get("stationName")
            if not isinstance(station, str | int) or isinstance(station, bool) or str(station) == "":
                self._problems.add(where, "stationName: required (a station name, or * for any)", line)
            rectangles = self._rectangles(where, item.get("rectangles"), line)
            width, height = item.get("imageWidth"), item.get("imageHeight")
            for key, value in (("imageWidth", width), ("imageHeight", height)):
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                    self._problems.add(where, f"{key}: must be a positive whole number of pixels", line)
            if (width is None) != (height is None):
                self._problems.add(where, "imageWidth and imageHeight must be given together", line)
            color = item.get("color")
            if len(self._problems.items) == before:
                masks.append(Mask(str(station), rectangles, None if color is None else str(color), width, height))
        return tuple(masks)

    def _rectangles(self, where: str, raw: Any, line: int | None) -> tuple[tuple[int, int, int, int], ...]:
        if not isinstance(raw, list) or not raw:
            self._problems.add(where, "rectangles: a non-empty list of 'x y width height' is required", line)
            return ()
        rectangles: list[tuple[int, int, int, int]] = []
        for position, text in enumerate(raw):
            parts = str(text).split()
            try:
                x, y, width, height = (int(part) for part in parts)
            except ValueError:
                self._problems.add(
                    where, f"rectangles[{position}]: {text!r} is not 'x y width height' in whole pixels", line
                )
                continue
            if x < 0 or y < 0 or width <= 0 or height <= 0:
                self._problems.add(
                    where, f"rectangles[{position}]: x and y must be >= 0, width and height > 0 in {text!r}", line
                )
                continue
            rectangles.append((x, y, width, height))
        return tuple(rectangles)


@dataclass
class _ElementInput:
    index: int
    name: str
    condition: Condition | None
    raw: dict[str, Any]
    fail: Callable[[str], None]

    def reject_keys(self, codename: str, *keys: str) -> None:
        for key in keys:
            value = self.raw.get(key)
            if value not in (None, [], {}, ""):
                self.fail(f"{key}: not used by {codename}")

    def arguments(self, codename: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
        raw = self.raw.get("arguments")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail("arguments: must be a mapping of names to values")
            return {}
        for key in raw:
            if key not in required + optional:
                accepted = ", ".join(required + optional) or "none"
                self.fail(f"arguments.{key}: unknown argument for {codename} (accepted: {accepted})")
        for key in required:
            if raw.get(key) is None:
                self.fail(f"arguments.{key}: required for {codename}")
        return {str(key): value for key, value in raw.items() if value is not None}

    def integer(self, arguments: dict[str, Any], key: str, default: int = 0) -> int:
        value = arguments.get(key, default)
        if isinstance(value, bool):
            self.fail(f"arguments.{key}: must be a whole number")
            return default
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            self.fail(f"arguments.{key}: must be a whole number, not {value!r}")
            return default

    def text(self, arguments: dict[str, Any], key: str) -> str | None:
        value = arguments.get(key)
        if value is None:
            return None
        if isinstance(value, dict | list):
            self.fail(f"arguments.{key}: must be text")
            return None
        return str(value)

    def patterns(self, key: str) -> tuple[TagPattern, ...]:
        raw = self.raw.get(key)
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.fail(f"{key}: must be a list of tags such as '(0010,0010)' or '(0010,XXXX)'")
            return ()
        patterns: list[TagPattern] = []
        for position, item in enumerate(raw):
            if not isinstance(item, str):
                self.fail(f"{key}[{position}]: write the tag as quoted text, e.g. '(0010,0010)' (YAML read {item!r})")
                continue
            try:
                patterns.append(parse_tag_pattern(item))
            except ValueError as exc:
                self.fail(f"{key}[{position}]: {exc}")
        return tuple(patterns)

    def selector(self, codename: str, *, required: bool) -> TagSelector:
        included = self.patterns("tags")
        excluded = self.patterns("excludedTags")
        if required and not self.raw.get("tags"):
            self.fail(f"tags: at least one tag is required for {codename}")
        return TagSelector(included, excluded)

    def action(self, codename: str, allowed: tuple[str, ...]) -> str:
        action = self.raw.get("action")
        if action is None:
            self.fail(f"action: required for {codename} (one of {', '.join(allowed)})")
            return ""
        if not isinstance(action, str) or action not in allowed:
            hint = " (actions are upper-case)" if isinstance(action, str) and action.upper() in allowed else ""
            self.fail(f"action: {action!r} is not one of {', '.join(allowed)}{hint}")
            return ""
        return action

    def single_tag(self, codename: str) -> int | None:
        patterns = self.patterns("tags")
        if len(patterns) != 1 or not patterns[0].is_exact:
            if self.raw.get("tags") is None or patterns:
                self.fail(f"tags: exactly one tag (no X wildcard) is required for {codename}")
            return None
        return patterns[0].value


def _basic(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    spec.reject_keys("basic.dicom.profile", "action", "option", "arguments", "tags", "excludedTags")
    return BasicProfileElement(spec.index, spec.name, spec.condition)


def _dummy(spec: _ElementInput, codename: str, action: str) -> str | None:
    arguments = spec.arguments(codename, (), ("dummy",) if action == "D" else ())
    return spec.text(arguments, "dummy")


def _tag_actions(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = TagActionElement.codename
    spec.reject_keys(codename, "option")
    selector = spec.selector(codename, required=True)
    action = spec.action(codename, _ACTIONS)
    return TagActionElement(spec.index, spec.name, spec.condition, selector, action, _dummy(spec, codename, action))


def _private_tags(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = PrivateTagsElement.codename
    spec.reject_keys(codename, "option")
    selector = spec.selector(codename, required=False)
    action = spec.action(codename, _ACTIONS)
    return PrivateTagsElement(spec.index, spec.name, spec.condition, selector, action, _dummy(spec, codename, action))


def _dates(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = DatesElement.codename
    spec.reject_keys(codename, "action")
    selector = spec.selector(codename, required=False)
    option = spec.raw.get("option")
    if option not in _DATE_OPTIONS:
        available = ", ".join(_DATE_OPTIONS)
        if option is None:
            spec.fail(f"option: required for {codename} (one of {available})")
        else:
            hint = (
                " (did you mean 'date_format'?)"
                if option == "format_date"
                else suggestion(str(option), _DATE_OPTIONS, cutoff=0.7)
            )
            spec.fail(f"option: {option!r} is not one of {available}{hint}")
        return DatesElement(spec.index, spec.name, spec.condition, selector, "")
    required, optional = _DATE_OPTIONS[option]
    arguments = spec.arguments(f"{codename} option {option}", required, optional)
    values: dict[str, Any] = {}
    if option == "shift":
        values = {"days": spec.integer(arguments, "days"), "seconds": spec.integer(arguments, "seconds")}
    elif option == "shift_range":
        values = {key: spec.integer(arguments, key) for key in ("min_days", "max_days", "min_seconds", "max_seconds")}
        for unit in ("days", "seconds"):
            if values[f"max_{unit}"] < values[f"min_{unit}"]:
                spec.fail(f"arguments.max_{unit}: must not be less than min_{unit}")
    elif option == "shift_by_tag":
        for key in ("days_tag", "seconds_tag"):
            text = spec.text(arguments, key)
            if text is not None:
                try:
                    values[key] = parse_tag_reference(text)
                except ValueError as exc:
                    spec.fail(f"arguments.{key}: {exc}")
    else:
        remove = spec.text(arguments, "remove")
        if remove is not None and remove not in ("day", "month_day"):
            spec.fail(f"arguments.remove: {remove!r} is not one of day, month_day")
        values = {"remove": remove}
    return DatesElement(spec.index, spec.name, spec.condition, selector, str(option), **values)


def _expression(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = ExpressionElement.codename
    spec.reject_keys(codename, "action", "option")
    selector = spec.selector(codename, required=True)
    arguments = spec.arguments(codename, ("expr",), ())
    source = spec.text(arguments, "expr")
    expression: Expression | None = None
    if source is not None:
        try:
            expression = Expression.for_action(source)
        except ExpressionError as exc:
            spec.fail(f"arguments.expr: {exc}")
    if expression is None:
        expression = Expression("null")
    return ExpressionElement(spec.index, spec.name, spec.condition, selector, expression)


def _added_value_and_vr(
    spec: _ElementInput, codename: str, tag: int | None, *, private: bool
) -> tuple[str, str, dict[str, Any]]:
    arguments = spec.arguments(
        codename, ("value", "vr") if private else ("value",), ("privateCreator",) if private else ("vr",)
    )
    value = spec.text(arguments, "value") or ""
    vr = spec.text(arguments, "vr")
    if vr is not None:
        vr = vr.strip().upper()
        if vr not in {v.value for v in VR_} or vr == "SQ":
            spec.fail(f"arguments.vr: {vr!r} is not a VR an attribute can be added with")
    elif tag is not None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            spec.fail(f"arguments.vr: required, {format_tag(tag)} is not in the DICOM dictionary")
        else:
            if vr not in {v.value for v in VR_} or vr == "SQ":
                spec.fail(f"arguments.vr: required, the dictionary VR of {format_tag(tag)} is {vr!r}")
    return value, vr or "", arguments


def _add_tag(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = AddTagElement.codename
    spec.reject_keys(codename, "action", "option", "excludedTags")
    tag = spec.single_tag(codename)
    if tag is not None and tag & 0x10000:
        spec.fail(f"tags: {format_tag(tag)} is private, use action.add.private.tag")
    value, vr, _ = _added_value_and_vr(spec, codename, tag, private=False)
    return AddTagElement(spec.index, spec.name, spec.condition, tag or 0, vr, value)


def _add_private_tag(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = AddPrivateTagElement.codename
    spec.reject_keys(codename, "action", "option", "excludedTags")
    tag = spec.single_tag(codename)
    if tag is not None and (not tag & 0x10000 or (tag & 0xFFFF) < 0x1000):
        spec.fail(f"tags: {format_tag(tag)} is not a private data element (odd group, element 10xx to FFxx)")
    value, vr, arguments = _added_value_and_vr(spec, codename, tag, private=True)
    creator = spec.text(arguments, "privateCreator")
    if not creator:
        spec.fail("arguments.privateCreator: required, the private creator the tag belongs to")
    return AddPrivateTagElement(spec.index, spec.name, spec.condition, tag or 0, vr, value, creator or "")


def _replace_uid(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = ReplaceUidElement.codename
    spec.reject_keys(codename, "option", "arguments")
    selector = spec.selector(codename, required=True)
    action = spec.action(codename, ("U", "X", "Z"))
    return ReplaceUidElement(spec.index, spec.name, spec.condition, selector, action)


def _clean_pixel_data(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    spec.reject_keys(CleanPixelDataElement.codename, "action", "option", "arguments", "tags", "excludedTags")
    return CleanPixelDataElement(spec.index, spec.name, spec.condition)


def _template(spec: _ElementInput, key: str, text: str | None) -> Template | None:
    if text is None:
        return None
    try:
        return Template(text)
    except ExpressionError as exc:
        spec.fail(f"arguments.{key}: {exc}")
        return None


def _replace_api(reader: _ProfileReader, spec: _ElementInput) -> ProfileElement:
    codename = ReplaceApiElement.codename
    spec.reject_keys(codename, "action", "option")
    selector = spec.selector(codename, required=True)
    arguments = spec.arguments(codename, ("url", "responsePath"), ("method", "body", "authConfig", "defaultValue"))
    method = (spec.text(arguments, "method") or "GET").upper()
    if method not in ("GET", "POST"):
        spec.fail(f"arguments.method: {method!r} is not GET or POST")
    url = _template(spec, "url", spec.text(arguments, "url"))
    body = _template(spec, "body", spec.text(arguments, "body"))
    if method == "POST" and body is None and "body" not in arguments:
        spec.fail("arguments.body: required for a POST request")
    response_path = spec.text(arguments, "responsePath") or ""
    if response_path and not response_path.startswith("/"):
        response_path = "/" + response_path
    return ReplaceApiElement(
        spec.index,
        spec.name,
        spec.condition,
        selector,
        url or Template(""),
        method,
        body,
        response_path,
        spec.text(arguments, "authConfig"),
        spec.text(arguments, "defaultValue"),
    )


_BUILDERS: Final = {
    BasicProfileElement.codename: _basic,
    TagActionElement.codename: _tag_actions,
    PrivateTagsElement.codename: _private_tags,
    DatesElement.codename: _dates,
    ExpressionElement.codename: _expression,
    AddTagElement.codename: _add_tag,
    AddPrivateTagElement.codename: _add_private_tag,
    ReplaceUidElement.codename: _replace_uid,
    CleanPixelDataElement.codename: _clean_pixel_data,
    ReplaceApiElement.codename: _replace_api,
}
