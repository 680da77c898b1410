"""Profiles through the console API are the DICOM library's models: their JSON schema, and the problems of
an upload given per element with the field's path, as `karnak config check` words them."""

from __future__ import annotations

import jsonschema
import yaml

from tests.console.conftest import ConsoleUnderTest, profile_text

YAML = {"content-type": "application/x-yaml"}


def test_the_profile_schema_is_published_and_describes_the_stored_profiles(app: ConsoleUnderTest) -> None:
    answer = app.get("/api/v1/profiles:schema")

    assert answer.status_code == 200
    schema = answer.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.Draft202012Validator(schema).is_valid(yaml.safe_load(profile_text()))
    mapping = schema["properties"]["profileElements"]["items"]["discriminator"]["mapping"]
    assert "action.replace.api" in mapping and "action.on.dates" in mapping


def test_each_element_gets_its_own_problems_with_the_field_path(app: ConsoleUnderTest) -> None:
    text = (
        "name: broken\nversion: '1'\nprofileElements:\n"
        "  - name: fine\n    codename: basic.dicom.profile\n"
        "  - name: no tags\n    codename: action.on.specific.tags\n    action: X\n"
        "  - name: bad shift\n    codename: action.on.dates\n    option: shift\n    arguments: {days: ten}\n"
    )

    check = app.post("/api/v1/profiles:validate", content=text, headers=YAML).json()

    assert check["valid"] is False
    assert [e["errors"] for e in check["elements"]] == [
        [],
        ["tags: at least one tag is required for action.on.specific.tags"],
        [
            "arguments.days: must be a whole number, not 'ten'",
            "arguments.seconds: required for action.on.dates option shift",
        ],
    ]
    assert [p["field"] for p in check["errors"]] == [
        "profileElements[1].tags",
        "profileElements[2].arguments.days",
        "profileElements[2].arguments.seconds",
    ]
