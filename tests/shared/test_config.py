"""The configuration file: what a valid one gives, and the exact lines naming what is wrong in a bad one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from karnak_dicom.syntaxes import ENCODABLE
from karnak_shared.config import CONFIG_ENV, DicomDestination, GatewayConfig, load_config, parse_config
from karnak_shared.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

VALID = """\
listener: {host: 127.0.0.1, port: 11112}
forward_nodes:
  - ae_title: KARNAK-GW
    sources:
      - ae_title: CT01
        hostname: ct01.example
    destinations:
      - id: research-pacs
        type: dicom
        ae_title: PACS
        hostname: pacs.example
        port: 104
      - id: archive
        type: dicom
        ae_title: ARCHIVE
        hostname: archive.example
        port: 11113
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the `occurrence`-th line of `text` containing `needle`."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return found[occurrence - 1]


def dicom_destination(config: GatewayConfig, destination_id: str) -> DicomDestination:
    destination = config.destination(destination_id)
    assert isinstance(destination, DicomDestination)
    return destination


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    problems: list[str] = caught.value.problems
    return problems


def one_error(text: str) -> str:
    problems = errors_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- a valid file ----------------------------------------------------------------------------------


def test_valid_configuration_gives_its_nodes_destinations_and_defaults() -> None:
    config = parse_config(VALID)

    assert isinstance(config, GatewayConfig)
    node = config.forward_node("KARNAK-GW")
    assert node is not None
    assert [d.id for d in node.destinations] == ["research-pacs", "archive"]
    assert dicom_destination(config, "research-pacs").port == 104
    assert node.sources[0].hostname == "ct01.example"
    assert config.broker.prefix == "karnak"
    assert config.broker.retry_delays == [5, 30, 120, 600, 3600]
    assert config.blob_store.max_inline_bytes == 65536


def test_the_example_configuration_loads() -> None:
    config = load_config(REPO / "config" / "karnak.example.yml")

    assert [node.ae_title for node in config.forward_nodes] == ["KARNAK-GW"]
    assert config.destination("local-pacs") is not None


def test_load_config_reads_the_file_named_by_karnak_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "karnak.yml"
    path.write_text(VALID, encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV, str(path))

    assert load_config(None).destination("archive") is not None


# --- field errors: the exact lines -------------------------------------------------------------------


def test_port_out_of_range_names_the_field_and_line() -> None:
    text = VALID.replace("port: 11113", "port: 70000")

    assert one_error(text) == (
        f"forward_nodes[0].destinations[1].port: must be between 1 and 65535 (line {line_of(text, 'port: 70000')})"
    )


@pytest.mark.parametrize(
    ("syntax", "words"),
    [
        ("1.2.840.10008.1.2.4.53", "(JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8)) is retired in DICOM"),
        ("1.2.840.10008.1.2.4.55", "(JPEG Full Progression, Non-Hierarchical (Process 10 & 12)) is retired in DICOM"),
        ("1.2.840.10008.1.2.4.100", "the gateway encodes only keep, 1.2.840.10008.1.2.1 (Explicit VR Little Endian)"),
    ],
)
def test_a_syntax_the_gateway_does_not_encode_names_the_field_the_line_and_why(syntax: str, words: str) -> None:
    text = VALID.replace("port: 11113", f"port: 11113\n        transfer_syntax: {syntax}")

    error = one_error(text)

    assert error.startswith("forward_nodes[0].destinations[1].transfer_syntax: ")
    assert words in error
    assert error.endswith(f"(line {line_of(text, syntax)})")


def test_every_syntax_of_the_gateways_list_validates() -> None:
    for syntax in ["keep", *(s.uid for s in ENCODABLE)]:
        config = parse_config(VALID.replace("port: 11113", f"port: 11113\n        transfer_syntax: '{syntax}'"))
        assert dicom_destination(config, "archive").transfer_syntax == syntax


