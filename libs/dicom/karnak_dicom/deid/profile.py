"""Karnak de-identification profiles (YAML) as pydantic models: one model per codename, Karnak's keys.

A profile document is a `Profile`: ``name``, ``version``, ``minimumKarnakVersion``,
``defaultIssuerOfPatientID``, ``profileElements`` and ``masks``. Each element is the model of its
``codename`` (a union discriminated on it; ``action.on.dates`` is itself discriminated on ``option``), with
Karnak's camelCase keys (``name``, ``codename``, ``condition``, ``action``, ``tags``, ``excludedTags``,
``option``, ``arguments``), and compiles to the engine's rule with ``rule()``. Conditions, expressions,
templates and tags are parsed once, when the model is validated, so a valid model is one the engine runs.
`profile_json_schema` is the schema the console publishes.

`load_profile` reads the YAML with `karnak_dicom.located_yaml` (the configuration's loader too) and reports
every problem at once, each naming the element (its index in ``profileElements`` and its name), the field,
and the line, e.g.::

    profileElements[2] 'Missing tags (generate an error)': tags: at least one tag is required for
    action.on.specific.tags (line 23)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydicom.datadict import dictionary_VR
from pydicom.valuerep import VR as VR_

from karnak_dicom.conditions import Condition, ConditionError
from karnak_dicom.deid.errors import ProfileError
from karnak_dicom.deid.expressions import Expression, Template
from karnak_dicom.deid.rules import (
    AddTagRule,
    BasicRule,
    DatesRule,
    ExpressionRule,
    PrivateTagsRule,
    ReplaceApiRule,
    Rule,
    TagRule,
    static_action,
)
from karnak_dicom.errors import ConfigError
from karnak_dicom.located_yaml import FieldPath, LocatedYaml, as_mapping, format_path, load_located_yaml
from karnak_dicom.spelling import suggestion
from karnak_dicom.tags import TagPattern, TagSelector, format_tag, parse_tag_pattern, parse_tag_reference

__all__ = [
    "AddPrivateTagElement",
    "AddTagElement",
    "AnyProfileElement",
    "BasicProfileElement",
    "CleanPixelDataElement",
    "DatesElement",
    "ExpressionElement",
    "Mask",
    "PrivateTagsElement",
    "Profile",
    "ProfileElement",
    "ProfileProblem",
    "ReplaceApiElement",
    "ReplaceUidElement",
    "TagActionElement",
    "load_profile",
    "profile_json_schema",
    "profile_problems",
]

_ELEMENT_KEYS: Final = ("name", "codename", "condition", "action", "option", "arguments", "tags", "excludedTags")
_UNSUPPORTED: Final = {
    "clean.recognizable.visual.features": "defacing is not supported by this gateway",
}


def field_problem(field: str, message: str) -> PydanticCustomError:
    """A problem a model validator finds in one of its fields: reported at that field's path."""
    return PydanticCustomError("profile_field", "{field}: {message}", {"field": field, "message": message})


# --- Value types: the YAML text, parsed once -------------------------------------------------------------


def _text(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, dict | list):
        raise ValueError("must be text")
    return str(value) if isinstance(value, int | float) else value


Text = Annotated[str, BeforeValidator(_text)]
"""Text; YAML numbers (``version: 1.0``) are read as the text they are written as."""


def _whole_number(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"must be a whole number, not {value!r}") from None


WholeNumber = Annotated[int, PlainValidator(_whole_number), WithJsonSchema({"type": ["integer", "string"]})]


def _tag_pattern(value: Any) -> TagPattern:
    if isinstance(value, TagPattern):
        return value
    if not isinstance(value, str):
        raise ValueError(f"write the tag as quoted text, e.g. '(0010,0010)' (YAML read {value!r})")
    return parse_tag_pattern(value)


_TAG_SCHEMA: Final = {"type": "string", "description": "(gggg,eeee), gggg,eeee or ggggeeee; X for any digit"}
TagPatternText = Annotated[
    TagPattern,
    PlainValidator(_tag_pattern),
    PlainSerializer(lambda pattern: pattern.text, return_type=str),
    WithJsonSchema(_TAG_SCHEMA),
]


