"""Per-destination routing decisions, and reading what routing needs from an instance's bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from karnak_dicom.instance import DEFER_BYTES, Instance, read_instance
from karnak_dicom.syntaxes import ENCODABLE
from karnak_processor.routing import Deliver, Reject, Router, Skip
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.errors import ConfigError, InvalidInstance

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"

CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: plain, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104}
      - {id: disabled, type: dicom, ae_title: OFFLINE, hostname: offline.example, port: 104, enabled: false}
      - id: mr-only
        type: dicom
        ae_title: MR
        hostname: mr.example
        port: 104
        authorized_sop_classes: ['1.2.840.10008.5.1.4.1.1.4']
      - id: research
        type: stow
        url: https://dicomweb.example/studies
        condition: "tagValueContains(#Tag.StudyDescription, 'RESEARCH')"
  - ae_title: OTHER-GW
    destinations: []
"""

PROJECT = "projects: [{name: study-x, secret: 0123456789abcdef0123456789abcdef, profile: p.yml}]\n"


@pytest.fixture
def config() -> GatewayConfig:
    return parse_config(CONFIG)


@pytest.fixture
def router(config: GatewayConfig) -> Router:
    return Router(config)


def decisions(router: Router, instance: Instance) -> dict[str, Deliver | Reject | Skip]:
    return {decision.destination.id: decision for decision in router.decide("KARNAK-GW", instance)}


# --- Router ----------------------------------------------------------------------------------------


def test_one_decision_per_destination_in_configuration_order(router: Router, part10: Callable[..., bytes]) -> None:
    ids = [d.destination.id for d in router.decide("KARNAK-GW", read_instance(part10()))]

    assert ids == ["plain", "disabled", "mr-only", "research"]


def test_disabled_destination_is_skipped(router: Router, part10: Callable[..., bytes]) -> None:
    decision = decisions(router, read_instance(part10()))["disabled"]

    assert isinstance(decision, Skip)


def test_destination_without_gates_delivers_the_same_bytes_unchanged(
    router: Router, part10: Callable[..., bytes]
) -> None:
    data = part10()

    decision = decisions(router, read_instance(data))["plain"]

    assert isinstance(decision, Deliver)
    assert decision.part10 == data
    assert decision.unchanged is True


def test_sop_class_not_authorized_is_rejected_naming_class_and_destination(
    router: Router, part10: Callable[..., bytes]
) -> None:
    decision = decisions(router, read_instance(part10(sop_class_uid=CT)))["mr-only"]

    assert isinstance(decision, Reject)
    assert decision.reason == f"SOP Class {CT} is not authorized for destination mr-only"


def test_authorized_sop_class_is_delivered(router: Router, part10: Callable[..., bytes]) -> None:
    data = part10(sop_class_uid=MR)

    decision = decisions(router, read_instance(data))["mr-only"]

    assert isinstance(decision, Deliver)
    assert decision.part10 == data


def test_false_condition_is_rejected_naming_the_condition(router: Router, part10: Callable[..., bytes]) -> None:
    decision = decisions(router, read_instance(part10(study_description="ROUTINE CHEST")))["research"]

    assert isinstance(decision, Reject)
    assert decision.reason == (
        "Condition of destination research is not met: tagValueContains(#Tag.StudyDescription, 'RESEARCH')"
    )


def test_true_condition_delivers_the_same_bytes(router: Router, part10: Callable[..., bytes]) -> None:
    data = part10(study_description="RESEARCH BRAIN")

    decision = decisions(router, read_instance(data))["research"]

    assert isinstance(decision, Deliver)
    assert decision.part10 == data


def test_disabled_destination_is_skipped_before_its_gates(part10: Callable[..., bytes]) -> None:
    config = parse_config(
        "forward_nodes:\n  - ae_title: GW\n    destinations:\n"
        "      - {id: offline, type: dicom, ae_title: A, hostname: h, port: 1, enabled: false,\n"
        "         condition: \"tagIsPresent(#Tag.AccessionNumber)\", authorized_sop_classes: ['1.2.3']}\n"
    )

    (decision,) = Router(config).decide("GW", read_instance(part10()))

    assert isinstance(decision, Skip)


def test_known_forward_nodes(router: Router) -> None:
    assert router.knows("KARNAK-GW")
    assert router.knows("OTHER-GW")
    assert not router.knows("NOBODY")


def test_forward_node_without_destinations_decides_nothing(router: Router, part10: Callable[..., bytes]) -> None:
    assert list(router.decide("OTHER-GW", read_instance(part10()))) == []


def test_router_accepts_a_forward_node_object(
    router: Router, config: GatewayConfig, part10: Callable[..., bytes]
) -> None:
    node = config.forward_nodes[0]

    assert len(list(router.decide(node, read_instance(part10())))) == 4


def test_a_deidentifying_destination_whose_profile_is_missing_is_refused_naming_the_project(
    tmp_path: Path,
) -> None:
    config = parse_config(
        CONFIG.replace("port: 104}\n", "port: 104, deidentification: {project: study-x}}\n", 1) + PROJECT
    )

    with pytest.raises(ConfigError) as caught:
        Router(config, base_dir=tmp_path)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"projects[0].profile ({tmp_path / 'p.yml'}): ")
    assert "No such file" in caught.value.problems[0]