def test_karnak_config_check_refuses_a_retired_syntax_and_accepts_jpeg_lossless(tmp_path: Path) -> None:
    karnak = str(Path(sys.executable).with_name("karnak"))
    path = tmp_path / "karnak.yml"
    path.write_text(VALID.replace("port: 11113", "port: 11113\n        transfer_syntax: 1.2.840.10008.1.2.4.53"))

    refused = subprocess.run([karnak, "config", "check", str(path)], capture_output=True, text=True, timeout=60)

    assert refused.returncode != 0
    assert "destinations[1].transfer_syntax: 1.2.840.10008.1.2.4.53" in refused.stderr
    assert "is retired in DICOM" in refused.stderr
    path.write_text(VALID.replace("port: 11113", "port: 11113\n        transfer_syntax: 1.2.840.10008.1.2.4.57"))
    accepted = subprocess.run([karnak, "config", "check", str(path)], capture_output=True, text=True, timeout=60)
    assert accepted.returncode == 0, accepted.stderr
    assert "valid" in accepted.stdout


def test_port_zero_is_out_of_range_too() -> None:
    text = VALID.replace("port: 104", "port: 0")

    assert one_error(text) == (
        f"forward_nodes[0].destinations[0].port: must be between 1 and 65535 (line {line_of(text, 'port: 0')})"
    )


def test_forward_node_ae_title_longer_than_16_characters_is_refused_with_its_line() -> None:
    text = VALID.replace("ae_title: KARNAK-GW", "ae_title: KARNAK-GATEWAY-LONG1")

    assert one_error(text) == (
        "forward_nodes[0].ae_title: an AE title must have 1 to 16 characters "
        f"(line {line_of(text, 'KARNAK-GATEWAY-LONG1')})"
    )


def test_destination_ae_title_with_a_backslash_is_refused_with_its_line() -> None:
    text = VALID.replace("ae_title: ARCHIVE", "ae_title: 'ARC\\HIVE'")

    assert one_error(text) == (
        "forward_nodes[0].destinations[1].ae_title: an AE title may not contain a backslash or control "
        f"characters (line {line_of(text, 'ARC')})"
    )


def test_source_ae_title_of_sixteen_characters_is_accepted() -> None:
    config = parse_config(VALID.replace("ae_title: CT01", "ae_title: ABCDEFGHIJKLMNOP"))

    assert config.forward_nodes[0].sources[0].ae_title == "ABCDEFGHIJKLMNOP"


@pytest.mark.parametrize("bad_id", ["Research_PACS", "-pacs", "pacs-", "pacs.a", "pacs a"])
def test_bad_destination_id_names_the_field_and_the_allowed_characters(bad_id: str) -> None:
    line = f"id: '{bad_id}'"
    text = VALID.replace("id: archive", line)

    assert one_error(text) == (
        "forward_nodes[0].destinations[1].id: must be 1 to 64 characters of a-z, 0-9 and '-', not starting "
        f"or ending with '-' (it names the destination's queue) (line {line_of(text, line)})"
    )


def test_unknown_field_is_reported_as_a_probable_typo_with_its_line() -> None:
    text = VALID.replace("        port: 104\n", "        port: 104\n        hostnmae: pacs2.example\n")

    assert one_error(text) == (
        "forward_nodes[0].destinations[0].hostnmae: unknown field (check its spelling) "
        f"(line {line_of(text, 'hostnmae')})"
    )


def test_unknown_top_level_section_is_reported() -> None:
    text = VALID + "brokr: {url: amqp://localhost}\n"

    assert one_error(text) == f"brokr: unknown field (check its spelling) (line {line_of(text, 'brokr')})"


def test_missing_required_field_names_it_at_the_line_of_its_destination() -> None:
    text = VALID.replace("        hostname: archive.example\n", "")

    assert one_error(text) == (
        f"forward_nodes[0].destinations[1].hostname: is required (line {line_of(text, 'id: archive')})"
    )


def test_missing_forward_nodes_is_reported_at_top_level() -> None:
    assert one_error("listener: {port: 11112}\n") == "forward_nodes: is required (line 1)"


