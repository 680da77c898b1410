"""Which Kheops albums an instance matches: album conditions on the original attributes (the processor's part)."""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread

from karnak_processor.albums import matching_albums
from karnak_shared.config import DicomDestination, StowDestination, parse_config
from tests.support.fixtures import make_part10

CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: pacs, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104}
      - id: kheops-main
        type: stow
        url: https://kheops.example/api/studies
        kheops_albums:
          - {url_api: 'https://kheops.example/api', token_destination: d0, token_source: s0}
          - url_api: https://kheops.example/api
            token_destination: d1
            token_source: s1
            condition: "tagValueContains(#Tag.StudyDescription, 'BRAIN')"
          - url_api: https://other.example/api
            token_destination: d2
            token_source: s2
            condition: "tagValueIsPresent(#Tag.PatientID, 'PAT-0042') && tagValueBeginsWith(#Tag.Modality, 'MR')"
      - {id: plain-stow, type: stow, url: 'https://dicomweb.example/studies'}
"""


def _destinations() -> tuple[DicomDestination, StowDestination, StowDestination]:
    node = parse_config(CONFIG).forward_nodes[0]
    dicom, kheops, plain = node.destinations
    assert isinstance(dicom, DicomDestination) and isinstance(kheops, StowDestination)
    assert isinstance(plain, StowDestination)
    return dicom, kheops, plain


def _dataset(**attributes: object) -> object:
    return dcmread(BytesIO(make_part10(**attributes)), stop_before_pixels=True)  # type: ignore[arg-type]


def test_an_album_without_a_condition_matches_every_instance() -> None:
    _, kheops, _ = _destinations()
    assert matching_albums(kheops, _dataset(study_description="CHEST")) == [0]


def test_albums_whose_conditions_hold_are_matched_by_index_in_order() -> None:
    _, kheops, _ = _destinations()
    assert matching_albums(kheops, _dataset(study_description="RESEARCH BRAIN")) == [0, 1]
    assert matching_albums(kheops, _dataset(study_description="RESEARCH BRAIN", Modality="MR")) == [0, 1, 2]


def test_conditions_read_the_attributes_given_so_the_processor_passes_the_original_ones() -> None:
    _, kheops, _ = _destinations()
    # As a de-identified copy would read: another patient id, so album 2 does not match.
    assert matching_albums(kheops, _dataset(Modality="MR", PatientID="5F3A")) == [0]


def test_destinations_without_albums_and_dicom_destinations_match_none() -> None:
    dicom, _, plain = _destinations()
    assert matching_albums(plain, _dataset()) == []
    assert matching_albums(dicom, _dataset()) == []