def test_tag_morphing_with_a_loadable_profile_builds_its_route(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(
        "name: morph\nversion: '1.0'\nminimumKarnakVersion: '0.9.2'\nprofileElements:\n"
        "  - name: keep everything\n    codename: action.on.specific.tags\n    action: K\n"
        "    tags: ['(0010,0010)']\n"
    )
    config = parse_config(CONFIG.replace("port: 104}\n", "port: 104, tag_morphing: {project: study-x}}\n", 1) + PROJECT)

    router = Router(config, base_dir=tmp_path)

    route = router.route(config.forward_nodes[0].ae_title, config.forward_nodes[0].destinations[0].id)
    assert route is not None and route.transformation.deidentifier is not None
    assert route.transformation.deidentifier.tag_morphing


@pytest.mark.parametrize("syntax", [s.uid for s in ENCODABLE])
def test_every_syntax_the_configuration_accepts_is_one_the_router_runs(syntax: str) -> None:
    config = parse_config(CONFIG.replace("enabled: false}", f"enabled: false, transfer_syntax: {syntax}}}"))

    router = Router(config)

    route = router.route("KARNAK-GW", "disabled")
    assert route is not None and route.transformation.requested_syntax == syntax


def test_a_retired_syntax_is_refused_by_the_configuration_before_any_router() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("enabled: false}", "enabled: false, transfer_syntax: 1.2.840.10008.1.2.4.55}"))

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("forward_nodes[0].destinations[1].transfer_syntax: ")
    assert "JPEG Full Progression" in caught.value.problems[0]
    assert "retired in DICOM" in caught.value.problems[0]


# --- read_instance ---------------------------------------------------------------------------------


def test_read_instance_gives_the_identifiers_and_the_transfer_syntax(part10: Callable[..., bytes]) -> None:
    data = part10()

    instance = read_instance(data)

    assert instance.part10 is data
    assert instance.sop_class_uid == CT
    assert instance.sop_instance_uid == "1.2.826.0.1.3680043.9.7001.1.1"
    assert instance.study_instance_uid == "1.2.826.0.1.3680043.9.7001.1"
    assert instance.series_instance_uid == "1.2.826.0.1.3680043.9.7001.1.0"
    assert instance.transfer_syntax == "1.2.840.10008.1.2.1"


def test_read_instance_does_not_load_large_pixel_data(part10: Callable[..., bytes]) -> None:
    instance = read_instance(part10(pixel_bytes=DEFER_BYTES + 2))

    # Deferred: its offset and length are known (a copy streams it from the source), its value not read.
    assert instance.dataset.get_item("PixelData", keep_deferred=True).value is None


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"\x00" * 200, b"GIF89a" + b"\x01" * 500])
def test_read_instance_on_garbage_says_it_is_not_dicom(garbage: bytes) -> None:
    with pytest.raises(InvalidInstance, match="not a DICOM Part 10 instance"):
        read_instance(garbage)


def test_read_instance_on_bytes_cut_inside_the_file_meta_is_invalid(part10: Callable[..., bytes]) -> None:
    data = part10()

    with pytest.raises(InvalidInstance, match="DICOM"):
        read_instance(data[:150])


def test_read_instance_on_bytes_cut_before_the_identifiers_names_the_cut_element(
    part10: Callable[..., bytes],
) -> None:
    data = part10()
    cut = data.index(b"1.2.840.10008.5.1.4.1.1.2", 200)  # the dataset's SOP Class UID value

    with pytest.raises(InvalidInstance, match=r"truncated instance: element \(0008,0016\) declares 26 bytes"):
        read_instance(data[:cut])


def test_read_instance_on_bytes_cut_inside_the_last_value_is_invalid(part10: Callable[..., bytes]) -> None:
    data = part10()
    series_uid = b"1.2.826.0.1.3680043.9.7001.1.0"
    assert data.endswith(series_uid)  # (0020,000E) is the last element of this instance
    cut = len(data) - len(series_uid) + 11  # keeps '1.2.826.0.1': a well-formed but wrong UID

    with pytest.raises(InvalidInstance):
        read_instance(data[:cut])


def test_read_instance_on_bytes_cut_inside_the_pixel_data_is_invalid(part10: Callable[..., bytes]) -> None:
    data = part10(pixel_bytes=8192)

    with pytest.raises(InvalidInstance):
        read_instance(data[: len(data) - 4000])


def test_read_instance_without_sop_instance_uid_names_the_missing_attribute(
    part10: Callable[..., bytes],
) -> None:
    with pytest.raises(InvalidInstance) as caught:
        read_instance(part10(sop_instance_uid=None))

    assert str(caught.value) == "instance lacks required attributes: SOPInstanceUID"


def test_display_values_are_the_study_level_values_present(part10: Callable[..., bytes]) -> None:
    instance = read_instance(part10())

    assert instance.display_values() == {
        "PatientID": "PAT-0042",
        "StudyDescription": "RESEARCH CT",
        "StudyDate": "20240102",
        "SeriesDescription": "AXIAL 1mm",
    }


def test_display_values_leave_out_absent_attributes(part10: Callable[..., bytes]) -> None:
    instance = read_instance(part10(StudyDate=None, SeriesDescription=None))

    assert instance.display_values() == {"PatientID": "PAT-0042", "StudyDescription": "RESEARCH CT"}


def test_a_changed_copy_of_an_instance_leaves_the_dataset_routing_read_as_it_was(
    part10: Callable[..., bytes], tmp_path: Path
) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(part10(pixel_bytes=DEFER_BYTES + 2))
    instance = read_instance(path)
    pixels = path.read_bytes()[-(DEFER_BYTES + 2) :]

    with instance.open() as stream:
        copy = instance.changeable_dataset(stream)
        copy.PatientID = "PSEUDONYM"
        copy.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
        assert copy.PixelData == pixels  # the deferred value, read from the stream when asked

    assert instance.dataset.PatientID != "PSEUDONYM"
    assert instance.dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert instance.dataset.get_item("PixelData", keep_deferred=True).value is None