def test_destination_type_ftp_lists_the_supported_types() -> None:
    text = VALID.replace("type: dicom", "type: ftp", 1)

    assert one_error(text) == (
        f"forward_nodes[0].destinations[0].type: must be one of: dicom, stow (line {line_of(text, 'type: ftp')})"
    )


def test_destination_without_type_says_type_is_required() -> None:
    text = VALID.replace("        type: dicom\n", "", 1)

    assert one_error(text) == (
        "forward_nodes[0].destinations[0].type: is required (dicom or stow) "
        f"(line {line_of(text, 'id: research-pacs')})"
    )


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = VALID.replace("port: 104", "port: 0").replace("id: archive", "id: Archive")

    assert errors_of(text) == [
        f"forward_nodes[0].destinations[0].port: must be between 1 and 65535 (line {line_of(text, 'port: 0')})",
        "forward_nodes[0].destinations[1].id: must be 1 to 64 characters of a-z, 0-9 and '-', not starting "
        f"or ending with '-' (it names the destination's queue) (line {line_of(text, 'id: Archive')})",
    ]


# --- cross references ------------------------------------------------------------------------------

TWO_NODES = (
    VALID
    + """\
  - ae_title: KARNAK-GW2
    destinations:
      - id: archive
        type: stow
        url: https://dicomweb.example/studies
"""
)


def test_duplicate_destination_ids_across_nodes_name_both_places() -> None:
    assert one_error(TWO_NODES) == (
        "forward_nodes[1].destinations[0].id: 'archive' is already used by forward_nodes[0].destinations[1] "
        f"(destination ids name queues and must be unique) (line {line_of(TWO_NODES, 'id: archive', 2)})"
    )


def test_duplicate_forward_node_ae_titles_name_the_first_node() -> None:
    text = VALID + (
        "  - ae_title: KARNAK-GW\n"
        "    destinations:\n"
        "      - {id: other, type: stow, url: 'https://dicomweb.example/studies'}\n"
    )

    assert one_error(text) == (
        "forward_nodes[1].ae_title: 'KARNAK-GW' is already the AE title of forward_nodes[0] "
        f"(line {line_of(text, 'ae_title: KARNAK-GW', 2)})"
    )


def test_deidentification_referring_to_a_missing_project_names_the_project() -> None:
    text = VALID.replace(
        "        port: 104\n", "        port: 104\n        deidentification:\n          project: study-x\n"
    )

    assert one_error(text) == (
        "forward_nodes[0].destinations[0].deidentification.project: no project named 'study-x' in projects "
        f"(line {line_of(text, 'project: study-x')})"
    )


def test_deidentification_and_tag_morphing_together_are_mutually_exclusive() -> None:
    text = (
        VALID.replace(
            "        port: 104\n",
            "        port: 104\n"
            "        deidentification: {project: study-x}\n"
            "        tag_morphing: {project: study-x}\n",
        )
        + "projects:\n  - {name: study-x, secret: 0123456789abcdef0123456789abcdef, profile: p.yml}\n"
    )

    assert one_error(text) == (
        "forward_nodes[0].destinations[0]: deidentification and tag_morphing are mutually exclusive "
        f"(line {line_of(text, 'id: research-pacs')})"
    )


def test_deidentification_with_an_existing_project_is_accepted() -> None:
    text = (
        VALID.replace("        port: 104\n", "        port: 104\n        deidentification: {project: study-x}\n")
        + "projects:\n  - {name: study-x, secret: 01234567-89ab-cdef-0123-456789ABCDEF, profile: p.yml}\n"
    )

    config = parse_config(text)

    dest = config.destination("research-pacs")
    assert dest is not None and dest.deidentification is not None
    assert dest.deidentification.pseudonym.type == "hash"


# --- conditions, projects, notifications --------------------------------------------------------------


def test_invalid_condition_names_the_field_the_line_and_the_position() -> None:
    text = VALID.replace(
        "        port: 104\n", '        port: 104\n        condition: "tagIsPresent(#Tag.Modality) &&"\n'
    )

    assert one_error(text) == (
        "forward_nodes[0].destinations[0].condition: invalid condition: expected a condition at position 30 "
        f"(found end of condition) (line {line_of(text, 'condition:')})"
    )


