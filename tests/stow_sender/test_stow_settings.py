"""The stow-sender's settings: defaults, environment overrides, and errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from karnak_shared.errors import ConfigError
from karnak_stow_sender.settings import StowSenderSettings, load_settings


def test_defaults_batch_twenty_instances_and_verify_tls() -> None:
    settings = load_settings(object(), {})
    assert settings.batch_size == 20
    assert settings.verify is True


def test_the_environment_overrides_each_setting() -> None:
    settings = load_settings(
        object(),
        {
            "KARNAK_STOW_SENDER_BATCH_SIZE": "1",
            "KARNAK_STOW_SENDER_MAX_WAIT": "0",
            "KARNAK_STOW_SENDER_READ_TIMEOUT": "2.5",
            "KARNAK_STOW_SENDER_VERIFY_TLS": "false",
        },
    )
    assert (settings.batch_size, settings.max_wait, settings.read_timeout) == (1, 0, 2.5)
    assert settings.verify is False


def test_a_configuration_section_is_the_base_once_the_shared_configuration_has_one() -> None:
    class WithSection(BaseModel):
        stow_sender: StowSenderSettings = StowSenderSettings(batch_size=7, connect_timeout=3)

    settings = load_settings(WithSection(), {"KARNAK_STOW_SENDER_CONNECT_TIMEOUT": "4"})
    assert (settings.batch_size, settings.connect_timeout) == (7, 4)


def test_a_ca_bundle_is_what_requests_verifies_against(tmp_path: Path) -> None:
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_settings(object(), {"KARNAK_STOW_SENDER_CA_BUNDLE": str(bundle)}).verify == str(bundle)


def test_a_bad_value_is_a_configuration_error_naming_the_setting_and_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            object(),
            {"KARNAK_STOW_SENDER_BATCH_SIZE": "0", "KARNAK_STOW_SENDER_CA_BUNDLE": str(tmp_path / "missing.pem")},
        )
    problems = caught.value.problems
    assert problems[0].startswith("stow_sender.batch_size (from KARNAK_STOW_SENDER_BATCH_SIZE): ")
    assert problems[1] == (
        f"stow_sender.ca_bundle (from KARNAK_STOW_SENDER_CA_BUNDLE): {tmp_path / 'missing.pem'} is not a readable file"
    )
