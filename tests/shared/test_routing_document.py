"""The routing document's own rules: auth configs named by code, unique project names, the settings split."""

from __future__ import annotations

import json
from typing import Any

import pytest

from karnak_shared.config import ROUTING_KEYS, RoutingConfig, ServiceSettings, validate_document
from karnak_shared.errors import ConfigError
from karnak_shared.revisions import diff_documents, format_changes
from tests.support.revisions import routing

AUTH = {"code": "idp", "access_token_url": "https://idp.example/token", "client_id": "gw", "client_secret": "s3cret!"}


def with_api_pseudonym(keys: dict[str, Any], **pseudonym: Any) -> dict[str, Any]:
    keys["forward_nodes"][0]["destinations"][1]["deidentification"]["pseudonym"] = {
        "type": "api",
        "url": "https://pseudonyms.example/lookup",
        **pseudonym,
    }
    return keys


def test_service_settings_and_routing_keys_are_the_two_layers_of_the_file() -> None:
    assert set(ROUTING_KEYS) == set(RoutingConfig.model_fields)
    assert not set(ROUTING_KEYS) & set(ServiceSettings.model_fields)
    assert {"configuration", "secrets", "database", "broker", "listener"} <= set(ServiceSettings.model_fields)


def test_a_pseudonym_names_an_auth_config_by_its_code() -> None:
    keys = with_api_pseudonym({**routing(), "auth_configs": [AUTH]}, auth_config="idp")
    config = validate_document(RoutingConfig, json.loads(json.dumps(keys)))
    pseudonym = config.forward_nodes[0].destinations[1].deidentification.pseudonym  # type: ignore[union-attr]
    filled = config.pseudonym_with_credentials(pseudonym)
    assert (filled.token_url, filled.client_id, filled.auth_config) == ("https://idp.example/token", "gw", None)
    assert filled.client_secret is not None and filled.client_secret.get_secret_value() == "s3cret!"


def test_an_unknown_or_duplicate_auth_config_is_named_by_its_path() -> None:
    keys = with_api_pseudonym({**routing(), "auth_configs": [AUTH, AUTH]}, auth_config="nowhere")
    with pytest.raises(ConfigError) as raised:
        validate_document(RoutingConfig, keys)
    assert raised.value.problems == [
        "auth_configs[1].code: 'idp' is already the code of auth_configs[0]",
        "forward_nodes[0].destinations[1].deidentification.pseudonym.auth_config: no auth config 'nowhere' in "
        "auth_configs",
    ]


def test_an_auth_config_and_inline_credentials_are_mutually_exclusive() -> None:
    keys = with_api_pseudonym({**routing(), "auth_configs": [AUTH]}, auth_config="idp", client_id="other")
    with pytest.raises(ConfigError, match="auth_config and token_url/client_id/client_secret are mutually exclusive"):
        validate_document(RoutingConfig, keys)


def test_two_projects_of_the_same_name_are_refused() -> None:
    keys = routing()
    keys["projects"].append(dict(keys["projects"][0]))
    with pytest.raises(ConfigError) as raised:
        validate_document(RoutingConfig, keys)
    assert raised.value.problems == ["projects[1].name: 'study-x' is already the name of projects[0]"]


def test_a_diff_names_list_elements_by_their_identity_and_profiles_line_by_line() -> None:
    before = routing()
    before["projects"][0]["profile"] = "name: a\nversion: '1'\nprofileElements: []\n"
    after = json.loads(json.dumps(before))
    after["forward_nodes"][0]["destinations"].reverse()  # order alone: no change for identified elements
    after["forward_nodes"][0]["destinations"][0]["enabled"] = False
    after["projects"][0]["profile"] = "name: a\nversion: '2'\nprofileElements: []\n"
    after["auth_configs"] = [{**AUTH, "client_secret": "${IDP_SECRET}"}]
    assert format_changes(diff_documents(before, after)) == [
        "+ forward_nodes[KARNAK-GW].destinations[research].enabled: false",
        "~ projects[study-x].profile:",
        "    @@ -1,3 +1,3 @@",
        "     name: a",
        "    -version: '1'",
        "    +version: '2'",
        "     profileElements: []",
        '+ auth_configs[idp]: {"code": "idp", "access_token_url": "https://idp.example/token", "client_id": "gw", '
        '"client_secret": "${IDP_SECRET}"}',
    ]
