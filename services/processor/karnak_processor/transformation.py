"""Making one destination's copy of an instance: de-identification or tag morphing, then its transfer syntax.

A `Transformation` is built once per destination at start-up (profile loaded, engine compiled, pseudonym
source opened) and applied to each instance. Its outcomes are the processor's to translate:
- `Transformed`: the bytes to send, with the UIDs and display values as sent, and `syntax_fallback` saying
  why it is in Explicit VR Little Endian when the destination's syntax cannot carry its pixel data;
- `PseudonymMissing`, `InstanceExcluded` (and `NoPixelMask`): the instance is rejected for this destination;
- `PseudonymUnavailable`, and `ReplaceApiFailed` when transient (an ``action.replace.api`` service answering
  5xx or unreachable): the instance is retried later;
- any other `KarnakError` (a profile action or a codec that fails on this instance): the destination's copy
  is parked, and the original is never sent in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset

from karnak_dicom.deid import Deidentifier, uid_hash
from karnak_dicom.instance import DEFER_BYTES, DISPLAY_KEYWORDS, Instance
from karnak_dicom.transcoding import SyntaxNotCarried, encode_part10, plan_syntax, transcode
from karnak_processor.pseudonyms import PseudonymSource, SessionFactory, pseudonym_source
from karnak_processor.replace_api import replace_api_caller
from karnak_shared.config import DicomDestination, GatewayConfig, StowDestination
from karnak_shared.envelope import TransferOrigin
from karnak_shared.errors import BlobStoreError, ConfigError
from karnak_shared.profiles import compile_destination

AnyDestination = DicomDestination | StowDestination

__all__ = ["DEFER_BYTES", "Transformation", "Transformed", "build_transformation"]


@dataclass(frozen=True)
class Transformed:
    """A destination's copy: its Part 10 bytes and the identifiers as sent."""

    part10: bytes
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax: str
    display: dict[str, str]
    syntax_fallback: str | None = None


