"""The engine on real pydicom datasets: element kinds, first match, sequences (DESIGN 7b), added tags, UIDs,
the patient and clinical trial modules, tag morphing, API values and exclusion."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime
from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from karnak_dicom.deid import (
    Deidentifier,
    InstanceExcluded,
    ReplaceApiElement,
    load_profile,
    patient_id_from_pseudonym,
    uid_hash,
)

SECRET = bytes.fromhex("c4ca4238a0b923820dcc509a6f75849b")
OTHER_SECRET = bytes.fromhex("c81e728d9d4c2f636f067f89cc14862c")
PSEUDONYM = "PSN-0001"
BASIC = '  - name: "Basic"\n    codename: "basic.dicom.profile"\n'
CT = "1.2.840.10008.5.1.4.1.1.2"


def _uid(uid: str, secret: bytes = SECRET) -> str:
    digest = bytearray(hmac.new(secret, uid.encode("ascii"), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return "2.25." + str(int.from_bytes(digest, "big"))


def _engine(elements: str, *, name: str = "Test profile", tag_morphing: bool = False, **kwargs: Any) -> Deidentifier:
    profile = load_profile(f'name: "{name}"\nversion: "1"\nprofileElements:\n{elements}')
    return Deidentifier.for_project(profile, "study-x", SECRET, tag_morphing=tag_morphing, **kwargs)


def _instance(**attributes: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.0"
    ds.PatientName = "Doe^John"
    ds.PatientID = "PID-42"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyDate = "20240310"
    ds.StudyTime = "101010"
    ds.StudyDescription = "RESEARCH CT"
    ds.Modality = "CT"
    ds.InstitutionName = "Hospital"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _read_back(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


def _tags_element(action: str, tags: str, extra: str = "") -> str:
    return (
        f'  - name: "Tags {action}"\n    codename: "action.on.specific.tags"\n    action: "{action}"\n'
        f"    tags: [{tags}]\n{extra}"
    )


# --- action.on.specific.tags ------------------------------------------------------------------------------


def test_specific_tags_keep_remove_empty_hash_and_replace() -> None:
    engine = _engine(
        _tags_element("K", '"0008,1030"')
        + _tags_element("X", '"0008,0080"')
        + _tags_element("Z", '"0010,0040"')
        + _tags_element("U", '"0020,000D"')
        + _tags_element("D", '"0008,0060"', '    arguments: {dummy: "OT"}\n')
        + _tags_element("D", '"0010,0030", "(0010,0010)"')
    )
    ds = _instance()

    engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)

    assert result.StudyDescription == "RESEARCH CT"
    assert "InstitutionName" not in result
    assert result.PatientSex == ""
    assert result.StudyInstanceUID == _uid("1.2.826.0.1.3680043.10.1")
    assert result.Modality == "OT"
    assert datetime.strptime(result.PatientBirthDate, "%Y%m%d").date() < date(1970, 1, 1)  # D: a dummy date
    assert result.PatientName == PSEUDONYM  # the patient module sets it after the profile


def test_a_dummy_of_each_vr_when_d_has_no_value() -> None:
    engine = _engine(_tags_element("D", '"0008,0090", "0018,0050", "0020,0013", "0028,0010", "0008,1040", "0008,0014"'))
    ds = _instance(
        ReferringPhysicianName="House^G",
        SliceThickness="1.5",
        InstanceNumber=7,
        Rows=512,
        InstitutionalDepartmentName="Radiology",
        InstanceCreatorUID="1.2.3.4",
    )
    engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)

    assert result.ReferringPhysicianName == "UNKNOWN"
    assert (result.SliceThickness, result.InstanceNumber, result.Rows) == (0, 0, 0)
    assert result.InstitutionalDepartmentName == ""
    assert result.InstanceCreatorUID == _uid("1.2.3.4")


def test_excluded_tags_win_over_tags_and_patterns_match_any_digit_where_x_stands() -> None:
    engine = _engine(
        _tags_element("X", '"(0010,XXXX)", "0008,00xX"', '    excludedTags: ["0010,0040", "(0008,006X)"]\n')
    )
    ds = _instance()
    engine.apply(ds, PSEUDONYM)

    assert "PatientBirthDate" not in ds and "StudyDate" not in ds and "StudyTime" not in ds
    assert ds.PatientSex == "M" and ds.Modality == "CT"
    assert ds.StudyDescription == "RESEARCH CT"  # (0008,1030) is outside (0008,00XX)


def test_the_first_element_that_acts_wins() -> None:
    engine = _engine(_tags_element("K", '"0008,0080"') + _tags_element("X", '"(0008,00XX)"') + BASIC)
    ds = _instance()
    engine.apply(ds, PSEUDONYM)

    assert ds.InstitutionName == "Hospital"  # kept by the first element, not removed by the two others
    assert "StudyDate" not in ds  # removed by the second, not emptied by the basic profile


def test_an_element_applies_only_when_its_condition_holds_on_the_original_instance() -> None:
    keep_if_research = _tags_element(
        "K", '"0008,1030"', "    condition: \"tagValueContains(#Tag.StudyDescription, 'RESEARCH')\"\n"
    )
    engine = _engine(_tags_element("X", '"0008,1030"', '    condition: "tagIsPresent(#Tag.Modality)"\n'))
    ds = _instance()
    engine.apply(ds, PSEUDONYM)
    assert "StudyDescription" not in ds

    engine = _engine(keep_if_research + BASIC)
    research, clinical = _instance(), _instance(StudyDescription="CLINICAL CT")
    engine.apply(research, PSEUDONYM)
    engine.apply(clinical, PSEUDONYM)
    assert research.StudyDescription == "RESEARCH CT"
    assert "StudyDescription" not in clinical  # the basic profile removes it


# --- private tags -----------------------------------------------------------------------------------------


def _with_private(ds: Dataset) -> Dataset:
    ds.private_block(0x0009, "ACME 1", create=True).add_new(0x01, "LO", "acme one")
    ds.private_block(0x0009, "ACME 2", create=True).add_new(0x01, "LO", "acme two")
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    block.add_new(0x00, "DS", "1.5")
    block.add_new(0x09, "DS", "2.5")
    block.add_new(0x10, "LO", "other")
    return ds


def test_private_tags_without_tags_apply_to_every_private_attribute_and_only_those() -> None:
    engine = _engine('  - name: "P"\n    codename: "action.on.privatetags"\n    action: "X"\n')
    ds = _with_private(_instance())
    engine.apply(ds, PSEUDONYM)

    assert [e.tag for e in ds if e.tag.is_private] == []
    assert ds.PatientSex == "M"


def test_kept_private_attributes_keep_their_creator_and_the_rest_of_the_group_goes() -> None:
    text = (SAMPLES_DIR / "docs-tags-example2-conditional-private.yml").read_text()
    engine = Deidentifier.for_project(load_profile(text), "study-x", SECRET)
    ds = _with_private(_instance())
    engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)

    private = {e.tag: e.value for e in result if e.tag.is_private}
    assert private == {0x70530010: "Philips PET Private Group", 0x70531000: 1.5, 0x70531009: 2.5}


def test_private_tags_with_excluded_tags() -> None:
    engine = _engine(
        '  - name: "P"\n    codename: "action.on.privatetags"\n    action: "X"\n    excludedTags: ["(0009,XXXX)"]\n'
    )
    ds = _with_private(_instance())
    engine.apply(ds, PSEUDONYM)
    assert sorted(e.tag >> 16 for e in ds if e.tag.is_private) == [0x0009] * 4


# --- sequences (DESIGN 7b) --------------------------------------------------------------------------------


def _item(**attributes: Any) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def test_x_or_z_on_a_sequence_applies_to_the_whole_sequence() -> None:
    engine = _engine(_tags_element("X", '"0008,1110"') + _tags_element("Z", '"0008,1032"'))
    ds = _instance(
        ReferencedStudySequence=[_item(ReferencedSOPInstanceUID="1.2.3")],
        ProcedureCodeSequence=[_item(CodeValue="X1"), _item(CodeValue="X2")],
    )
    engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)

    assert "ReferencedStudySequence" not in result
    assert len(result.ProcedureCodeSequence) == 0


def test_a_kept_sequence_keeps_what_later_elements_would_change_but_not_what_earlier_ones_do() -> None:
    engine = _engine(_tags_element("X", '"0010,0020"') + _tags_element("K", '"0040,0275"') + BASIC)
    ds = _instance(
        RequestAttributesSequence=[_item(PatientName="Nested^Name", PatientID="NESTED-ID", RequestedProcedureID="R1")]
    )
    engine.apply(ds, PSEUDONYM)
    item = ds.RequestAttributesSequence[0]

    assert item.PatientName == "Nested^Name"  # the basic profile comes after the K: never consulted
    assert "PatientID" not in item  # the element before the K wins
    assert item.RequestedProcedureID == "R1"


def test_inside_a_hashed_sequence_every_leaf_becomes_a_uid_hash_unless_an_earlier_element_acts() -> None:
    engine = _engine(_tags_element("X", '"0008,0100"') + _tags_element("U", '"0008,1140"'))
    ds = _instance(
        ReferencedImageSequence=[
            _item(
                ReferencedSOPClassUID=CT,
                ReferencedSOPInstanceUID="1.2.3.4",
                CodeValue="REMOVED",
                CodeMeaning="hashed",
                PurposeOfReferenceCodeSequence=[_item(CodeMeaning="deeper")],
            )
        ]
    )
    engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)
    item = result.ReferencedImageSequence[0]

    assert item.ReferencedSOPInstanceUID == _uid("1.2.3.4")
    assert item.ReferencedSOPClassUID == _uid(CT)
    assert item["CodeMeaning"].VR == "UI" and item.CodeMeaning == _uid("hashed")
    assert item.PurposeOfReferenceCodeSequence[0].CodeMeaning == _uid("deeper")
    assert "CodeValue" not in item


def test_a_sequence_without_action_has_its_items_walked_with_every_element() -> None:
    engine = _engine(BASIC)
    ds = _instance(
        ReferencedSeriesSequence=[
            _item(SeriesInstanceUID="1.2.826.0.1.3680043.10.1.0", PatientName="Nested^Name", Modality="CT")
        ]
    )
    engine.apply(ds, PSEUDONYM)
    item = ds.ReferencedSeriesSequence[0]

    assert item.SeriesInstanceUID == ds.SeriesInstanceUID == _uid("1.2.826.0.1.3680043.10.1.0")
    assert item.PatientName == ""
    assert item.Modality == "CT"


# --- UIDs -------------------------------------------------------------------------------------------------


def test_the_series_of_a_study_keep_one_study_uid_and_references_follow_the_replaced_uids() -> None:
    engine = _engine(BASIC)
    first = _instance(SeriesInstanceUID="1.2.826.0.1.3680043.10.1.1", SOPInstanceUID="1.2.826.0.1.3680043.10.1.1.1")
    second = _instance(
        SeriesInstanceUID="1.2.826.0.1.3680043.10.1.2",
        SOPInstanceUID="1.2.826.0.1.3680043.10.1.2.1",
        SourceImageSequence=[_item(ReferencedSOPClassUID=CT, ReferencedSOPInstanceUID="1.2.826.0.1.3680043.10.1.1.1")],
    )
    engine.apply(first, PSEUDONYM)
    engine.apply(second, PSEUDONYM)

    assert first.StudyInstanceUID == second.StudyInstanceUID == _uid("1.2.826.0.1.3680043.10.1")
    assert first.SeriesInstanceUID != second.SeriesInstanceUID
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID


def test_replaced_uids_are_stable_across_engines_and_differ_between_secrets() -> None:
    ds1, ds2, ds3 = _instance(), _instance(), _instance()
    _engine(BASIC).apply(ds1, PSEUDONYM)
    _engine(BASIC).apply(ds2, PSEUDONYM)
    profile = load_profile(f"name: x\nprofileElements:\n{BASIC}")
    Deidentifier.for_project(profile, "study-x", OTHER_SECRET).apply(ds3, PSEUDONYM)

    assert ds1.SOPInstanceUID == ds2.SOPInstanceUID == uid_hash(SECRET, "1.2.826.0.1.3680043.10.1.1")
    assert ds3.SOPInstanceUID == _uid("1.2.826.0.1.3680043.10.1.1", OTHER_SECRET) != ds1.SOPInstanceUID


def test_each_value_of_a_multi_valued_uid_is_hashed() -> None:
    engine = _engine(_tags_element("U", '"0008,1150"'))
    ds = _instance()
    ds.ReferencedSOPClassUID = ["1.2.3", "1.2.4"]
    engine.apply(ds, PSEUDONYM)
    assert list(_read_back(ds).ReferencedSOPClassUID) == [_uid("1.2.3"), _uid("1.2.4")]


def test_replace_uid_elements_hash_remove_or_empty_the_listed_uids() -> None:
    engine = _engine(
        '  - name: "U"\n    codename: "replace.uid"\n    action: "U"\n    tags: ["0020,000E"]\n'
        '  - name: "Z"\n    codename: "replace.uid"\n    action: "Z"\n    tags: ["0020,000D"]\n'
    )
    ds = _instance()
    engine.apply(ds, PSEUDONYM)
    assert ds.SeriesInstanceUID == _uid("1.2.826.0.1.3680043.10.1.0") and ds.StudyInstanceUID == ""


# --- added attributes -------------------------------------------------------------------------------------


def _add(tag: str, value: str, extra: str = "") -> str:
    return (
        f'  - name: "Add {tag}"\n    codename: "action.add.tag"\n    arguments: {{value: "{value}"{extra}}}\n'
        f'    tags: ["{tag}"]\n'
    )


def test_an_added_attribute_is_set_when_absent_or_empty_and_not_revisited() -> None:
    engine = _engine(_add("(0028,0301)", "YES") + _add("(0010,1040)", "Nowhere") + _add("(0008,0080)", "X") + BASIC)
    ds = _instance(PatientAddress="")
    engine.apply(ds, PSEUDONYM)

    assert ds["BurnedInAnnotation"].VR == "CS" and ds.BurnedInAnnotation == "YES"  # VR from the dictionary
    assert ds.PatientAddress == "Nowhere"  # was empty; the basic profile would have removed it
    assert ds.InstitutionName == ""  # present with a value: the add did nothing, the basic profile gave a dummy


def test_an_added_attribute_takes_the_vr_given_and_respects_its_condition() -> None:
    engine = _engine(
        _add("(0028,0301)", "YES", ', vr: "LO"').replace(
            "    tags:", "    condition: \"tagValueIsPresent(#Tag.Modality, 'US')\"\n    tags:"
        )
        + _add("(0028,0302)", "NO", ', vr: "CS"')
    )
    ds = _instance()
    engine.apply(ds, PSEUDONYM)
    assert "BurnedInAnnotation" not in ds
    assert ds.RecognizableVisualFeatures == "NO"


def _add_private(tag: str, creator: str) -> str:
    return (
        f'  - name: "Add private"\n    codename: "action.add.private.tag"\n'
        f'    arguments: {{value: "secret-free", vr: "LO", privateCreator: "{creator}"}}\n    tags: ["{tag}"]\n'
    )


def test_an_added_private_attribute_creates_its_creator_and_survives_the_basic_profile() -> None:
    engine = _engine(_add_private("(0019,1001)", "KARNAK GATEWAY") + BASIC)
    ds = _instance()
    engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)

    assert result[0x00190010].value == "KARNAK GATEWAY"
    assert result[0x00191001].value == "secret-free"


def test_a_private_attribute_is_never_added_under_another_creator() -> None:
    engine = _engine(_add_private("(0009,1001)", "KARNAK GATEWAY"))
    ds = _with_private(_instance())  # (0009,0010) is ACME 1
    engine.apply(ds, PSEUDONYM)
    assert ds[0x00091001].value == "acme one"

    same_creator = _instance()
    same_creator.private_block(0x0009, "KARNAK GATEWAY", create=True).add_new(0x05, "LO", "x")
    engine.apply(same_creator, PSEUDONYM)
    assert same_creator[0x00091001].value == "secret-free"


# --- expressions, exclusion -------------------------------------------------------------------------------


def _expression(expr: str, tags: str = '"(0008,1030)"', extra: str = "") -> str:
    return (
        f'  - name: "Expr"\n    codename: "expression.on.tags"\n    arguments:\n      expr: "{expr}"\n'
        f"    tags: [{tags}]\n{extra}"
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("Keep()", "RESEARCH CT"),
        ("Remove()", None),
        ("ReplaceNull()", ""),
        ("Replace('DONE')", "DONE"),
        ("UID()", None),
        ("stringValue.contains('SEARCH') ? Replace('R') : Remove()", "R"),
        ("stringValue == 'OTHER' ? Keep() : null", None),  # null: the basic profile removes it
        ("Replace(getString(#Tag.InstitutionName) + '-' + getString(#Tag.Modality))", "Hospital-CT"),
        ("tagIsPresent(#Tag.CodeMeaning) ? Replace('nested') : null", "nested"),
        ("tag == #Tag.StudyDescription and vr == #VR.LO ? Replace(stringValue.toLowerCase()) : null", "research ct"),
    ],
)
def test_expressions_choose_the_action(expr: str, expected: str | None) -> None:
    engine = _engine(_expression(expr) + BASIC)
    ds = _instance(ProcedureCodeSequence=[_item(CodeMeaning="deep")])
    engine.apply(ds, PSEUDONYM)

    if expr == "UID()":
        assert ds.StudyDescription == _uid("RESEARCH CT")
    elif expected is None:
        assert "StudyDescription" not in ds
    else:
        assert ds.StudyDescription == expected


def test_get_string_reads_the_original_value_even_after_an_element_changed_it() -> None:
    engine = _engine(_expression("Replace(getString(#Tag.StudyDate))", '"0008,1030"') + BASIC)
    ds = _instance()
    engine.apply(ds, PSEUDONYM)  # StudyDate (0008,0020) is emptied before (0008,1030) is reached
    assert ds.StudyDate == "" and ds.StudyDescription == "20240310"


def test_compute_patient_age_uses_the_first_date_present() -> None:
    engine = _engine(_expression("ComputePatientAge()", '"0010,1010"'))
    cases = [
        ({"ContentDate": "20240310", "StudyDate": "20000101"}, "54Y"),
        ({"AcquisitionDate": "19710301"}, "014M"),
        ({"SeriesDate": "19700120"}, "019D"),
    ]
    for attributes, expected in cases:
        ds = _instance(PatientAge="000Y", **attributes)
        if "StudyDate" not in attributes and "ContentDate" not in attributes:
            del ds.StudyDate
        engine.apply(ds, PSEUDONYM)
        assert ds.PatientAge == expected.rjust(4, "0")


def test_exclude_instance_rejects_with_the_element_name() -> None:
    engine = _engine(
        _expression("stringValue.startsWith('RESEARCH') ? null : ExcludeInstance()", extra="").replace(
            '"Expr"', '"Only research studies"'
        )
    )
    engine.apply(_instance(), PSEUDONYM)
    with pytest.raises(InstanceExcluded) as caught:
        engine.apply(_instance(StudyDescription="CLINICAL"), PSEUDONYM)
    assert caught.value.reason == "Instance excluded by profile: Only research studies"


def test_the_expression_sample_keeps_everything_when_the_patient_age_is_absent() -> None:
    engine = Deidentifier.for_project(load_profile(SAMPLES_DIR / "profileExpression.yml"), "study-x", SECRET)
    without_age, with_age = _instance(), _instance(PatientAge="054Y")
    engine.apply(without_age, PSEUDONYM)
    engine.apply(with_age, PSEUDONYM)

    assert without_age.InstitutionName == "Hospital" and without_age.StudyDate == "20240310"
    assert with_age.InstitutionName == "" and with_age.StudyDate == ""


# --- action.replace.api -----------------------------------------------------------------------------------


def test_api_values_replace_the_covered_attributes_with_one_call_per_instance() -> None:
    calls: list[tuple[ReplaceApiElement, str]] = []

    def caller(element: ReplaceApiElement, original: Dataset) -> dict[int, str]:
        calls.append((element, element.url.render(_TemplateContext(original))))
        return {0x00100020: "API-ID", 0x00080080: "API-INSTITUTION"}

    engine = _engine(
        '  - name: "API"\n    codename: "action.replace.api"\n'
        '    arguments: {url: "https://ids.example/{{getString(#Tag.PatientID)}}", responsePath: "/id"}\n'
        '    tags: ["0008,0080", "0008,1030", "0010,0020"]\n' + BASIC,
        tag_morphing=True,
        replace_api=caller,
    )
    ds = _instance()
    engine.apply(ds, None)

    assert [url for _, url in calls] == ["https://ids.example/PID-42"]
    assert ds.PatientID == "API-ID" and ds.InstitutionName == "API-INSTITUTION"
    assert "StudyDescription" not in ds  # no value for it: the basic profile decides


class _TemplateContext:
    """What an API caller would build to render templates on the original instance."""

    string_value = None
    tag = None
    vr = None

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset

    def get_string(self, tag: int) -> str | None:
        return str(self._dataset[tag].value) if tag in self._dataset else None

    def tag_is_present(self, tag: int) -> bool:
        return tag in self._dataset

    def patient_age(self) -> str | None:
        return None


# --- patient module, tag morphing -------------------------------------------------------------------------


def test_de_identification_sets_the_patient_sop_common_and_clinical_trial_modules() -> None:
    engine = _engine(
        BASIC
        + '  - name: "Dates"\n    codename: "action.on.dates"\n    option: "shift"\n'
        + "    arguments: {days: 1, seconds: 0}\n",
        name="Research profile",
    )
    ds = _instance(
        DeidentificationMethod="manual",
        ClinicalTrialSubjectReadingID="R1",
        ClinicalTrialProtocolEthicsCommitteeName="Ethics",
        InstanceCreationDate="20000101",
    )
    before = datetime.now()
    outcome = engine.apply(ds, PSEUDONYM)
    result = _read_back(ds)

    assert result.PatientName == PSEUDONYM and result.PatientID == patient_id_from_pseudonym(SECRET, PSEUDONYM)
    assert result.PatientIdentityRemoved == "YES" and "DeidentificationMethod" not in result
    assert [(i.CodeValue, i.CodingSchemeDesignator) for i in result.DeidentificationMethodCodeSequence] == [
        ("113100", "DCM"),
        ("113107", "DCM"),
    ]
    assert outcome.codes_used == ("113100", "113107")
    assert result.InstanceCreationDate in (before.strftime("%Y%m%d"), datetime.now().strftime("%Y%m%d"))
    assert len(result.InstanceCreationTime) == 13
    assert (result.ClinicalTrialSponsorName, result.ClinicalTrialProtocolID, result.ClinicalTrialSubjectID) == (
        "study-x",
        "Research profile",
        PSEUDONYM,
    )
    assert result.ClinicalTrialProtocolName == result.ClinicalTrialSiteID == result.ClinicalTrialSiteName == ""
    assert "ClinicalTrialSubjectReadingID" not in result
    assert "ClinicalTrialProtocolEthicsCommitteeName" not in result


def test_the_method_codes_list_each_option_once_in_profile_order() -> None:
    engine = _engine(
        '  - name: "P"\n    codename: "action.on.privatetags"\n    action: "X"\n'
        '  - name: "D"\n    codename: "action.on.dates"\n    option: "shift"\n    arguments: {days: 1, seconds: 1}\n'
        '  - name: "P2"\n    codename: "action.on.privatetags"\n    action: "K"\n' + BASIC
    )
    ds = _instance()
    outcome = engine.apply(ds, PSEUDONYM)
    assert outcome.codes_used == ("113111", "113107", "113100")
    assert [i.CodeMeaning for i in _read_back(ds).DeidentificationMethodCodeSequence] == [
        "Retain Safe Private Option",
        "Retain Longitudinal Temporal Information Modified Dates Option",
        "Basic Application Confidentiality Profile",
    ]


def test_tag_morphing_applies_the_profile_and_leaves_the_patient_module_alone() -> None:
    engine = _engine(_tags_element("X", '"0008,0080"') + _tags_element("U", '"0020,000D"'), tag_morphing=True)
    ds = _instance()
    outcome = engine.apply(ds, None)

    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate) == ("Doe^John", "PID-42", "19700101")
    assert "InstitutionName" not in ds and ds.StudyInstanceUID == _uid("1.2.826.0.1.3680043.10.1")
    assert "PatientIdentityRemoved" not in ds and "DeidentificationMethodCodeSequence" not in ds
    assert "ClinicalTrialSponsorName" not in ds and "InstanceCreationDate" not in ds
    assert outcome.codes_used == ()


def test_de_identification_needs_a_pseudonym() -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        _engine(BASIC).apply(_instance(), None)


SAMPLES_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"


def test_the_chain_samples_behave_as_their_names_say() -> None:
    example1 = load_profile(SAMPLES_DIR / "docs-tags-example1-deidentification.yml")
    ds = _with_private(_instance(ImageType=["ORIGINAL", "PRIMARY"], InstanceCreationTime="101010"))
    ds.Manufacturer = "ACME"
    Deidentifier.for_project(example1, "study-x", SECRET).apply(ds, PSEUDONYM)

    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]  # (0008,0008) excluded from the removal, then kept
    assert "Modality" not in ds and "Manufacturer" not in ds and "StudyDate" not in ds  # (0008,00XX) removed
    assert "PatientSex" not in ds and "PatientBirthDate" not in ds  # (0010,00XX) removed
    assert [e for e in ds if e.tag.is_private] == []

    pipe = load_profile(SAMPLES_DIR / "profilePipe.yml")
    ds = _instance()
    ds.add_new(0x60403000, "OW", b"\x00\x01" * 8)  # overlay data in group 6040: kept by the first element
    ds.add_new(0x60023000, "OW", b"\x00\x01" * 8)  # and in group 6002: removed by the basic profile
    Deidentifier.for_project(pipe, "study-x", SECRET).apply(ds, PSEUDONYM)
    assert 0x60403000 in ds and 0x60023000 not in ds


def test_the_added_attributes_read_back_in_the_original_transfer_syntax() -> None:
    ds = _instance()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # implicit VR little endian
    ds = _read_back(ds)
    _engine(BASIC).apply(ds, PSEUDONYM)
    result = _read_back(ds)

    assert result.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert [(i.CodeValue, i.CodeMeaning) for i in result.DeidentificationMethodCodeSequence] == [
        ("113100", "Basic Application Confidentiality Profile")
    ]
    assert result.PatientName == PSEUDONYM and result.StudyInstanceUID == _uid("1.2.826.0.1.3680043.10.1")


def test_retired_group_lengths_are_dropped() -> None:
    ds = _instance()
    ds.add_new(0x00080000, "UL", 1234)
    _engine(BASIC).apply(ds, PSEUDONYM)
    assert 0x00080000 not in ds
