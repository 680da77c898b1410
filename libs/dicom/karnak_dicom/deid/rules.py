"""Rules: what each profile element compiles to, in the form the engine's attribute walk asks.

Every element model of `karnak_dicom.deid.profile` has a ``rule()`` that builds one of these, so the engine
never asks what kind of element it holds. A rule answers ``lookup(tag, vr)`` from the profile alone (an
`Action`, a `Dynamic` whose action depends on the instance, or None when the element does not cover the
attribute); elements that add attributes act once before the walk (``add``). What a rule needs of the
instance being processed it asks the `Run` (the engine's state for one ``apply``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from karnak_dicom._internals import element_dictionary
from karnak_dicom.deid import dates
from karnak_dicom.deid.actions import (
    ASCII_VRS,
    DUMMY,
    EMPTY,
    KEEP,
    REMOVE,
    UID,
    Action,
    raw_text,
    raw_values,
    replace,
    set_text,
    text_values,
)
from karnak_dicom.deid.basic_profile import BasicProfileTable, basic_profile_table
from karnak_dicom.deid.errors import InstanceExcluded
from karnak_dicom.deid.expressions import Expression, ExpressionContext
from karnak_dicom.deid.keyed_hashes import scale_hash
from karnak_dicom.tags import TagSelector

if TYPE_CHECKING:
    from karnak_dicom.deid.profile import (
        AddPrivateTagElement,
        AddTagElement,
        DatesElement,
        ProfileElement,
        ReplaceApiElement,
    )

__all__ = [
    "AddTagRule",
    "BasicRule",
    "DatesRule",
    "Dynamic",
    "ExpressionRule",
    "PrivateTagsRule",
    "ReplaceApiRule",
    "Rule",
    "Run",
    "TagRule",
    "attribute_values",
    "static_action",
]

_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"})


class Run(Protocol):
    """What a rule reads of the instance being de-identified (the engine's `_Run`)."""

    secret: bytes
    patient_id: str
    claimed: set[int]
    shifts: dict[int, tuple[int, int]]

    def original_text(self, tag: int) -> str | None: ...

    def attribute_context(self, tag: int, vr: str, string_value: str | None) -> ExpressionContext: ...

    def api_values(self, rule: ReplaceApiRule) -> Mapping[int, str]: ...


def attribute_values(dataset: Dataset, tag: BaseTag, vr: str) -> list[str]:
    """The attribute's values as text; ASCII attributes still raw are read without decoding the element."""
    element = element_dictionary(dataset)[tag]
    if isinstance(element, RawDataElement) and vr in ASCII_VRS:
        values = raw_values(element)
        if values is not None:
            return values
    return text_values(dataset[tag].value)


_STATIC_ACTIONS: Final = {"K": KEEP, "X": REMOVE, "Z": EMPTY, "U": UID, "D": DUMMY}


def static_action(action: str, dummy: str | None = None) -> Action:
    """K, X, Z, U, or D (the given dummy, else the dummy of the VR)."""
    if action == "D" and dummy is not None:
        return replace(dummy)
    return _STATIC_ACTIONS[action]


class Dynamic:
    """A candidate whose action depends on the instance (dates, expressions, API values)."""

    def resolve(self, run: Run, dataset: Dataset, tag: BaseTag, vr: str) -> Action | None:
        raise NotImplementedError


class Rule:
    """An element ready for the walk; the base covers nothing and adds nothing."""

    adds = False  # whether ``add`` does something (the engine calls it before the walk)
    reads_nested_tags = False  # whether it asks whether a tag is present at any depth

    def __init__(self, element: ProfileElement) -> None:
        self.index = element.index
        self.element = element

    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        """What the element does to (tag, VR), as far as the profile alone decides it."""
        return None

    def add(self, run: Run, dataset: Dataset) -> None:
        """Set the attribute the element adds (elements that add one)."""


class BasicRule(Rule):
    def __init__(self, element: ProfileElement, table: BasicProfileTable | None = None) -> None:
        super().__init__(element)
        self._table = table or basic_profile_table()

    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        return self._table.action_for(tag)


class TagRule(Rule):
    """One action on the attributes of a selector (``action.on.specific.tags``, ``replace.uid``)."""

    def __init__(self, element: ProfileElement, selector: TagSelector, action: Action) -> None:
        super().__init__(element)
        self._selector = selector
        self._action = action

    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        return self._action if self._selector.matches(tag) else None


class PrivateTagsRule(TagRule):
    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        return super().lookup(tag, vr) if tag & 0x10000 else None


class DatesRule(Rule, Dynamic):
    def __init__(self, element: DatesElement) -> None:
        super().__init__(element)
        self.dates = element
        self._selector = element.selector

    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        return self if vr in dates.DATE_VRS and self._selector.matches(tag) else None

    def resolve(self, run: Run, dataset: Dataset, tag: BaseTag, vr: str) -> Action | None:
        element = self.dates
        text = "\\".join(attribute_values(dataset, tag, vr))
        if not text:
            return None  # nothing to shift: the next elements decide
        if element.option == "date_format":
            if vr not in ("DA", "DT"):
                return None
            value = dates.truncate_value(vr, text, element.remove or "day")
        else:
            days, seconds = self.shift(run)
            value = dates.shift_value(vr, text, days, seconds)
        # An unreadable date falls back to X/Z/D, which keeps it present with a dummy.
        return replace(dates.dummy_value(vr) if value is None else value)

    def shift(self, run: Run) -> tuple[int, int]:
        """(days, seconds) for this instance, computed once per instance."""
        shift = run.shifts.get(self.index)
        if shift is None:
            element = self.dates
            if element.option == "shift":
                shift = (element.days, element.seconds)
            elif element.option == "shift_range":
                shift = (
                    scale_hash(run.secret, run.patient_id, element.min_days, element.max_days),
                    scale_hash(run.secret, run.patient_id, element.min_seconds, element.max_seconds),
                )
            else:  # shift_by_tag
                shift = (_number_at(run, element.days_tag), _number_at(run, element.seconds_tag))
            run.shifts[self.index] = shift
        return shift


def _number_at(run: Run, tag: int | None) -> int:
    text = None if tag is None else run.original_text(tag)
    if text is None:
        return 0
    text = text.split("\\", 1)[0].strip()
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isdigit() and digits.isascii() else 0


class ExpressionRule(Rule, Dynamic):
    def __init__(self, element: ProfileElement, selector: TagSelector, expression: Expression) -> None:
        super().__init__(element)
        self._selector = selector
        self._evaluate_action = expression.evaluate_action  # bound once: it runs for every covered attribute
        self.reads_nested_tags = "tagIsPresent" in expression.uses

    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        return self if self._selector.matches(tag) else None

    def resolve(self, run: Run, dataset: Dataset, tag: BaseTag, vr: str) -> Action | None:
        string_value = None
        if vr not in _BINARY_VRS:
            string_value = "\\".join(attribute_values(dataset, tag, vr)) or None
        chosen = self._evaluate_action(run.attribute_context(int(tag), vr, string_value))
        if chosen is None:
            return None
        kind = chosen.kind
        if kind == "E":
            raise InstanceExcluded(f"Instance excluded by profile: {self.element.name}")
        if kind == "D":
            return replace(chosen.value)
        return _STATIC_ACTIONS[kind]


class ReplaceApiRule(Rule, Dynamic):
    def __init__(self, element: ReplaceApiElement) -> None:
        super().__init__(element)
        self.api = element
        self._selector = element.selector

    def lookup(self, tag: int, vr: str) -> Action | Dynamic | None:
        return self if self._selector.matches(tag) else None

    def resolve(self, run: Run, dataset: Dataset, tag: BaseTag, vr: str) -> Action | None:
        value = run.api_values(self).get(tag)
        return None if value is None else replace(str(value))


class AddTagRule(Rule):
    """``action.add.tag`` / ``action.add.private.tag``: set an attribute that is absent or empty."""

    adds = True

    def __init__(self, element: AddTagElement | AddPrivateTagElement, private_creator: str | None = None) -> None:
        super().__init__(element)
        self._tag = BaseTag(element.tag)
        self._vr = element.vr
        self._value = element.value
        self._creator = private_creator
        self._creator_tag = BaseTag((element.tag & 0xFFFF0000) | ((element.tag >> 8) & 0xFF))

    def add(self, run: Run, dataset: Dataset) -> None:
        elements = element_dictionary(dataset)
        tag = self._tag
        if tag in run.claimed or (tag in elements and text_values(dataset[tag].value)):
            return  # present with a value: the add does nothing and later elements decide
        if self._creator is not None:
            creator_tag = self._creator_tag
            if creator_tag in elements:
                if [v.strip() for v in text_values(dataset[creator_tag].value)] != [self._creator]:
                    return  # the block belongs to another creator: never add under it
            else:
                elements[creator_tag] = raw_text(creator_tag, "LO", self._creator)
                run.claimed.add(int(creator_tag))
        set_text(elements, tag, self._vr, self._value)
        run.claimed.add(int(tag))