def test_valid_condition_is_accepted() -> None:
    text = VALID.replace(
        "        port: 104\n",
        "        port: 104\n        condition: \"tagValueContains(#Tag.StudyDescription, 'RESEARCH')\"\n",
    )

    assert "RESEARCH" in parse_config(text).forward_nodes[0].destinations[0].condition


def test_invalid_project_secret_says_what_a_secret_looks_like() -> None:
    text = VALID + "projects:\n  - name: study-x\n    secret: 0123456789abcdef\n    profile: p.yml\n"

    assert one_error(text) == (
        f"projects[0].secret: must be 32 hexadecimal digits (dashes allowed) (line {line_of(text, 'secret:')})"
    )


NOTIFIED = VALID.replace(
    "        port: 104\n",
    "        port: 104\n        notifications:\n          emails:\n            - a@b.ch\n            - not-an-email\n",
)


def test_invalid_email_in_notifications_names_the_list_item() -> None:
    assert one_error(NOTIFIED) == (
        "forward_nodes[0].destinations[0].notifications.emails[1]: 'not-an-email' is not an email address "
        f"(line {line_of(NOTIFIED, 'not-an-email')})"
    )


def test_notification_emails_may_be_one_comma_separated_string() -> None:
    text = VALID.replace(
        "        port: 104\n",
        "        port: 104\n        notifications: {emails: 'a@b.ch, ops@hospital.org,'}\n",
    )

    notifications = parse_config(text).forward_nodes[0].destinations[0].notifications

    assert notifications is not None
    assert notifications.emails == ["a@b.ch", "ops@hospital.org"]
    assert notifications.interval == 45


def test_invalid_email_inside_a_comma_separated_string_is_refused() -> None:
    text = VALID.replace(
        "        port: 104\n", "        port: 104\n        notifications: {emails: 'a@b.ch, nobody'}\n"
    )

    assert one_error(text) == (
        "forward_nodes[0].destinations[0].notifications.emails[1]: 'nobody' is not an email address "
        f"(line {line_of(text, 'notifications:')})"
    )


# --- ${ENV} and ${file:...} references -------------------------------------------------------------

SECRET_PROJECT = VALID + "projects:\n  - name: study-x\n    secret: ${STUDY_X_SECRET}\n    profile: p.yml\n"


def test_missing_environment_variable_names_the_variable_and_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STUDY_X_SECRET", raising=False)

    assert one_error(SECRET_PROJECT) == (
        "projects[0].secret: environment variable STUDY_X_SECRET is not set "
        f"(line {line_of(SECRET_PROJECT, 'secret:')})"
    )


def test_environment_reference_is_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDY_X_SECRET", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("PACS_HOST", "pacs.internal")
    text = SECRET_PROJECT.replace("hostname: pacs.example", "hostname: ${PACS_HOST}")

    config = parse_config(text)

    assert config.projects[0].secret.get_secret_value() == "0123456789abcdef0123456789abcdef"
    assert dicom_destination(config, "research-pacs").hostname == "pacs.internal"


def test_environment_reference_inside_a_longer_value_is_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_DOMAIN", "hospital.org")
    config = parse_config(VALID.replace("hostname: pacs.example", "hostname: pacs.${PACS_DOMAIN}"))

    assert dicom_destination(config, "research-pacs").hostname == "pacs.hospital.org"


def test_malformed_environment_reference_is_reported() -> None:
    text = VALID.replace("hostname: pacs.example", "hostname: ${1-BAD}")

    assert one_error(text) == (
        "forward_nodes[0].destinations[0].hostname: '${1-BAD}' is not a valid environment variable reference "
        f"(line {line_of(text, '1-BAD')})"
    )


