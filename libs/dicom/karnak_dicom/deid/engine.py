"""The engine: a profile applied to one instance, as Karnak applies it (DESIGN sections 7 and 7b).

For every attribute, top level first and recursing into sequences, the profile elements are tried in order
and the first that yields an action wins; no action means keep. A sequence whose action is X or Z is removed
or emptied as a whole; otherwise its items are walked, and a nested attribute is matched against the
elements up to the one that matched the sequence (that element included, as in Karnak): the first action
found wins, and when none is found the nested attribute takes the sequence's action. With U on a sequence
every leaf inside becomes the UID hash of its value; with D, a dummy of its VR.

Everything that depends only on the profile is computed once per Deidentifier: which elements can act on
a (tag, VR) is cached, so the per-attribute work is a dictionary look-up and a short loop. Attributes that
are kept are never decoded (pixel data included), and every change stores a new element object, so the
shallow snapshot of the original instance taken at the start keeps the original values for conditions,
expressions, date shifts by tag and the patient's age.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from karnak_dicom._internals import copy_element_dictionary, element_dictionary, forget_private_blocks
from karnak_dicom.attributes import attribute_text
from karnak_dicom.deid import dates
from karnak_dicom.deid.actions import (
    EMPTY,
    KEEP,
    REMOVE,
    Action,
    code_sequence_bytes,
    raw_sequence,
    raw_text,
    set_empty,
    set_text,
    set_uid_hashes,
)
from karnak_dicom.deid.errors import NoPixelMask, ProfileError
from karnak_dicom.deid.expressions import ExpressionContext
from karnak_dicom.deid.keyed_hashes import SECRET_BYTES, patient_id_from_pseudonym, scale_hash, uid_hash
from karnak_dicom.deid.profile import CleanPixelDataElement, Mask, Profile, ReplaceApiElement
from karnak_dicom.deid.rules import Dynamic, ReplaceApiRule, Rule, attribute_values
from karnak_dicom.errors import ConfigError

__all__ = ["DeidOutcome", "Deidentifier", "ReplaceApiCall"]

ReplaceApiCall = Callable[[ReplaceApiElement, Dataset], Mapping[int, str]]
"""Calls the API of an ``action.replace.api`` element for one instance.

