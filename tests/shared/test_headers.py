"""Headers of STOW destinations: Karnak's form, YAML mappings, the Authorization generators and the CLI."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from karnak_shared.config import parse_config
from karnak_shared.errors import ConfigError
from karnak_shared.headers import (
    HeaderError,
    basic_authorization,
    bearer_authorization,
    karnak_form,
    parse_headers,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.sig"


def test_karnak_form_with_one_pair_reads_as_one_header() -> None:
    assert parse_headers(f"<key>Authorization</key><value>Bearer {TOKEN}</value>") == {
        "Authorization": f"Bearer {TOKEN}"
    }


def test_karnak_form_as_its_generator_writes_it_with_a_newline_between_key_and_value() -> None:
    text = f"<key>Authorization</key>\n<value>Bearer {TOKEN}</value>"
    assert parse_headers(text) == {"Authorization": f"Bearer {TOKEN}"}


def test_karnak_form_with_several_pairs_keeps_each_in_order() -> None:
    text = (
        "  <key>Authorization</key><value>Basic dXNlcjpwdw==</value>\n"
        "<key>X-Tenant</key>\n<value> research </value>\n"
        "<key>X-Trace</key><value>a&amp;b</value>\n"
    )
    assert list(parse_headers(text).items()) == [
        ("Authorization", "Basic dXNlcjpwdw=="),
        ("X-Tenant", "research"),
        ("X-Trace", "a&b"),
    ]


def test_empty_text_and_an_empty_mapping_mean_no_header() -> None:
    assert parse_headers("") == {}
    assert parse_headers("  \n ") == {}
    assert parse_headers({}) == {}
    assert parse_headers(None) == {}


def test_a_yaml_mapping_is_accepted_as_it_is() -> None:
    assert parse_headers({"Authorization": f"Bearer {TOKEN}", "X-Tenant": "a"}) == {
        "Authorization": f"Bearer {TOKEN}",
        "X-Tenant": "a",
    }


@pytest.mark.parametrize(
    "headers",
    [
        "<key>Authorization</key><value>Bearer tok-1</value><key>authorization</key><value>Basic dHdv</value>",
        {"Authorization": "Bearer tok-1", "AUTHORIZATION": "Bearer tok-2"},
    ],
    ids=["karnak-form", "mapping"],
)
def test_a_second_authorization_header_is_refused_with_a_clear_error(headers: object) -> None:
    with pytest.raises(HeaderError, match="a second Authorization header is not allowed") as caught:
        parse_headers(headers)  # type: ignore[arg-type]
    assert not any(secret in str(caught.value) for secret in ("tok-1", "tok-2", "dHdv"))


def test_another_header_given_twice_is_refused() -> None:
    with pytest.raises(HeaderError, match="X-Tenant is given twice"):
        parse_headers("<key>X-Tenant</key><value>a</value><key>x-tenant</key><value>b</value>")


def test_text_that_is_not_pairs_is_refused_with_the_position_and_without_its_content() -> None:
    with pytest.raises(HeaderError, match="found something else at position 40") as caught:
        parse_headers(f"<key>Authorization</key><value>x</value>Bearer {TOKEN}")
    assert TOKEN not in str(caught.value)


def test_a_value_without_its_key_is_refused() -> None:
    with pytest.raises(HeaderError, match="expected <key>NAME</key><value>VALUE</value> pairs"):
        parse_headers(f"<value>Bearer {TOKEN}</value>")


def test_an_invalid_header_name_is_refused_without_quoting_it() -> None:
    with pytest.raises(HeaderError, match="header 1: the name is not a valid HTTP header name") as caught:
        parse_headers(f"<key>Bearer {TOKEN}</key><value>x</value>")
    assert TOKEN not in str(caught.value)


def test_a_value_with_a_line_break_is_refused_so_no_header_can_be_injected() -> None:
    with pytest.raises(HeaderError, match="X-Tenant: the value may not contain line breaks"):
        parse_headers({"X-Tenant": "a\r\nX-Injected: 1"})


def test_basic_authorization_is_base64_of_user_colon_password() -> None:
    value = basic_authorization("alice", "pa:ss wörd")
    assert value.startswith("Basic ")
    assert base64.b64decode(value[6:]).decode() == "alice:pa:ss wörd"


def test_a_basic_user_name_with_a_colon_is_refused() -> None:
    with pytest.raises(HeaderError, match="may not contain ':'"):
        basic_authorization("ali:ce", "pw")


def test_bearer_authorization_takes_one_word() -> None:
    assert bearer_authorization(f" {TOKEN}\n") == f"Bearer {TOKEN}"
    with pytest.raises(HeaderError, match="one word"):
        bearer_authorization("two words")
    with pytest.raises(HeaderError):
        bearer_authorization("")


def test_karnak_form_writes_what_parse_headers_reads_back() -> None:
    headers = {"Authorization": basic_authorization("alice", "s3cret&<>"), "X-Tenant": "a&b"}
    text = karnak_form(headers)
    assert text.startswith("<key>Authorization</key>\n<value>Basic ")
    assert parse_headers(text) == headers


STOW_CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - id: kheops-main
        type: stow
        url: https://kheops.example/api/studies
        headers: {headers}
"""


def test_the_configuration_accepts_karnak_form_and_mappings() -> None:
    form = parse_config(STOW_CONFIG.format(headers="'<key>Authorization</key><value>Bearer abc</value>'"))
    mapping = parse_config(STOW_CONFIG.format(headers="{Authorization: Bearer abc, X-Tenant: t}"))
    assert parse_headers(form.forward_nodes[0].destinations[0].headers) == {"Authorization": "Bearer abc"}  # type: ignore[union-attr]
    assert parse_headers(mapping.forward_nodes[0].destinations[0].headers)["X-Tenant"] == "t"  # type: ignore[union-attr]


def test_a_second_authorization_in_the_configuration_is_an_error_naming_the_field_and_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KHEOPS_TOKEN", TOKEN)
    text = STOW_CONFIG.format(
        headers="'<key>Authorization</key><value>Bearer ${KHEOPS_TOKEN}</value>"
        "<key>Authorization</key><value>Basic eDp5</value>'"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert message.startswith("forward_nodes[0].destinations[0].headers: a second Authorization header")
    assert message.endswith("(line 7)")
    assert TOKEN not in message


def test_karnak_headers_basic_prints_the_karnak_form_with_the_password_from_stdin() -> None:
    karnak = str(Path(sys.executable).with_name("karnak"))
    result = subprocess.run(
        [karnak, "headers", "basic", "alice"], input="s3cret:pw\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "<key>Authorization</key>\n<value>Basic YWxpY2U6czNjcmV0OnB3</value>\n"
    assert parse_headers(result.stdout) == {"Authorization": basic_authorization("alice", "s3cret:pw")}


def test_karnak_headers_bearer_prints_the_karnak_form_with_the_token_from_stdin() -> None:
    karnak = str(Path(sys.executable).with_name("karnak"))
    result = subprocess.run([karnak, "headers", "bearer"], input=TOKEN + "\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"<key>Authorization</key>\n<value>Bearer {TOKEN}</value>\n"


def test_karnak_headers_without_a_secret_on_stdin_fails_with_a_usage_error() -> None:
    karnak = str(Path(sys.executable).with_name("karnak"))
    result = subprocess.run([karnak, "headers", "bearer"], input="", capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no token on standard input" in result.stderr