def _tag_list(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of tags such as '(0010,0010)' or '(0010,XXXX)'")
    return value


TagList = Annotated[tuple[TagPatternText, ...], BeforeValidator(_tag_list)]


def _tag_reference(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_tag_reference(str(value))


TagReference = Annotated[
    int,
    PlainValidator(_tag_reference),
    PlainSerializer(format_tag, return_type=str),
    WithJsonSchema({"type": "string", "description": "a tag (gggg,eeee) or a DICOM keyword"}),
]


def _condition(value: Any) -> Condition | None:
    if value is None or isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise ValueError("must be text")
    if not value.strip():
        return None
    try:
        return Condition.parse(value)
    except ConditionError as exc:
        raise ValueError(str(exc)) from None


ProfileCondition = Annotated[
    Condition | None,
    PlainValidator(_condition),
    PlainSerializer(lambda condition: None if condition is None else str.__str__(condition)),
    WithJsonSchema({"type": ["string", "null"], "description": "a condition of Karnak's condition language"}),
]


def _action_expression(value: Any) -> Expression:
    if isinstance(value, Expression):
        return value
    if isinstance(value, dict | list):
        raise ValueError("must be text")
    return Expression.for_action(str(value))  # ExpressionError is a ValueError: pydantic reports it


ActionExpression = Annotated[
    Expression,
    PlainValidator(_action_expression),
    PlainSerializer(lambda expression: expression.source, return_type=str),
    WithJsonSchema({"type": "string", "description": "an expression giving an action, e.g. Keep()"}),
]


def _template(value: Any) -> Template:
    if isinstance(value, Template):
        return value
    if isinstance(value, dict | list):
        raise ValueError("must be text")
    return Template(str(value))


TemplateText = Annotated[
    Template,
    PlainValidator(_template),
    PlainSerializer(lambda template: template.source, return_type=str),
    WithJsonSchema({"type": "string", "description": "text with {{ expression }} placeholders"}),
]


# --- Models ----------------------------------------------------------------------------------------------


class ProfileModel(BaseModel):
    """What every part of a profile shares: Karnak's keys only, immutable once valid."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)

    @classmethod
    def missing_message(cls, key: str) -> str:
        """What a missing key is told (the key as the YAML spells it)."""
        return "required"

    @classmethod
    def unknown_message(cls, key: str) -> str:
        """What a key the model does not have is told."""
        return f"unknown key{suggestion(key, cls.keys(), cutoff=0.7)}"

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(field.alias or name for name, field in cls.model_fields.items())


class Arguments(ProfileModel):
    """An element's ``arguments``; ``context`` names the element (and option) they belong to."""

    context: ClassVar[str] = ""

    @classmethod
    def missing_message(cls, key: str) -> str:
        return f"required for {cls.context}"

    @classmethod
    def unknown_message(cls, key: str) -> str:
        return f"unknown argument for {cls.context} (accepted: {', '.join(cls.keys()) or 'none'})"


class ProfileElement(ProfileModel):
    """What every element has: a name, its codename and an optional condition; it compiles to a rule."""

    name: str
    condition: ProfileCondition = None

    code_value: ClassVar[str | None] = None  # DCM code of the option the element implements
    code_meaning: ClassVar[str | None] = None
    _index: int = PrivateAttr(default=0)

    @classmethod
    def codename_value(cls) -> str:
        return str(cls.model_fields["codename"].default)

    @property
    def index(self) -> int:
        """Its position in ``profileElements``."""
        return self._index

    @property
    def label(self) -> str:
        """How errors and rejections name the element."""
        return f"profileElements[{self.index}] {self.name!r}"

    def rule(self) -> Rule:
        """The element compiled for the engine's attribute walk."""
        return Rule(self)

    @classmethod
    def missing_message(cls, key: str) -> str:
        codename = cls.codename_value()
        if key == "tags":
            return f"at least one tag is required for {codename}"
        if key == "action":
            return f"required for {codename} (one of {', '.join(get_args(cls.model_fields['action'].annotation))})"
        return "required"

    @classmethod
    def unknown_message(cls, key: str) -> str:
        if key in _ELEMENT_KEYS:
            return f"not used by {cls.codename_value()}"
        return f"unknown key{suggestion(key, _ELEMENT_KEYS, cutoff=0.7)}"

    @model_validator(mode="before")
    @classmethod
    def _karnak_empty_values(cls, data: Any) -> Any:
        """Karnak ignores keys an element does not use when they are empty, and reads no arguments as none."""
        if not isinstance(data, dict):
            return data
        keys = cls.keys()
        data = {k: v for k, v in data.items() if k in keys or k not in _ELEMENT_KEYS or v not in (None, [], {}, "")}
        if "arguments" in keys and data.get("arguments") is None:
            data["arguments"] = {}
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("required")
        return value

    @field_validator("action", mode="before", check_fields=False)
    @classmethod
    def _one_of_the_actions(cls, value: Any) -> Any:
        allowed = get_args(cls.model_fields["action"].annotation)
        if not isinstance(value, str) or value not in allowed:
            hint = " (actions are upper-case)" if isinstance(value, str) and value.upper() in allowed else ""
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}{hint}")
        return value

    @field_validator("tags", check_fields=False)
    @classmethod
    def _some_tags(cls, value: tuple[TagPattern, ...]) -> tuple[TagPattern, ...]:
        if not value and cls.model_fields["tags"].is_required():
            raise ValueError(cls.missing_message("tags"))
        return value


class _SelectingElement(ProfileElement):
    """An element acting on the attributes its ``tags`` (all when optional and empty) less ``excludedTags`` cover."""

    tags: TagList
    excluded_tags: TagList = Field((), alias="excludedTags")

    @property
    def selector(self) -> TagSelector:
        return TagSelector(self.tags, self.excluded_tags)


class BasicProfileElement(ProfileElement):
    """``basic.dicom.profile``: the PS3.15 Basic Application Confidentiality Profile."""

    codename: Literal["basic.dicom.profile"] = "basic.dicom.profile"
    code_value: ClassVar[str | None] = "113100"
    code_meaning: ClassVar[str | None] = "Basic Application Confidentiality Profile"

    def rule(self) -> Rule:
        return BasicRule(self)


class DummyArguments(Arguments):
    context: ClassVar[str] = "action.on.specific.tags"
    dummy: Text | None = None


class PrivateDummyArguments(DummyArguments):
    context: ClassVar[str] = "action.on.privatetags"


class TagActionElement(_SelectingElement):
    """``action.on.specific.tags``: K, X, Z, U, or D (with ``dummy``, else the dummy of the VR)."""

    codename: Literal["action.on.specific.tags"] = "action.on.specific.tags"
    action: Literal["K", "X", "Z", "U", "D"]
    arguments: DummyArguments = DummyArguments()

    @property
    def dummy(self) -> str | None:
        return self.arguments.dummy

    @model_validator(mode="after")
    def _dummy_only_with_d(self) -> TagActionElement:
        if self.arguments.dummy is not None and self.action != "D":
            raise field_problem("arguments.dummy", "only used with action D")
        return self

    def rule(self) -> Rule:
        return TagRule(self, self.selector, static_action(self.action, self.dummy))


class PrivateTagsElement(TagActionElement):
    """``action.on.privatetags``: the action for private attributes (all of them when no tags are given)."""

    codename: Literal["action.on.privatetags"] = "action.on.privatetags"  # type: ignore[assignment]
    tags: TagList = ()
    arguments: PrivateDummyArguments = PrivateDummyArguments()
    code_value: ClassVar[str | None] = "113111"
    code_meaning: ClassVar[str | None] = "Retain Safe Private Option"

    def rule(self) -> Rule:
        return PrivateTagsRule(self, self.selector, static_action(self.action, self.dummy))


# action.on.dates: one model per option, each with its arguments.


class ShiftArguments(Arguments):
    context: ClassVar[str] = "action.on.dates option shift"
    days: WholeNumber
    seconds: WholeNumber


class ShiftRangeArguments(Arguments):
    context: ClassVar[str] = "action.on.dates option shift_range"
    min_days: WholeNumber = 0
    max_days: WholeNumber
    min_seconds: WholeNumber = 0
    max_seconds: WholeNumber

    @field_validator("max_days", "max_seconds")
    @classmethod
    def _not_below_the_minimum(cls, value: int, info: ValidationInfo) -> int:
        unit = str(info.field_name).removeprefix("max_")
        if value < info.data.get(f"min_{unit}", 0):
            raise ValueError(f"must not be less than min_{unit}")
        return value


class ShiftByTagArguments(Arguments):
    context: ClassVar[str] = "action.on.dates option shift_by_tag"
    days_tag: TagReference | None = None
    seconds_tag: TagReference | None = None


class DateFormatArguments(Arguments):
    context: ClassVar[str] = "action.on.dates option date_format"
    remove: Literal["day", "month_day"] | None = None

    @field_validator("remove", mode="before")
    @classmethod
    def _known_part(cls, value: Any) -> Any:
        if value is not None and value not in ("day", "month_day"):
            raise ValueError(f"{value!r} is not one of day, month_day")
        return value


class DatesElement(_SelectingElement):
    """``action.on.dates`` on AS, DA, DT and TM attributes (all of them when no tags are given)."""

    codename: Literal["action.on.dates"] = "action.on.dates"
    tags: TagList = ()
    code_value: ClassVar[str | None] = "113107"
    code_meaning: ClassVar[str | None] = "Retain Longitudinal Temporal Information Modified Dates Option"
    options: ClassVar[tuple[str, ...]] = ("shift", "shift_range", "shift_by_tag", "date_format")

    option: str
    arguments: Arguments

    def rule(self) -> Rule:
        return DatesRule(self)

    # What the engine reads, whatever the option (0 or None when the option has no such argument).
    def _argument(self, name: str, default: Any) -> Any:
        return getattr(self.arguments, name, default)

    @property
    def days(self) -> int:
        return int(self._argument("days", 0))

    @property
    def seconds(self) -> int:
        return int(self._argument("seconds", 0))

    @property
    def min_days(self) -> int:
        return int(self._argument("min_days", 0))

    @property
    def max_days(self) -> int:
        return int(self._argument("max_days", 0))

    @property
    def min_seconds(self) -> int:
        return int(self._argument("min_seconds", 0))

    @property
    def max_seconds(self) -> int:
        return int(self._argument("max_seconds", 0))

    @property
    def days_tag(self) -> int | None:
        value = self._argument("days_tag", None)
        return None if value is None else int(value)

    @property
    def seconds_tag(self) -> int | None:
        value = self._argument("seconds_tag", None)
        return None if value is None else int(value)

    @property
    def remove(self) -> str | None:
        value = self._argument("remove", None)
        return None if value is None else str(value)


class ShiftDatesElement(DatesElement):
    option: Literal["shift"] = "shift"
    arguments: ShiftArguments


class ShiftRangeDatesElement(DatesElement):
    option: Literal["shift_range"] = "shift_range"
    arguments: ShiftRangeArguments


class ShiftByTagDatesElement(DatesElement):
    option: Literal["shift_by_tag"] = "shift_by_tag"
    arguments: ShiftByTagArguments = ShiftByTagArguments()


class DateFormatDatesElement(DatesElement):
    option: Literal["date_format"] = "date_format"
    arguments: DateFormatArguments = DateFormatArguments()


class ExpressionArguments(Arguments):
    context: ClassVar[str] = "expression.on.tags"
    expr: ActionExpression


class ExpressionElement(_SelectingElement):
    """``expression.on.tags``: an expression giving the action for each covered attribute."""

    codename: Literal["expression.on.tags"] = "expression.on.tags"
    arguments: ExpressionArguments

    @property
    def expression(self) -> Expression:
        return self.arguments.expr

    def rule(self) -> Rule:
        return ExpressionRule(self, self.selector, self.expression)


def _addable_vr(value: Any) -> Any:
    if value is None:
        return None
    vr = _text(value).strip().upper()
    if vr not in {v.value for v in VR_} or vr == "SQ":
        raise ValueError(f"{vr!r} is not a VR an attribute can be added with")
    return vr


AddableVR = Annotated[str, BeforeValidator(_addable_vr)]


class AddTagArguments(Arguments):
    context: ClassVar[str] = "action.add.tag"
    value: Text
    vr: AddableVR | None = None


class AddPrivateTagArguments(Arguments):
    context: ClassVar[str] = "action.add.private.tag"
    value: Text
    vr: AddableVR
    private_creator: Text = Field(alias="privateCreator")


class AddTagElement(ProfileElement):
    """``action.add.tag``: set an attribute that is absent or empty."""

    codename: Literal["action.add.tag"] = "action.add.tag"
    tags: TagList
    arguments: AddTagArguments

    @classmethod
    def missing_message(cls, key: str) -> str:
        if key == "tags":
            return f"exactly one tag (no X wildcard) is required for {cls.codename_value()}"
        return super().missing_message(key)

    @field_validator("tags")
    @classmethod
    def _exactly_one_tag(cls, value: tuple[TagPattern, ...]) -> tuple[TagPattern, ...]:
        if len(value) != 1 or not value[0].is_exact:
            raise ValueError(cls.missing_message("tags"))
        tag = value[0].value
        if cls.private and (not tag & 0x10000 or (tag & 0xFFFF) < 0x1000):
            raise ValueError(f"{format_tag(tag)} is not a private data element (odd group, element 10xx to FFxx)")
        if not cls.private and tag & 0x10000:
            raise ValueError(f"{format_tag(tag)} is private, use action.add.private.tag")
        return value

    private: ClassVar[bool] = False

    @model_validator(mode="after")
    def _known_vr(self) -> AddTagElement:
        if self.arguments.vr is None:
            try:
                vr = dictionary_VR(self.tag)
            except KeyError:
                raise field_problem(
                    "arguments.vr", f"required, {format_tag(self.tag)} is not in the DICOM dictionary"
                ) from None
            if vr not in {v.value for v in VR_} or vr == "SQ":
                raise field_problem("arguments.vr", f"required, the dictionary VR of {format_tag(self.tag)} is {vr!r}")
        return self

    @property
    def tag(self) -> int:
        return self.tags[0].value

    @property
    def vr(self) -> str:
        return self.arguments.vr or dictionary_VR(self.tag)

    @property
    def value(self) -> str:
        return self.arguments.value

    def rule(self) -> Rule:
        return AddTagRule(self)


class AddPrivateTagElement(AddTagElement):
    """``action.add.private.tag``: set a private attribute under its creator, created when missing."""

    codename: Literal["action.add.private.tag"] = "action.add.private.tag"  # type: ignore[assignment]
    arguments: AddPrivateTagArguments  # type: ignore[assignment]
    private: ClassVar[bool] = True

    @property
    def private_creator(self) -> str:
        return self.arguments.private_creator

    @property
    def creator_tag(self) -> int:
        return (self.tag & 0xFFFF0000) | ((self.tag >> 8) & 0xFF)

    def rule(self) -> Rule:
        return AddTagRule(self, self.private_creator)


class ReplaceUidElement(_SelectingElement):
    """``replace.uid``: U, X or Z on the listed UID attributes."""

    codename: Literal["replace.uid"] = "replace.uid"
    action: Literal["U", "X", "Z"]

    def rule(self) -> Rule:
        return TagRule(self, self.selector, static_action(self.action))


class CleanPixelDataElement(ProfileElement):
    """``clean.pixel.data``: blank the profile's mask in eligible images."""

    codename: Literal["clean.pixel.data"] = "clean.pixel.data"
    code_value: ClassVar[str | None] = "113101"
    code_meaning: ClassVar[str | None] = "Clean Pixel Data Option"


def _method(value: Any) -> Any:
    if value is None:
        return "GET"
    method = _text(value).upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"{method!r} is not GET or POST")
    return method