def test_file_reference_is_resolved_without_its_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "study-x"
    secret_file.write_text("0123456789abcdef0123456789abcdef\n", encoding="utf-8")
    text = SECRET_PROJECT.replace("${STUDY_X_SECRET}", f"${{file:{secret_file}}}")

    config = parse_config(text)

    assert config.projects[0].secret.get_secret_value() == "0123456789abcdef0123456789abcdef"


def test_missing_secret_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    text = SECRET_PROJECT.replace("${STUDY_X_SECRET}", f"${{file:{missing}}}")

    assert one_error(text) == (
        f"projects[0].secret: cannot read secret file {missing}: No such file or directory "
        f"(line {line_of(text, 'secret:')})"
    )


# --- secrets never appear in errors ----------------------------------------------------------------

SECRET_VALUE = "s3cr3t-T0KEN-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param("projects: [{name: p, secret: '${KARNAK_TEST_SECRET}', profile: p.yml}]\n", id="project-secret"),
        pytest.param("smtp: {port: '${KARNAK_TEST_SECRET}'}\n", id="smtp-port"),
        pytest.param("listener: {port: '${KARNAK_TEST_SECRET}'}\n", id="listener-port"),
        pytest.param("broker: {prefix: '${KARNAK_TEST_SECRET}!'}\n", id="broker-prefix"),
        pytest.param("logging: {level: '${KARNAK_TEST_SECRET}'}\n", id="logging-level"),
        pytest.param(
            "smtp: {sender: '${KARNAK_TEST_SECRET}'}\n",
            id="smtp-sender",
        ),
        pytest.param(
            "forward_nodes:\n  - ae_title: GW\n    destinations:\n      - id: kheops\n        type: stow\n"
            "        url: https://kheops.example/api/studies\n        kheops_albums:\n"
            "          - {url_api: '${KARNAK_TEST_SECRET}', token_destination: x, token_source: y}\n",
            id="kheops-url-api-swapped-with-token",
        ),
    ],
)
def test_a_secret_in_an_invalid_place_never_appears_in_the_error(snippet: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KARNAK_TEST_SECRET", SECRET_VALUE)
    text = snippet if snippet.startswith("forward_nodes") else VALID + snippet

    with pytest.raises(ConfigError) as caught:
        parse_config(text)

    assert SECRET_VALUE not in str(caught.value)
    assert "9f8e7d6c5b4a" not in str(caught.value)


def test_resolved_secrets_are_hidden_in_the_configuration_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDY_X_SECRET", "0123456789abcdef0123456789abcdef")
    text = SECRET_PROJECT + "broker: {url: 'amqp://karnak:hunter2pw@rabbit:5672/'}\n"

    config = parse_config(text)

    assert "0123456789abcdef0123456789abcdef" not in repr(config)
    assert "hunter2pw" not in repr(config)


# --- not a configuration at all --------------------------------------------------------------------


def test_text_that_is_not_yaml_names_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("forward_nodes:\n  - ae_title: [KARNAK\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML (line 3, column 1): ")
    assert len(caught.value.problems) == 1


def test_a_yaml_list_at_top_level_is_not_a_configuration() -> None:
    assert one_error("- ae_title: KARNAK-GW\n- ae_title: OTHER\n") == (
        "<config>: the configuration must be a YAML mapping"
    )


def test_an_empty_file_is_not_a_configuration() -> None:
    assert one_error("") == "<config>: the configuration must be a YAML mapping"


def test_load_config_without_a_path_or_karnak_config_says_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    with pytest.raises(ConfigError) as caught:
        load_config(None)

    assert "--config" in str(caught.value)
    assert CONFIG_ENV in str(caught.value)


def test_load_config_of_a_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert str(caught.value) == f"cannot read configuration file {missing}: No such file or directory"


def test_load_config_errors_name_the_file_lines_as_in_the_file(tmp_path: Path) -> None:
    text = VALID.replace("port: 11113", "port: 65536")
    path = tmp_path / "karnak.yml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(str(path))

    assert caught.value.problems == [
        f"forward_nodes[0].destinations[1].port: must be between 1 and 65535 (line {line_of(text, '65536')})"
    ]
