"""Who may open an association with the receiver: called AE selects the node, its sources the callers."""

from __future__ import annotations

import pytest

from karnak_receiver.admission import CALLED_AE_NOT_RECOGNISED, CALLING_AE_NOT_RECOGNISED, admit
from karnak_shared.config import GatewayConfig, parse_config

CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    sources:
      - {ae_title: CT01, hostname: localhost}
      - {ae_title: CT02, hostname: 10.1.2.3}
      - {ae_title: MR01}
    destinations: []
  - ae_title: OPEN-GW
    sources: []
"""


@pytest.fixture
def config() -> GatewayConfig:
    return parse_config(CONFIG)


def test_unknown_called_ae_title_is_rejected_with_called_ae_not_recognised(config: GatewayConfig) -> None:
    admission = admit(config, "NOBODY", "CT01", "127.0.0.1")

    assert not admission.accepted
    assert admission.node is None
    assert admission.diagnostic == CALLED_AE_NOT_RECOGNISED == 0x07
    assert "NOBODY" in admission.reason


def test_calling_ae_title_not_among_the_sources_is_rejected_with_calling_ae_not_recognised(
    config: GatewayConfig,
) -> None:
    admission = admit(config, "KARNAK-GW", "INTRUDER", "127.0.0.1")

    assert not admission.accepted
    assert admission.diagnostic == CALLING_AE_NOT_RECOGNISED == 0x03
    assert "INTRUDER" in admission.reason
    assert "KARNAK-GW" in admission.reason


def test_listed_source_without_hostname_is_accepted_from_anywhere(config: GatewayConfig) -> None:
    admission = admit(config, "KARNAK-GW", "MR01", "192.0.2.77")

    assert admission.accepted
    assert admission.node is not None and admission.node.ae_title == "KARNAK-GW"
    assert admission.diagnostic == 0


@pytest.mark.parametrize("calling", ["ANYONE", "CT01", "X"])
def test_node_with_empty_sources_accepts_anyone(config: GatewayConfig, calling: str) -> None:
    admission = admit(config, "OPEN-GW", calling, "203.0.113.9")

    assert admission.accepted
    assert admission.node is not None and admission.node.ae_title == "OPEN-GW"


def test_source_hostname_matches_the_address_it_resolves_to(config: GatewayConfig) -> None:
    assert admit(config, "KARNAK-GW", "CT01", "127.0.0.1").accepted


def test_source_hostname_matches_itself(config: GatewayConfig) -> None:
    assert admit(config, "KARNAK-GW", "CT01", "localhost").accepted


def test_source_ip_address_must_be_the_peer_address(config: GatewayConfig) -> None:
    assert admit(config, "KARNAK-GW", "CT02", "10.1.2.3").accepted
    assert admit(config, "KARNAK-GW", "CT02", "10.1.2.4").diagnostic == CALLING_AE_NOT_RECOGNISED


def test_right_ae_title_from_the_wrong_host_is_rejected(config: GatewayConfig) -> None:
    admission = admit(config, "KARNAK-GW", "CT01", "192.0.2.10")

    assert not admission.accepted
    assert admission.diagnostic == CALLING_AE_NOT_RECOGNISED


def test_source_with_hostname_rejects_an_unknown_peer_address(config: GatewayConfig) -> None:
    assert admit(config, "KARNAK-GW", "CT01", None).diagnostic == CALLING_AE_NOT_RECOGNISED


def test_trailing_spaces_in_ae_titles_are_ignored(config: GatewayConfig) -> None:
    admission = admit(config, "KARNAK-GW      ", "CT01            ", "127.0.0.1")

    assert admission.accepted
    assert admission.node is not None and admission.node.ae_title == "KARNAK-GW"


def test_ae_titles_compare_case_sensitively(config: GatewayConfig) -> None:
    assert admit(config, "karnak-gw", "CT01", "127.0.0.1").diagnostic == CALLED_AE_NOT_RECOGNISED
    assert admit(config, "KARNAK-GW", "ct01", "127.0.0.1").diagnostic == CALLING_AE_NOT_RECOGNISED


def test_spaces_around_configured_ae_titles_are_ignored_too() -> None:
    config = parse_config("forward_nodes:\n  - ae_title: ' KARNAK-GW '\n    sources: [{ae_title: 'CT01  '}]\n")

    assert admit(config, "KARNAK-GW", "CT01", "198.51.100.1").accepted