def _response_path(value: Any) -> Any:
    text = _text(value)
    return text if not text or text.startswith("/") else "/" + text


class ReplaceApiArguments(Arguments):
    context: ClassVar[str] = "action.replace.api"
    url: TemplateText
    response_path: Annotated[str, BeforeValidator(_response_path)] = Field(alias="responsePath")
    method: Annotated[Literal["GET", "POST"], BeforeValidator(_method)] = "GET"
    body: TemplateText | None = None
    auth_config: Text | None = Field(None, alias="authConfig")
    default_value: Text | None = Field(None, alias="defaultValue")

    @model_validator(mode="after")
    def _post_has_a_body(self) -> ReplaceApiArguments:
        if self.method == "POST" and self.body is None:
            raise field_problem("body", "required for a POST request")
        return self


class ReplaceApiElement(_SelectingElement):
    """``action.replace.api``: the covered attributes take values an HTTP API gives.

    The engine does not call the API itself: ``Deidentifier.for_project(..., replace_api=...)`` receives
    the function that does, called with this element and the original instance.
    """

    codename: Literal["action.replace.api"] = "action.replace.api"
    arguments: ReplaceApiArguments

    @property
    def url(self) -> Template:
        return self.arguments.url

    @property
    def method(self) -> str:
        return self.arguments.method

    @property
    def body(self) -> Template | None:
        return self.arguments.body

    @property
    def response_path(self) -> str:
        return self.arguments.response_path

    @property
    def auth_config(self) -> str | None:
        return self.arguments.auth_config

    @property
    def default_value(self) -> str | None:
        return self.arguments.default_value

    def rule(self) -> Rule:
        return ReplaceApiRule(self)


