"""Karnak-compatible de-identification and tag morphing: profiles, keyed hashes and the engine.

Build a `Deidentifier` once per (destination, project, profile) with `Deidentifier.for_project` and call
`apply(dataset, pseudonym)` for each instance; `load_profile` reads Karnak's profile YAML.
"""

from karnak_dicom.deid.engine import Deidentifier, DeidOutcome, ReplaceApiCall
from karnak_dicom.deid.errors import InstanceExcluded, NoPixelMask, ProfileError
from karnak_dicom.deid.expressions import Expression, ExpressionError, Template
from karnak_dicom.deid.keyed_hashes import (
    hash_pseudonym,
    parse_project_secret,
    patient_id_from_pseudonym,
    scale_hash,
    uid_hash,
)
from karnak_dicom.deid.profile import Mask, Profile, ProfileElement, ReplaceApiElement, load_profile

__all__ = [
    "DeidOutcome",
    "Deidentifier",
    "Expression",
    "ExpressionError",
    "InstanceExcluded",
    "Mask",
    "NoPixelMask",
    "Profile",
    "ProfileElement",
    "ProfileError",
    "ReplaceApiCall",
    "ReplaceApiElement",
    "Template",
    "hash_pseudonym",
    "load_profile",
    "parse_project_secret",
    "patient_id_from_pseudonym",
    "scale_hash",
    "uid_hash",
]