@dataclass(frozen=True)
class Transformation:
    """De-identification or tag morphing (or neither) and the transfer syntax of one destination."""

    destination_id: str
    deidentifier: Deidentifier | None
    pseudonyms: PseudonymSource | None
    requested_syntax: str
    only_uncompressed: bool

    def origin(self, instance: Instance, display_sent: dict[str, str], original_identifiers: bool) -> TransferOrigin:
        """What the monitor keeps of `instance` for this destination (DESIGN.md section 16).

        `display_sent` are the display values of the copy as sent (empty when none was made). The original
        PatientID and AccessionNumber travel only when `original_identifiers` (the monitor's setting).
        """
        dataset = instance.dataset

        def text(keyword: str) -> str:
            try:
                value = dataset.get(keyword)
            except Exception:  # noqa: BLE001 - a malformed element: the monitor shows it empty
                return ""
            return "" if value is None else str(value)

        morphing = self.deidentifier is not None and self.deidentifier.tag_morphing
        deidentifying = self.deidentifier is not None and not morphing
        return TransferOrigin(
            study_instance_uid=instance.study_instance_uid,
            series_instance_uid=instance.series_instance_uid,
            modality=text("Modality"),
            study_description=text("StudyDescription"),
            series_description=text("SeriesDescription"),
            study_date=text("StudyDate"),
            patient_id=text("PatientID") if original_identifiers else None,
            accession_number=text("AccessionNumber") if original_identifiers else None,
            patient_id_sent=display_sent.get("PatientID", "") if deidentifying else text("PatientID"),
            accession_number_sent="" if deidentifying else text("AccessionNumber"),
            deidentified=deidentifying,
            tag_morphed=morphing,
        )

    def identifiers_for_events(self, instance: Instance) -> tuple[str, str, str, dict[str, str]]:
        """(SOP instance, study, series UIDs, display values) to report an instance that got no copy.

        For a de-identifying destination the originals are identifying: report the UIDs as the profile's
        UID hash would send them and no display values, so an email never shows the original patient.
        """
        if self.deidentifier is None or self.deidentifier.tag_morphing:
            return (
                instance.sop_instance_uid,
                instance.study_instance_uid,
                instance.series_instance_uid,
                instance.display_values(),
            )
        secret = self.deidentifier.secret
        return (
            uid_hash(secret, instance.sop_instance_uid),
            uid_hash(secret, instance.study_instance_uid),
            uid_hash(secret, instance.series_instance_uid),
            {},
        )

    def changes(self, instance: Instance) -> bool:
        """Whether the copy differs from the bytes received (otherwise they are sent as they came)."""
        if self.deidentifier is not None:
            return True
        planned = plan_syntax(instance.transfer_syntax, self.requested_syntax, self.only_uncompressed)
        return planned != instance.transfer_syntax

    def apply(self, instance: Instance) -> Transformed:
        """Make the destination's copy; raises as the module docstring says."""
        # Large values (the pixel data) stay where they were received (blob file or message body) until
        # written into the copy: the copy is the only one in memory.
        try:
            with instance.open() as stream:
                # The dataset routing read, not a second parse: values over DEFER_BYTES (the pixel data)
                # are read only when something needs them (pixel cleaning, transcoding) or as written.
                dataset = instance.changeable_dataset(stream)
                if self.deidentifier is not None:
                    pseudonym = self.pseudonyms.pseudonym_for(dataset) if self.pseudonyms is not None else None
                    self.deidentifier.apply(dataset, pseudonym)
                syntax = str(dataset.file_meta.TransferSyntaxUID)
                planned = plan_syntax(syntax, self.requested_syntax, self.only_uncompressed)
                fallback = None
                if planned != syntax:
                    try:
                        transcode(dataset, planned)
                    except SyntaxNotCarried as exc:
                        # Sent whole in Explicit VR Little Endian (the dataset is left so), never narrowed to fit.
                        fallback = f"{exc.reason}: sent in Explicit VR Little Endian instead"
                part10 = encode_part10(dataset, source=stream)
        except OSError as exc:
            if exc.errno is None:
                raise  # pydicom's own complaint about a value (it raises OSError): parked as a failed copy
            # Reading the blob file (deferred values) failed: tried again, never parked for it.
            raise BlobStoreError(f"cannot read the instance's blob: {exc.strerror}") from None
        return Transformed(
            part10=part10,
            sop_instance_uid=str(dataset.SOPInstanceUID),
            study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
            series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
            transfer_syntax=str(dataset.file_meta.TransferSyntaxUID),
            display=_display_values(dataset),
            syntax_fallback=fallback,
        )


def _display_values(dataset: Dataset) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword in DISPLAY_KEYWORDS:
        value = dataset.get(keyword)
        if value is not None:
            values[keyword] = str(value)
    return values


def build_transformation(
    config: GatewayConfig,
    destination: AnyDestination,
    where: str,
    base_dir: Path,
    session_factory: SessionFactory | None,
) -> Transformation:
    """The transformation of a destination; raises `ConfigError` naming the field (`where`) when it cannot work."""
    compiled = compile_destination(config, destination, where, base_dir, replace_api_caller)
    deidentifier, profile, project = compiled.deidentifier, compiled.profile, compiled.project
    if deidentifier is None or profile is None or project is None:
        return Transformation(
            destination.id, None, None, destination.transfer_syntax, destination.transcode_only_uncompressed
        )
    secret = compiled.secret
    pseudonyms = None
    if destination.deidentification is not None:
        issuer = destination.deidentification.issuer_of_patient_id or profile.default_issuer_of_patient_id
        try:
            pseudonyms = pseudonym_source(
                config.pseudonym_with_credentials(destination.deidentification.pseudonym),
                secret,
                session_factory,
                issuer,
                project=project.name,
            )
        except ConfigError as exc:
            raise ConfigError([f"{where}.deidentification.{p}" for p in exc.problems]) from None
    return Transformation(
        destination.id, deidentifier, pseudonyms, destination.transfer_syntax, destination.transcode_only_uncompressed
    )