AnyDatesElement = Annotated[
    Union[ShiftDatesElement, ShiftRangeDatesElement, ShiftByTagDatesElement, DateFormatDatesElement],  # noqa: UP007
    Discriminator("option"),
]
AnyProfileElement = Annotated[
    Union[  # noqa: UP007
        BasicProfileElement,
        TagActionElement,
        PrivateTagsElement,
        AnyDatesElement,
        ExpressionElement,
        AddTagElement,
        AddPrivateTagElement,
        ReplaceUidElement,
        CleanPixelDataElement,
        ReplaceApiElement,
    ],
    Discriminator("codename"),
]
"""One element of ``profileElements``: the model of its codename."""


def _rectangle(value: Any) -> tuple[int, int, int, int]:
    if isinstance(value, list | tuple) and len(value) == 4 and all(isinstance(v, int) for v in value):
        x, y, width, height = value
    else:
        try:
            x, y, width, height = (int(part) for part in str(value).split())
        except ValueError:
            raise ValueError(f"{value!r} is not 'x y width height' in whole pixels") from None
    if x < 0 or y < 0 or width <= 0 or height <= 0:
        raise ValueError(f"x and y must be >= 0, width and height > 0 in {value!r}")
    return (x, y, width, height)


Rectangle = Annotated[
    tuple[int, int, int, int],
    PlainValidator(_rectangle),
    PlainSerializer(lambda r: " ".join(map(str, r)), return_type=str),
    WithJsonSchema({"type": "string", "description": "x y width height, in pixels"}),
]