It receives the element (URL and body templates, method, response path, auth config, default value) and the
original instance (to render the templates), and returns the replacement value for each tag it resolves;
a covered attribute whose tag is not in the result is left to the next profile elements. It is called at
most once per element and instance, when the first covered attribute is reached. What it raises propagates.
"""

# Tags the engine itself reads or writes.
_PATIENT_ID: Final = 0x00100020
_PATIENT_NAME: Final = 0x00100010
_PATIENT_BIRTH_DATE: Final = 0x00100030
_PATIENT_IDENTITY_REMOVED: Final = 0x00120062
_DEIDENTIFICATION_METHOD: Final = 0x00120063
_DEIDENTIFICATION_METHOD_CODES: Final = 0x00120064
_INSTANCE_CREATION_DATE: Final = 0x00080012
_INSTANCE_CREATION_TIME: Final = 0x00080013
_SOP_CLASS_UID: Final = 0x00080016
_SOP_INSTANCE_UID: Final = 0x00080018
_STATION_NAME: Final = 0x00081010
_ROWS: Final = 0x00280010
_COLUMNS: Final = 0x00280011
_BURNED_IN_ANNOTATION: Final = 0x00280301
_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_AGE_DATES: Final = (0x00080023, 0x00080022, 0x00181012, 0x00080021, 0x00080020)  # Content, Acquisition,
# DateOfSecondaryCapture, Series, Study: the first present gives the patient's age
_CLINICAL_TRIAL_REMOVED: Final = (0x00120042, 0x00120081, 0x00120082)  # SubjectReadingID, ethics committee

# Clean pixel data applies to ultrasound, secondary capture and VL endoscopic images (and to any image whose
# BurnedInAnnotation is YES).
_CLEANED_SOP_PREFIXES: Final = (
    "1.2.840.10008.5.1.4.1.1.6.",  # ultrasound
    "1.2.840.10008.5.1.4.1.1.3.",  # ultrasound multi-frame (retired)
    "1.2.840.10008.5.1.4.1.1.7.",  # multi-frame secondary capture
)
_CLEANED_SOP_CLASSES: Final = frozenset({"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.77.1.1"})
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"})
_NUMBER_VRS: Final = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "SV", "UV", "FL", "FD"})
_DUMMY_DATE_RANGE: Final = (365, 86400)  # Karnak's dummy dates: a shift of up to a year and a day
_PLAN_CACHE_LIMIT: Final = 50_000
_NO_LIMIT: Final = 1 << 30


@dataclass(frozen=True)
class DeidOutcome:
    """What was done to one instance, for the caller's records (no patient data in it).

    ``codes_used``: the DCM codes of the options applied (those of DeidentificationMethodCodeSequence, also
    given in tag morphing, which writes no sequence); ``mask_station``: the station name of the mask used.
    """

    codes_used: tuple[str, ...]
    pixels_cleaned: bool = False
    mask_station: str | None = None


# --- One instance -----------------------------------------------------------------------------------------


class _AttributeContext:
    """The ExpressionContext of one attribute: its own value, and the original instance."""

    __slots__ = ("_run", "string_value", "tag", "vr")

    def __init__(self, run: _Run, tag: int | None, vr: str | None, string_value: str | None) -> None:
        self._run = run
        self.tag = tag
        self.vr = vr
        self.string_value = string_value

    def get_string(self, tag: int) -> str | None:
        return self._run.original_text(tag)

    def tag_is_present(self, tag: int) -> bool:
        return tag in self._run.deep_tags()

    def patient_age(self) -> str | None:
        return self._run.patient_age()


def _snapshot(dataset: Dataset) -> Dataset:
    """A shallow copy whose element dict is its own: later replacements in ``dataset`` do not show in it."""
    original = copy.copy(dataset)
    copy_element_dictionary(dataset, original)
    return original


class _Run:
    """The state of one ``apply``: the original instance, active elements, values computed once."""

    def __init__(self, engine: Deidentifier, dataset: Dataset) -> None:
        self.engine = engine
        self.original = _snapshot(dataset)
        self.patient_id = self.original_text(_PATIENT_ID) or ""
        self.active = [
            element.condition is None or element.condition.evaluate(self.original)
            for element in engine.profile.elements
        ]
        self.secret = engine.secret
        self.claimed: set[int] = set()
        self.shifts: dict[int, tuple[int, int]] = {}
        self._api: dict[int, Mapping[int, str]] = {}
        self._deep_tags: frozenset[int] | None = None
        if engine._indexes_nested_tags:
            self.deep_tags()  # before the walk changes the sequences the snapshot shares

    def uid_hash(self, uid: str) -> str:
        return uid_hash(self.engine.secret, uid)

    def original_text(self, tag: int) -> str | None:
        """The original top-level value as text (values joined with ``\\``), None when absent or empty."""
        if tag not in element_dictionary(self.original):  # the fast answer for most tags
            return None
        return attribute_text(self.original, tag) or None

    def deep_tags(self) -> frozenset[int]:
        if self._deep_tags is None:
            found: set[int] = set()

            def collect(dataset: Dataset) -> None:
                for tag in list(element_dictionary(dataset)):
                    found.add(int(tag))
                    raw = element_dictionary(dataset)[tag]
                    if raw.VR == "SQ" or (raw.VR is None and _dictionary_vr(int(tag)) == "SQ"):
                        for item in dataset[tag].value or ():
                            collect(item)

            collect(self.original)
            self._deep_tags = frozenset(found)
        return self._deep_tags

    def dummy_date(self, vr: str, text: str) -> str:
        """Karnak's dummy for a date or time: the value moved back by up to a year and a day, by an amount
        drawn from the patient's id. A zero draw would keep the value, so it becomes the longest shift; an
        age is not moved by less than a year, so its dummy is a fixed one."""
        if vr == "AS":
            return dates.dummy_value(vr)
        shift = self.shifts.get(-1)
        if shift is None:
            secret = self.engine.secret
            shift = (
                scale_hash(secret, self.patient_id, 0, _DUMMY_DATE_RANGE[0]) or _DUMMY_DATE_RANGE[0],
                scale_hash(secret, self.patient_id, 0, _DUMMY_DATE_RANGE[1]) or _DUMMY_DATE_RANGE[1] - 1,
            )
            self.shifts[-1] = shift
        return dates.shift_value(vr, text, *shift) or dates.dummy_value(vr)

    def patient_age(self) -> str | None:
        for tag in _AGE_DATES:
            text = self.original_text(tag)
            at = None if text is None else dates.parse_da(text.split("\\", 1)[0])
            if at is not None:
                birth_text = self.original_text(_PATIENT_BIRTH_DATE)
                birth = None if birth_text is None else dates.parse_da(birth_text)
                return None if birth is None else dates.patient_age(birth, at)
        return None

    def attribute_context(self, tag: int, vr: str, string_value: str | None) -> ExpressionContext:
        return _AttributeContext(self, tag, vr, string_value)

    def api_values(self, rule: ReplaceApiRule) -> Mapping[int, str]:
        values = self._api.get(rule.index)
        if values is None:
            caller = self.engine.replace_api
            assert caller is not None  # for_project refuses a profile with this element and no caller
            values = caller(rule.api, self.original)
            self._api[rule.index] = values
        return values


_DICTIONARY_VRS: dict[int, str] = {}


def _dictionary_vr(tag: int) -> str | None:
    vr = _DICTIONARY_VRS.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
        _DICTIONARY_VRS[tag] = vr
    return vr


def _new(tag: int, vr: str, value: Any) -> DataElement:
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


# --- The engine -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deidentifier:
    """A profile ready to apply for one project (built once per destination, project and profile).

    Thread-safe: ``apply`` keeps its state per call; the shared caches only ever grow with equal values.
    """

    profile: Profile
    project_name: str
    secret: bytes = field(repr=False)
    tag_morphing: bool = False
    replace_api: ReplaceApiCall | None = field(default=None, repr=False, compare=False)
    _rules: tuple[Rule, ...] = field(init=False, repr=False, compare=False)
    _adders: tuple[Rule, ...] = field(init=False, repr=False, compare=False)
    _plans: dict[tuple[int, str], tuple[tuple[int, Action | Dynamic], ...]] = field(
        init=False, repr=False, compare=False
    )
    _conditional: frozenset[int] = field(init=False, repr=False, compare=False)
    _indexes_nested_tags: bool = field(init=False, repr=False, compare=False)
    _code_sequences: dict[tuple[tuple[tuple[str, str], ...], bool], bytes] = field(
        init=False, repr=False, compare=False
    )

    @classmethod
    def for_project(
        cls,
        profile: Profile,
        project_name: str,
        secret: bytes,
        *,
        tag_morphing: bool = False,
        replace_api: ReplaceApiCall | None = None,
    ) -> Deidentifier:
        """The engine for ``profile`` in a project; raises ProfileError when the profile needs what is missing
        (an API caller for ``action.replace.api``) and ConfigError for a secret that is not 16 bytes."""
        if len(secret) != SECRET_BYTES:
            raise ConfigError(f"project {project_name}: the secret must be {SECRET_BYTES} bytes")
        if replace_api is None:
            missing = [e for e in profile.elements if isinstance(e, ReplaceApiElement)]
            if missing:
                raise ProfileError(
                    [
                        f"{element.label}: action.replace.api needs an API caller, and none is configured "
                        f"for project {project_name}"
                        for element in missing
                    ]
                )
        return cls(profile, project_name, secret, tag_morphing, replace_api)

    def __post_init__(self) -> None:
        rules = tuple(element.rule() for element in self.profile.elements)
        nested_tags = any(rule.reads_nested_tags for rule in rules)
        object.__setattr__(self, "_rules", rules)
        object.__setattr__(self, "_adders", tuple(rule for rule in rules if rule.adds))
        object.__setattr__(self, "_plans", {})
        object.__setattr__(
            self, "_conditional", frozenset(i for i, e in enumerate(self.profile.elements) if e.condition)
        )
        object.__setattr__(self, "_indexes_nested_tags", nested_tags)
        object.__setattr__(self, "_code_sequences", {})

    # --- public ---

    def apply(self, dataset: Dataset, pseudonym: str | None) -> DeidOutcome:
        """De-identify (or tag-morph) ``dataset`` in place; the caller passes a copy it owns.

        ``pseudonym`` is the patient's pseudonym, None for tag morphing. Raises InstanceExcluded (and its
        NoPixelMask) when the profile refuses the instance; the dataset is then partly changed.
        """
        if pseudonym is None and not self.tag_morphing:
            raise ValueError("de-identification needs the patient's pseudonym")
        run = _Run(self, dataset)
        self._add_tags(run, dataset)
        self._walk(run, dataset, _NO_LIMIT, None, root=True)
        cleaned, station = self._clean_pixels(run, dataset)
        codes = self._codes(run, cleaned)
        if not self.tag_morphing:
            assert pseudonym is not None
            self._patient_module(dataset, pseudonym, codes)
        self._align_file_meta(dataset)
        return DeidOutcome(tuple(code for code, _ in codes), cleaned, station)

    # --- the attribute walk ---

    def _plan(self, tag: int, vr: str) -> tuple[tuple[int, Action | Dynamic], ...]:
        plan = self._plans.get((tag, vr))
        if plan is None:
            candidates: list[tuple[int, Action | Dynamic]] = []
            for rule in self._rules:
                found = rule.lookup(tag, vr)
                if found is not None:
                    candidates.append((rule.index, found))
                    if isinstance(found, Action) and rule.index not in self._conditional:
                        break  # this element always answers: the later ones are never asked
            plan = tuple(candidates)
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            self._plans[(tag, vr)] = plan
        return plan

    def _resolve(
        self,
        run: _Run,
        dataset: Dataset,
        tag: BaseTag,
        plan: tuple[tuple[int, Action | Dynamic], ...],
        vr: str,
        limit: int,
        limit_action: Action | None,
    ) -> tuple[Action | None, int]:
        active = run.active
        for index, candidate in plan:
            if index > limit:
                break
            if not active[index]:
                continue
            if isinstance(candidate, Action):
                return candidate, index
            action = candidate.resolve(run, dataset, tag, vr)
            if action is not None:
                return action, index
        return limit_action, limit

    def _walk(self, run: _Run, dataset: Dataset, limit: int, limit_action: Action | None, *, root: bool) -> None:
        elements = element_dictionary(dataset)
        plans = self._plans
        kept_private: set[int] = set()
        removed_creators: dict[int, DataElement | RawDataElement] = {}
        for tag in sorted(elements, key=int):
            number = int(tag)
            if root and number in run.claimed:
                continue
            element = elements[tag]
            if not number & 0xFFFF:
                del elements[tag]  # group lengths are retired and would be wrong after the changes
                continue
            vr = element.VR
            if vr is None or vr == "UN":
                vr = _dictionary_vr(number) or dataset[tag].VR
            plan = plans.get((number, vr)) or self._plan(number, vr)
            if plan:
                action, index = self._resolve(run, dataset, tag, plan, vr, limit, limit_action)
            else:
                action, index = limit_action, limit
            private_data = number & 0x10000 and number & 0xFF00
            if vr == "SQ" and action is not REMOVE and action is not EMPTY:
                if private_data:
                    kept_private.add(number)
                for item in dataset[tag].value or ():
                    self._walk(run, item, index, action, root=False)
            elif action is None or action is KEEP:
                if private_data:
                    kept_private.add(number)
            elif action is REMOVE:
                if number & 0x10000:
                    if 0x10 <= number & 0xFFFF <= 0xFF:
                        removed_creators[number] = element
                    forget_private_blocks(dataset)
                del elements[tag]
            else:
                if private_data:
                    kept_private.add(number)
                self._execute(run, dataset, tag, vr, action)
        # A private attribute that stays keeps its private creator, without which it cannot be read.
        for number in kept_private:
            creator = (number & 0xFFFF0000) | ((number >> 8) & 0xFF)
            stashed = removed_creators.get(creator)
            if stashed is not None:
                elements[stashed.tag] = stashed

    def _execute(self, run: _Run, dataset: Dataset, tag: BaseTag, vr: str, action: Action) -> None:
        elements = element_dictionary(dataset)
        kind = action.kind
        if " or " in vr:  # an ambiguous dictionary VR (US or SS...): the decoded element knows
            vr = dataset[tag].VR
        if kind == "Z":
            set_empty(elements, tag, vr)
        elif kind == "R":
            set_text(elements, tag, vr, action.value or "")
        elif kind == "U":
            set_uid_hashes(elements, tag, attribute_values(dataset, tag, vr), run.uid_hash)
        elif vr == "PN":  # D: a dummy of the VR
            set_text(elements, tag, vr, "UNKNOWN")
        elif vr in _NUMBER_VRS:
            set_text(elements, tag, vr, "0")
        elif vr == "UI":
            set_uid_hashes(elements, tag, attribute_values(dataset, tag, vr), run.uid_hash)
        elif vr in dates.DATE_VRS:
            text = "\\".join(attribute_values(dataset, tag, vr))
            if text:
                set_text(elements, tag, vr, run.dummy_date(vr, text))
        else:
            set_empty(elements, tag, vr)

    # --- added attributes ---

    def _add_tags(self, run: _Run, dataset: Dataset) -> None:
        for rule in self._adders:
            if run.active[rule.index]:
                rule.add(run, dataset)

    # --- clean pixel data ---

    def _clean_pixels(self, run: _Run, dataset: Dataset) -> tuple[bool, str | None]:
        element = next(
            (e for i, e in enumerate(self.profile.elements) if isinstance(e, CleanPixelDataElement) and run.active[i]),
            None,
        )
        if element is None or not any(tag in element_dictionary(dataset) for tag in _PIXEL_TAGS):
            return False, None
        sop_class = (run.original_text(_SOP_CLASS_UID) or "").strip("\x00 ")
        burned_in = {
            (run.original_text(_BURNED_IN_ANNOTATION) or "").strip().upper(),
            (
                "\\".join(attribute_values(dataset, BaseTag(_BURNED_IN_ANNOTATION), "CS")).strip().upper()
                if _BURNED_IN_ANNOTATION in element_dictionary(dataset)
                else ""
            ),
        }
        eligible = (
            sop_class in _CLEANED_SOP_CLASSES
            or (sop_class + ".").startswith(_CLEANED_SOP_PREFIXES)
            or "YES" in burned_in
        )
        if not eligible:
            return False, None
        station = (run.original_text(_STATION_NAME) or "").strip()
        mask = _select_mask(self.profile.masks, station, run.original_text(_COLUMNS), run.original_text(_ROWS))
        if mask is None:
            raise NoPixelMask(
                f"No mask in profile {self.profile.name!r} for station {station!r} ({element.name}): "
                f"an image of SOP class {sop_class} that may carry burned-in annotations is never sent uncleaned"
            )
        # numpy and the codecs are loaded only when pixels are cleaned
        pixels = importlib.import_module("karnak_dicom.pixels")
        pixels.clean_pixel_data(dataset, list(mask.rectangles))
        return True, mask.station_name

    # --- patient module, SOP common, clinical trial, method codes ---

    def _codes(self, run: _Run, cleaned: bool) -> list[tuple[str, str]]:
        codes: dict[str, str] = {}
        for index, element in enumerate(self.profile.elements):
            if element.code_value is None or not run.active[index]:
                continue
            if isinstance(element, CleanPixelDataElement) and not cleaned:
                continue
            codes.setdefault(element.code_value, element.code_meaning or "")
        return list(codes.items())

    def _patient_module(self, dataset: Dataset, pseudonym: str, codes: list[tuple[str, str]]) -> None:
        elements = element_dictionary(dataset)
        now = datetime.now()
        values = (
            (_PATIENT_ID, "LO", patient_id_from_pseudonym(self.secret, pseudonym)),
            (_PATIENT_NAME, "PN", pseudonym),
            (_PATIENT_IDENTITY_REMOVED, "CS", "YES"),
            (_INSTANCE_CREATION_DATE, "DA", dates.format_da(now.date())),
            (_INSTANCE_CREATION_TIME, "TM", dates.format_tm(now.time())),
            (0x00120010, "LO", self.project_name),  # ClinicalTrialSponsorName
            (0x00120020, "LO", self.profile.name),  # ClinicalTrialProtocolID
            (0x00120021, "LO", ""),  # ClinicalTrialProtocolName
            (0x00120030, "LO", ""),  # ClinicalTrialSiteID
            (0x00120031, "LO", ""),  # ClinicalTrialSiteName
            (0x00120040, "LO", pseudonym),  # ClinicalTrialSubjectID
        )
        for tag, vr, value in values:
            elements[BaseTag(tag)] = raw_text(tag, vr, value)
        for tag in (_DEIDENTIFICATION_METHOD, *_CLINICAL_TRIAL_REMOVED):
            elements.pop(BaseTag(tag), None)
        elements[BaseTag(_DEIDENTIFICATION_METHOD_CODES)] = self._code_sequence(dataset, tuple(codes))

    def _code_sequence(self, dataset: Dataset, codes: tuple[tuple[str, str], ...]) -> DataElement | RawDataElement:
        implicit, little = dataset.original_encoding
        if little is False:  # a big endian original: let pydicom encode the items
            items = []
            for code_value, code_meaning in codes:
                item = Dataset()
                item.CodeValue = code_value
                item.CodingSchemeDesignator = "DCM"
                item.CodeMeaning = code_meaning
                items.append(item)
            return _new(_DEIDENTIFICATION_METHOD_CODES, "SQ", Sequence(items))
        key = (codes, bool(implicit))
        data = self._code_sequences.get(key)
        if data is None:
            data = code_sequence_bytes(codes, implicit=bool(implicit))
            self._code_sequences[key] = data
        return raw_sequence(_DEIDENTIFICATION_METHOD_CODES, data, implicit=bool(implicit))

    @staticmethod
    def _align_file_meta(dataset: Dataset) -> None:
        """The file meta names the instance too: it follows a replaced SOP Instance UID."""
        file_meta = getattr(dataset, "file_meta", None)
        if file_meta is None:
            return
        for meta_tag, tag in ((0x00020003, _SOP_INSTANCE_UID), (0x00020002, _SOP_CLASS_UID)):
            meta_key, key = BaseTag(meta_tag), BaseTag(tag)
            if meta_key not in element_dictionary(file_meta) or key not in element_dictionary(dataset):
                continue
            value = "\\".join(attribute_values(dataset, key, "UI"))
            if value and "\\".join(attribute_values(file_meta, meta_key, "UI")) != value:
                set_text(element_dictionary(file_meta), meta_key, "UI", value)


def _select_mask(masks: tuple[Mask, ...], station: str, columns: str | None, rows: str | None) -> Mask | None:
    """The mask for the station and image size, else for the station, else the default ``*`` (Karnak's order)."""
    try:
        width = int(columns) if columns else None
        height = int(rows) if rows else None
    except ValueError:
        width = height = None
    for name in (station, "*") if station != "*" else ("*",):
        for mask in masks:
            if mask.station_name == name and mask.image_width is not None:
                if mask.image_width == width and mask.image_height == height:
                    return mask
        for mask in masks:
            if mask.station_name == name and mask.image_width is None:
                return mask
    return None
