"""Loading Karnak profiles: the sample profiles load or fail with messages naming the element, and every
kind of invalid element is reported with its index, name, field and line."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from karnak_dicom.deid import Deidentifier, ProfileError, load_profile
from karnak_dicom.deid.profile import (
    AddPrivateTagElement,
    AddTagElement,
    BasicProfileElement,
    CleanPixelDataElement,
    DatesElement,
    ExpressionElement,
    Mask,
    PrivateTagsElement,
    ProfileProblem,
    ReplaceApiElement,
    ReplaceUidElement,
    TagActionElement,
    profile_json_schema,
)
from karnak_shared.errors import ConfigError

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"
SECRET = bytes(range(16))


def _profile(elements: str, extra: str = "") -> str:
    return f'name: "Test"\nversion: "1.0"\nprofileElements:\n{elements}{extra}'


def _problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(text)
    return caught.value.problems


@pytest.mark.parametrize(
    ("sample", "kinds"),
    [
        ("profileByDefault.yml", [BasicProfileElement]),
        ("profileByPixel.yml", [CleanPixelDataElement, BasicProfileElement]),
        ("profileDate.yml", [DatesElement, DatesElement, BasicProfileElement]),
        ("profileExpression.yml", [ExpressionElement, BasicProfileElement]),
        ("profilePipe.yml", [TagActionElement, BasicProfileElement]),
        (
            "docs-tags-example1-deidentification.yml",
            [TagActionElement, TagActionElement, PrivateTagsElement, BasicProfileElement],
        ),
        ("docs-tags-example2-conditional-private.yml", [TagActionElement, PrivateTagsElement, BasicProfileElement]),
        (
            "docs-masks-equipment-specific-cleaning.yml",
            [AddTagElement, ExpressionElement, CleanPixelDataElement, BasicProfileElement],
        ),
    ],
)
def test_karnak_sample_profiles_load_with_their_elements_in_order(sample: str, kinds: list[type]) -> None:
    profile = load_profile(SAMPLES / sample)

    # action.on.dates has one model per option, all of them DatesElement.
    assert [DatesElement if isinstance(e, DatesElement) else type(e) for e in profile.elements] == kinds
    assert [element.index for element in profile.elements] == list(range(len(kinds)))
    assert profile.name


def test_a_profile_loads_from_a_path_string_or_from_yaml_text_alike() -> None:
    path = SAMPLES / "profileDate.yml"
    assert load_profile(str(path)) == load_profile(path) == load_profile(path.read_text())


def test_the_sample_metadata_is_read() -> None:
    profile = load_profile(SAMPLES / "profileExpression.yml")
    assert (profile.name, profile.version, profile.minimum_karnak_version) == ("Expression", "1.0", "1.0")
    assert profile.default_issuer_of_patient_id == "DPA"
    assert load_profile(SAMPLES / "profileByDefault.yml").default_issuer_of_patient_id is None


def test_the_sample_masks_are_read_as_rectangles_per_station() -> None:
    profile = load_profile(SAMPLES / "profileByPixel.yml")
    assert profile.masks == (
        Mask(stationName="*", rectangles=((25, 15, 150, 50), (350, 15, 150, 50)), color="ff0000"),
        Mask(stationName="VIVID7-003467", rectangles=((25, 25, 150, 50), (350, 15, 150, 50)), color="00ff00"),
    )


def test_profile_chain_reports_each_deliberately_wrong_element_by_index_name_and_line() -> None:
    problems = _problems((SAMPLES / "profileChain.yml").read_text())

    assert problems == [
        "profileElements[2] 'Missing tags (generate an error)': tags: at least one tag is required for "
        "action.on.specific.tags (line 23)",
        "profileElements[3] 'Missing action (generate an error)': action: required for action.on.specific.tags "
        "(one of K, X, Z, U, D) (line 27)",
        "profileElements[4] 'Missing tags and action (generate an error)': tags: at least one tag is required for "
        "action.on.specific.tags (line 33)",
        "profileElements[4] 'Missing tags and action (generate an error)': action: required for "
        "action.on.specific.tags (one of K, X, Z, U, D) (line 33)",
        "profileElements[5] 'Action D is not recognize in profile (generate an error)': tags: at least one tag is "
        "required for action.on.specific.tags (line 36)",
        "profileElements[7] 'Missing action (generate an error)': action: required for action.on.privatetags "
        "(one of K, X, Z, U, D) (line 49)",
    ]


def test_a_profile_error_is_a_configuration_error_and_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile(SAMPLES / "profileChain.yml")
    assert str(caught.value).count("\n") == 5


def test_the_documentation_date_example_is_refused_for_its_misspelt_option_with_a_hint() -> None:
    problems = _problems((SAMPLES / "docs-dates-complete-example.yml").read_text())
    assert problems == [
        "profileElements[1] 'Date Format': option: 'format_date' is not one of shift, shift_range, shift_by_tag, "
        "date_format (did you mean 'date_format'?) (line 20)"
    ]


def test_the_documentation_date_example_loads_once_the_option_is_spelt_as_karnak_reads_it() -> None:
    text = (SAMPLES / "docs-dates-complete-example.yml").read_text().replace("format_date", "date_format")
    dates = [e for e in load_profile(text).elements if isinstance(e, DatesElement)]
    assert [(d.option, d.remove) for d in dates] == [
        ("shift_range", None),
        ("date_format", "month_day"),
        ("shift", None),
    ]
    assert (dates[0].min_days, dates[0].max_days, dates[0].min_seconds, dates[0].max_seconds) == (10, 50, 0, 60)


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ('  - name: "A"\n    codename: "no.such.thing"\n', "codename: unknown codename 'no.such.thing'"),
        ('  - name: "A"\n    codename: "basic.dicom.profil"\n', "(did you mean 'basic.dicom.profile'?)"),
        (
            '  - name: "A"\n    codename: "clean.recognizable.visual.features"\n',
            "is not supported: defacing is not supported by this gateway",
        ),
        ('  - codename: "basic.dicom.profile"\n', "name: required"),
        ('  - name: "A"\n', "codename: required"),
        (
            '  - name: "A"\n    codename: "action.on.specific.tags"\n    action: "x"\n    tags: ["0010,0010"]\n',
            "action: 'x' is not one of K, X, Z, U, D (actions are upper-case)",
        ),
        (
            '  - name: "A"\n    codename: "action.on.specific.tags"\n    action: "X"\n    tags: ["0010,001G"]\n',
            "tags[0]: invalid tag '0010,001G'",
        ),
        (
            '  - name: "A"\n    codename: "action.on.specific.tags"\n    action: "X"\n    tags: [00100010]\n',
            "tags[0]: write the tag as quoted text",
        ),
        (
            '  - name: "A"\n    codename: "action.on.specific.tags"\n    action: "X"\n    tag: ["00100010"]\n',
            "tag: unknown key (did you mean 'tags'?)",
        ),
        (
            '  - name: "A"\n    codename: "basic.dicom.profile"\n    condition: "tagIsPresent(#Tag.Nope)"\n',
            "condition: unknown DICOM keyword 'Nope' at position 13",
        ),
        ('  - name: "A"\n    codename: "basic.dicom.profile"\n    tags: ["0010,0010"]\n', "tags: not used by"),
        ('  - name: "A"\n    codename: "action.on.dates"\n', "option: required for action.on.dates"),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "shift"\n    arguments: {days: 1}\n',
            "arguments.seconds: required for action.on.dates option shift",
        ),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "shift_range"\n    arguments: {max_days: 1}\n',
            "arguments.max_seconds: required",
        ),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "shift_range"\n'
            "    arguments: {min_days: 10, max_days: 5, max_seconds: 1}\n",
            "arguments.max_days: must not be less than min_days",
        ),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "shift"\n'
            "    arguments: {days: ten, seconds: 0}\n",
            "arguments.days: must be a whole number, not 'ten'",
        ),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "date_format"\n'
            "    arguments: {remove: year}\n",
            "arguments.remove: 'year' is not one of day, month_day",
        ),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "shift_by_tag"\n'
            "    arguments: {days_tag: NoSuchKeyword}\n",
            "arguments.days_tag: invalid tag 'NoSuchKeyword'",
        ),
        (
            '  - name: "A"\n    codename: "action.on.dates"\n    option: "shift"\n'
            "    arguments: {days: 1, seconds: 1, weeks: 2}\n",
            "arguments.weeks: unknown argument for action.on.dates option shift",
        ),
        (
            '  - name: "A"\n    codename: "expression.on.tags"\n    tags: ["0010,0010"]\n',
            "arguments.expr: required for expression.on.tags",
        ),
        (
            '  - name: "A"\n    codename: "expression.on.tags"\n    arguments: {expr: "Keep()"}\n',
            "tags: at least one tag is required for expression.on.tags",
        ),
        (
            '  - name: "A"\n    codename: "expression.on.tags"\n    arguments: {expr: "Kep()"}\n'
            '    tags: ["0010,0010"]\n',
            "arguments.expr: unknown function or variable 'Kep' (did you mean 'Keep'?) at position 0",
        ),
        (
            '  - name: "A"\n    codename: "expression.on.tags"\n    arguments: {expr: "stringValue"}\n'
            '    tags: ["0010,0010"]\n',
            "arguments.expr: the expression must give an action",
        ),
        (
            '  - name: "A"\n    codename: "action.add.tag"\n    arguments: {value: "YES"}\n    tags: ["(0028,030X)"]\n',
            "tags: exactly one tag (no X wildcard) is required for action.add.tag",
        ),
        (
            '  - name: "A"\n    codename: "action.add.tag"\n    tags: ["(0028,0301)"]\n',
            "arguments.value: required for action.add.tag",
        ),
        (
            '  - name: "A"\n    codename: "action.add.tag"\n    arguments: {value: "x"}\n    tags: ["(0009,1001)"]\n',
            "is private, use action.add.private.tag",
        ),
        (
            '  - name: "A"\n    codename: "action.add.tag"\n    arguments: {value: "x", vr: "QQ"}\n'
            '    tags: ["(0028,0301)"]\n',
            "arguments.vr: 'QQ' is not a VR",
        ),
        (
            '  - name: "A"\n    codename: "action.add.private.tag"\n    arguments: {value: "x", vr: "LO"}\n'
            '    tags: ["(0009,1001)"]\n',
            "arguments.privateCreator: required",
        ),
        (
            '  - name: "A"\n    codename: "action.add.private.tag"\n'
            '    arguments: {value: "x", vr: "LO", privateCreator: "ME"}\n    tags: ["(0010,1001)"]\n',
            "is not a private data element",
        ),
        (
            '  - name: "A"\n    codename: "replace.uid"\n    action: "K"\n    tags: ["0020,000D"]\n',
            "action: 'K' is not one of U, X, Z",
        ),
        (
            '  - name: "A"\n    codename: "action.replace.api"\n    arguments: {url: "http://x"}\n'
            '    tags: ["0010,0020"]\n',
            "arguments.responsePath: required for action.replace.api",
        ),
        (
            '  - name: "A"\n    codename: "action.replace.api"\n'
            '    arguments: {url: "http://x", responsePath: "/a", method: "POST"}\n    tags: ["0010,0020"]\n',
            "arguments.body: required for a POST request",
        ),
        (
            '  - name: "A"\n    codename: "action.replace.api"\n'
            '    arguments: {url: "http://x/{{getString(#Tag.PatientId)}}", responsePath: "/a"}\n'
            '    tags: ["0010,0020"]\n',
            "arguments.url: unknown DICOM keyword 'PatientId' (did you mean 'PatientID'?) at position 21",
        ),
    ],
)
def test_each_invalid_element_is_reported_naming_it_and_the_field(element: str, expected: str) -> None:
    problems = _problems(_profile(element))

    assert len(problems) >= 1
    assert problems[0].startswith("profileElements[0]")
    assert expected in problems[0], problems
    assert problems[0].endswith("(line 4)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [", "profile: not valid YAML"),
        ("- a\n- b\n", "profile: expected a mapping"),
        ('name: "x"\n', "profileElements: a non-empty list of elements is required"),
        ('name: "x"\nprofileElement: []\n', "profileElement: unknown key (did you mean 'profileElements'?) (line 2)"),
        (
            _profile('  - name: "A"\n    codename: "clean.pixel.data"\n', '\nmasks:\n  - stationName: "*"\n'),
            "masks[0]: rectangles: a non-empty list of 'x y width height' is required (line 8)",
        ),
        (
            _profile(
                '  - name: "A"\n    codename: "clean.pixel.data"\n',
                '\nmasks:\n  - stationName: "*"\n    rectangles: ["1 2 3"]\n',
            ),
            "masks[0]: rectangles[0]: '1 2 3' is not 'x y width height' in whole pixels",
        ),
        (
            _profile(
                '  - name: "A"\n    codename: "clean.pixel.data"\n',
                '\nmasks:\n  - stationName: "*"\n    imageWidth: 512\n    rectangles: ["1 2 3 4"]\n',
            ),
            "masks[0]: imageWidth and imageHeight must be given together",
        ),
    ],
)
def test_invalid_documents_and_masks_are_reported(text: str, expected: str) -> None:
    problems = _problems(text)
    assert any(expected in problem for problem in problems), problems


def test_a_missing_profile_file_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"nope\.yml: cannot read it"):
        load_profile(tmp_path / "nope.yml")


def test_tag_lists_accept_the_three_spellings_and_wildcards_in_either_case() -> None:
    profile = load_profile(SAMPLES / "profileChain.yml".replace("Chain", "Pipe"))
    element = profile.elements[0]
    assert isinstance(element, TagActionElement)
    assert element.selector.matches(0x60400000) and element.selector.matches(0x6040FFFF)
    assert not element.selector.matches(0x60410000)

    chain_keep = load_profile(
        _profile(
            '  - name: "Keep"\n    codename: "action.on.specific.tags"\n    action: "K"\n'
            '    tags: ["(0008,00Xx)", "0010,00xX", "00200010"]\n    excludedTags: ["0008,0008"]\n'
        )
    ).elements[0]
    assert isinstance(chain_keep, TagActionElement)
    assert [chain_keep.selector.matches(t) for t in (0x00080050, 0x00100010, 0x00200010, 0x00080008)] == [
        True,
        True,
        True,
        False,
    ]


def test_the_other_codenames_build_their_elements() -> None:
    profile = load_profile(
        _profile(
            '  - name: "UIDs"\n    codename: "replace.uid"\n    action: "U"\n    tags: ["0020,000D"]\n'
            '  - name: "Private"\n    codename: "action.add.private.tag"\n'
            '    arguments: {value: "v", vr: "LO", privateCreator: "ME"}\n    tags: ["(0009,1001)"]\n'
            '  - name: "API"\n    codename: "action.replace.api"\n'
            '    arguments: {url: "http://x/{{getString(#Tag.PatientID)}}", responsePath: "a/b",'
            ' method: "post", body: "{}", authConfig: "auth", defaultValue: "ANON"}\n    tags: ["0010,0020"]\n'
        )
    )
    uids, private, api = profile.elements
    assert isinstance(uids, ReplaceUidElement) and uids.action == "U"
    assert isinstance(private, AddPrivateTagElement) and private.creator_tag == 0x00090010
    assert isinstance(api, ReplaceApiElement)
    assert (api.method, api.response_path, api.auth_config, api.default_value) == ("POST", "/a/b", "auth", "ANON")


def test_an_api_element_needs_a_caller_when_the_engine_is_built() -> None:
    profile = load_profile(
        _profile(
            '  - name: "API"\n    codename: "action.replace.api"\n'
            '    arguments: {url: "http://x", responsePath: "/a"}\n    tags: ["0010,0020"]\n'
        )
    )
    with pytest.raises(ProfileError, match=r"profileElements\[0\] 'API': action.replace.api needs an API caller"):
        Deidentifier.for_project(profile, "study-x", SECRET)
    assert Deidentifier.for_project(profile, "study-x", SECRET, replace_api=lambda element, dataset: {})


def test_a_secret_that_is_not_16_bytes_is_refused() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        Deidentifier.for_project(load_profile(SAMPLES / "profileByDefault.yml"), "p", b"short")


def test_the_engine_never_shows_its_secret() -> None:
    engine = Deidentifier.for_project(load_profile(SAMPLES / "profileByDefault.yml"), "p", SECRET)
    assert SECRET.hex() not in repr(engine) and str(SECRET) not in repr(engine)


def test_the_json_schema_of_profiles_accepts_the_samples_the_loader_accepts_and_refuses_the_others() -> None:
    schema = profile_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(SAMPLES.glob("*.yml")):
        try:
            load_profile(path)
            loads = True
        except ProfileError:
            loads = False
        assert validator.is_valid(yaml.safe_load(path.read_text())) == loads, path.name


def test_the_json_schema_names_every_codename_in_its_discriminator() -> None:
    items = profile_json_schema()["properties"]["profileElements"]["items"]
    assert set(items["discriminator"]["mapping"]) == {
        "basic.dicom.profile",
        "action.on.specific.tags",
        "action.on.privatetags",
        "action.on.dates",
        "expression.on.tags",
        "action.add.tag",
        "action.add.private.tag",
        "replace.uid",
        "clean.pixel.data",
        "action.replace.api",
    }
    assert all(isinstance(target, str) for target in items["discriminator"]["mapping"].values())


def test_problems_carry_the_element_index_field_and_line_apart() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile((SAMPLES / "profileChain.yml").read_text())
    first = caught.value.located[0]
    assert isinstance(first, ProfileProblem)
    assert (first.element, first.field, first.line) == (2, "tags", 23)
    assert str(first) == caught.value.problems[0]


@pytest.mark.parametrize("sample", ["profileByPixel.yml", "profileDate.yml", "profileExpression.yml"])
def test_a_profile_written_back_with_karnaks_keys_loads_as_the_same_profile(sample: str) -> None:
    profile = load_profile(SAMPLES / sample)

    written = yaml.safe_dump(profile.model_dump(by_alias=True, exclude_none=True), sort_keys=False)

    assert "profileElements:" in written and "profile_elements" not in written
    assert load_profile(written) == profile