def _station(value: Any) -> Any:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise ValueError(Mask.missing_message("stationName"))
    return str(value)


def _pixels(value: Any) -> Any:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError("must be a positive whole number of pixels")
    return value


def _rectangles(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(Mask.missing_message("rectangles"))
    return value


class Mask(ProfileModel):
    """Rectangles (x, y, width, height) to blank for one station (``*``: any), optionally one image size."""

    station_name: Annotated[str, BeforeValidator(_station)] = Field(alias="stationName")
    rectangles: Annotated[tuple[Rectangle, ...], BeforeValidator(_rectangles)]
    color: Text | None = None
    image_width: Annotated[int | None, BeforeValidator(_pixels)] = Field(None, alias="imageWidth")
    image_height: Annotated[int | None, BeforeValidator(_pixels)] = Field(None, alias="imageHeight")

    @classmethod
    def missing_message(cls, key: str) -> str:
        if key == "stationName":
            return "required (a station name, or * for any)"
        if key == "rectangles":
            return "a non-empty list of 'x y width height' is required"
        return "required"

    @model_validator(mode="after")
    def _size_given_whole(self) -> Mask:
        if (self.image_width is None) != (self.image_height is None):
            raise ValueError("imageWidth and imageHeight must be given together")
        return self


def _elements(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(Profile.missing_message("profileElements"))
    return value


def _masks(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list")
    return value


class Profile(ProfileModel):
    """A Karnak profile: metadata, elements in order, and masks."""

    name: Text = ""
    version: Text | None = None
    minimum_karnak_version: Text | None = Field(None, alias="minimumKarnakVersion")
    default_issuer_of_patient_id: Text | None = Field(None, alias="defaultIssuerOfPatientID")
    elements: Annotated[tuple[AnyProfileElement, ...], BeforeValidator(_elements)] = Field(alias="profileElements")
    masks: Annotated[tuple[Mask, ...], BeforeValidator(_masks)] = ()

    @classmethod
    def missing_message(cls, key: str) -> str:
        if key == "profileElements":
            return "a non-empty list of elements is required"
        return "required"

    @model_validator(mode="after")
    def _number_the_elements(self) -> Profile:
        for index, element in enumerate(self.elements):
            element._index = index
        return self

    def uses(self, codename: str) -> bool:
        return any(element.codename_value() == codename for element in self.elements)


def profile_json_schema() -> dict[str, Any]:
    """The JSON schema of a profile document (Karnak's keys), as the console publishes it.

    pydantic writes the nested union of ``action.on.dates`` (discriminated on ``option``) inline in the
    ``codename`` discriminator's mapping, where OpenAPI wants references: it is named ``DatesElement``.
    """
    schema = Profile.model_json_schema(by_alias=True)
    items = schema["properties"]["profileElements"]["items"]
    mapping = items["discriminator"]["mapping"]
    for tag, target in list(mapping.items()):
        if isinstance(target, dict):
            name = "DatesElement" if tag == DatesElement.codename_value() else f"{tag}-element"
            schema["$defs"][name] = target
            mapping[tag] = f"#/$defs/{name}"
            items["oneOf"] = [{"$ref": mapping[tag]} if member == target else member for member in items["oneOf"]]
    return schema


# --- Loading and problems ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileProblem:
    """One problem of a profile: where (an element, a mask or a key), the field inside it, and the line."""

    where: str  # "profileElements[2] 'Name'", "masks[0]", "profileElement", ...
    field: str  # "arguments.expr", or "" when the problem is the whole of `where`
    message: str
    line: int | None
    element: int | None = None  # the element's index when the problem is in one

    def __str__(self) -> str:
        field = f"{self.field}: " if self.field else ""
        return f"{self.where}: {field}{self.message}" + (f" (line {self.line})" if self.line else "")


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
    try:
        document = load_located_yaml(text, "profile")
        data = as_mapping(document, "profile", "expected a mapping with name, version and profileElements")
    except ConfigError as exc:
        raise ProfileError(exc.problems) from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = profile_problems(exc, document)
        raise ProfileError([str(problem) for problem in problems], located=problems) from None


def profile_problems(exc: ValidationError, document: LocatedYaml) -> list[ProfileProblem]:
    """The problems of a profile's validation, each with its element, field and line."""
    errors = exc.errors()
    # As users read a profile: unknown keys first, then each element's (and mask's) problems in order.
    groups: dict[tuple[Any, ...], int] = {}
    for error in errors:
        groups.setdefault(tuple(error["loc"])[:2], len(groups))

    def order(error: Any) -> tuple[int, int, int]:
        loc, unknown = tuple(error["loc"]), error["type"] == "extra_forbidden"
        return (0 if unknown and len(loc) == 1 else 1, groups[loc[:2]], 0 if unknown else 1)

    return [_problem(error, document) for error in sorted(errors, key=order)]


def _problem(error: Any, document: LocatedYaml) -> ProfileProblem:
    kind, raw_loc = str(error["type"]), tuple(error["loc"])
    loc = _walk(raw_loc)[0]
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    extra: FieldPath = ()
    if kind == "missing":
        parent = _walk(raw_loc[:-1])[1]
        message = parent.missing_message(str(loc[-1])) if parent else "required"
    elif kind == "extra_forbidden":
        parent = _walk(raw_loc[:-1])[1]
        message = parent.unknown_message(str(loc[-1])) if parent else "unknown key"
    elif kind == "profile_field":
        extra = tuple(str(error["ctx"]["field"]).split("."))
        message = str(error["ctx"]["message"])
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(error["ctx"]["discriminator"]).strip("'")
        extra = (discriminator,)
        message = _tag_message(discriminator, error["ctx"].get("tag") if kind == "union_tag_invalid" else None)
    elif kind in ("model_type", "model_attributes_type", "dict_type") and len(loc) == 2:
        message = "must be a mapping" + (" with name and codename" if loc[0] == "profileElements" else "")
    return _placed(loc, extra, message, document)


def _tag_message(discriminator: str, tag: Any) -> str:
    if discriminator == "option":
        available = ", ".join(DatesElement.options)
        if tag is None:
            return f"required for action.on.dates (one of {available})"
        hint = " (did you mean 'date_format'?)" if tag == "format_date" else suggestion(str(tag), DatesElement.options)
        return f"{tag!r} is not one of {available}{hint}"
    if tag is None:
        return "required"
    reason = _UNSUPPORTED.get(str(tag))
    if reason:
        return f"{tag!r} is not supported: {reason}"
    return f"unknown codename {tag!r}{suggestion(str(tag), _CODENAMES, cutoff=0.7)}"


def _placed(loc: FieldPath, extra: FieldPath, message: str, document: LocatedYaml) -> ProfileProblem:
    """Name the problem as users read it: the element (or mask) and its line, then the field inside it."""
    if len(loc) >= 2 and loc[0] in ("profileElements", "masks") and isinstance(loc[1], int):
        line = document.line(loc[:2])
        where = f"{loc[0]}[{loc[1]}]"
        element = None
        if loc[0] == "profileElements":
            element = loc[1]
            raw = document.data.get("profileElements")
            name = raw[loc[1]].get("name") if isinstance(raw, list) and isinstance(raw[loc[1]], dict) else None
            where += f" {name!r}" if isinstance(name, str) else ""
        return ProfileProblem(where, format_path((*loc[2:], *extra)), message, line, element)
    path = (*loc, *extra)
    return ProfileProblem(format_path(path) or "profile", "", message, document.line(path, key=True))


def _walk(loc: tuple[Any, ...]) -> tuple[FieldPath, type[ProfileModel] | None]:
    """The path of `loc` as the YAML reads it (union tags left out) and the model it ends in, if any."""
    path: list[str | int] = []
    current: Any = Profile
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            current = field.annotation if field else None
            path.append(part)
        elif get_origin(current) in (tuple, list) and isinstance(part, int):
            current = get_args(current)[0]
            path.append(part)
        elif get_origin(current) is Union:
            current = next(
                (m for m in get_args(current) if str(part) in _union_tags(m)), None
            )  # a tag: not in the YAML
        else:
            current = None
            path.append(part)
    current = _unwrap(current)
    model = current if isinstance(current, type) and issubclass(current, ProfileModel) else None
    return tuple(path), model


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Union:
        members = [m for m in get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _union_tags(member: Any) -> set[str]:
    member = _unwrap(member)
    if get_origin(member) is Union:
        return set().union(*(_union_tags(m) for m in get_args(member)))
    if isinstance(member, type) and issubclass(member, BaseModel):
        return {str(member.model_fields[k].default) for k in ("codename", "option") if k in member.model_fields}
    return set()


def _codenames(members: Iterable[Any]) -> tuple[str, ...]:
    names: list[str] = []
    for member in members:
        member = _unwrap(member)
        if get_origin(member) is Union:
            names.extend(n for n in _codenames(get_args(member)) if n not in names)
        elif isinstance(member, type) and issubclass(member, ProfileElement):
            names.append(member.codename_value())
    return tuple(dict.fromkeys(names))


_CODENAMES: Final = _codenames(get_args(_unwrap(AnyProfileElement)))
