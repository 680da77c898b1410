"""Compiling what a configuration names: each project's profile, each destination's de-identifier.

The processor builds its destinations with these functions at start-up, and `karnak config check` runs the
very same ones, so a configuration the check calls valid is one the processor starts with: a profile file
that is missing, an element or an expression that does not compile, a secret of the wrong size or a
transfer syntax no encoder can write is an error naming the field (and the line) either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset

from karnak_dicom.deid import (
    Deidentifier,
    Profile,
    ProfileError,
    ReplaceApiCall,
    ReplaceApiElement,
    load_profile,
    parse_project_secret,
)
from karnak_dicom.deid.expressions import ExpressionError, Template
from karnak_dicom.transcoding import check_requested_syntax
from karnak_shared.config import AuthConfig, DicomDestination, GatewayConfig, Project, Pseudonym, StowDestination
from karnak_shared.errors import ConfigError, KarnakError

AnyDestination = DicomDestination | StowDestination

ReplaceApiFactory = Callable[[Profile, Sequence[AuthConfig]], ReplaceApiCall]
"""Builds the caller of a profile's ``action.replace.api`` elements from the configuration's auth configs:
the processor passes its HTTP one (`karnak_processor.replace_api.replace_api_caller`)."""

__all__ = [
    "CompiledDestination",
    "ReplaceApiFactory",
    "compile_destination",
    "compile_every_destination",
    "load_project_profile",
]


class ApiNotCalledHere(KarnakError):
    """Raised by the caller of a check (`karnak config check`): only the processor calls profile APIs."""


def _checking_only(element: ReplaceApiElement, dataset: Dataset) -> dict[int, str]:
    raise ApiNotCalledHere(f"{element.label}: action.replace.api is called by the processor only")


@dataclass(frozen=True)
class CompiledDestination:
    """A destination's profile and engine (None for one that sends the instance as it came)."""

    project: Project | None
    profile: Profile | None
    secret: bytes
    deidentifier: Deidentifier | None


def load_project_profile(config: GatewayConfig, index: int, base_dir: Path) -> Profile:
    """Load `projects[index]`'s profile; `ConfigError` naming ``projects[i].profile`` and its problems."""
    # A revision carries the profile's text; a file names a profile file (relative to its folder).
    source = config.projects[index].profile_source(base_dir)
    field = f"projects[{index}].profile ({source if isinstance(source, Path) else 'text of the revision'})"
    if isinstance(source, Path) and not source.exists():
        # The mistake is in the configuration (a wrong path): name its line there.
        raise ConfigError(config.locate(("projects", index, "profile"), "No such file or directory", name=field))
    try:
        return load_profile(source)
    except ProfileError as exc:
        # Problems inside the profile name their element and their line in the profile file.
        raise ConfigError([f"{field}: {problem}" for problem in exc.problems]) from None


def compile_destination(
    config: GatewayConfig,
    destination: AnyDestination,
    where: str,
    base_dir: Path,
    replace_api: ReplaceApiFactory | None = None,
) -> CompiledDestination:
    """Check the destination's transfer syntax, load its project's profile and compile its engine.

    A profile with ``action.replace.api`` elements needs `replace_api` to run; without it (a check) the
    elements are checked against the auth configs and the engine is built with a caller that refuses."""
    try:
        check_requested_syntax(destination.transfer_syntax)
    except KarnakError as exc:
        raise ConfigError(f"{where}.transfer_syntax: {exc}") from None
    settings = destination.deidentification or destination.tag_morphing
    if settings is None:
        return CompiledDestination(None, None, b"", None)
    field = "deidentification" if destination.deidentification is not None else "tag_morphing"
    index = next(i for i, p in enumerate(config.projects) if p.name == settings.project)
    project = config.projects[index]
    profile = load_project_profile(config, index, base_dir)
    caller = _replace_api_caller(config, index, profile, replace_api)
    try:
        secret = parse_project_secret(project.secret.get_secret_value())
        deidentifier = Deidentifier.for_project(
            profile, project.name, secret, tag_morphing=destination.tag_morphing is not None, replace_api=caller
        )
    except ConfigError as exc:
        raise ConfigError([f"{where}.{field}: {p}" for p in exc.problems]) from None
    if destination.deidentification is not None:
        _compile_pseudonym_templates(destination.deidentification.pseudonym, f"{where}.deidentification.pseudonym")
    return CompiledDestination(project, profile, secret, deidentifier)


def _replace_api_caller(
    config: GatewayConfig, index: int, profile: Profile, replace_api: ReplaceApiFactory | None
) -> ReplaceApiCall | None:
    """The caller of the profile's API elements, once each names an auth config that exists."""
    elements = [e for e in profile.elements if isinstance(e, ReplaceApiElement)]
    if not elements:
        return None
    codes = {auth.code for auth in config.auth_configs}
    field = f"projects[{index}].profile"
    problems = [
        f"{field}: {e.label}: arguments.authConfig: no auth config '{e.auth_config}' in auth_configs"
        for e in elements
        if e.auth_config and e.auth_config not in codes
    ]
    if problems:
        raise ConfigError(problems)
    return _checking_only if replace_api is None else replace_api(profile, config.auth_configs)


def _compile_pseudonym_templates(pseudonym: Pseudonym, where: str) -> None:
    """An ``api`` pseudonym's URL and body placeholders, compiled in the language's template dialect."""
    if pseudonym.type != "api":
        return
    problems = []
    for field, text in (("url", pseudonym.url), ("body", pseudonym.body)):
        if text is not None:
            try:
                Template(str(text))
            except ExpressionError as exc:
                problems.append(f"{where}.{field}: {exc}")
    if problems:
        raise ConfigError(problems)


def compile_every_destination(config: GatewayConfig, base_dir: Path) -> list[str]:
    """Every problem of every project's profile and every destination, as `karnak config check` lists them."""
    problems: list[str] = []
    used = {s.project for _, d in config.destinations() for s in (d.deidentification, d.tag_morphing) if s}
    for index, project in enumerate(config.projects):
        if project.name not in used:  # a destination's compilation loads the others
            try:
                load_project_profile(config, index, base_dir)
            except ConfigError as exc:
                problems.extend(exc.problems)
    reported: set[str] = set()
    for n, node in enumerate(config.forward_nodes):
        for d, destination in enumerate(node.destinations):
            try:
                compile_destination(config, destination, f"forward_nodes[{n}].destinations[{d}]", base_dir)
            except ConfigError as exc:
                # A project's broken profile is the same problem for each of its destinations: say it once.
                problems.extend(p for p in exc.problems if p not in reported)
                reported.update(exc.problems)
    return problems
