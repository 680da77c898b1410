"""Compiling what a configuration names: each project's profile, each destination's de-identifier.

The processor builds its destinations with these functions at start-up, and `karnak config check` runs the
very same ones, so a configuration the check calls valid is one the processor starts with: a profile file
that is missing, an element or an expression that does not compile, a secret of the wrong size or a
transfer syntax no encoder can write is an error naming the field (and the line) either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from karnak_dicom.deid import Deidentifier, Profile, ProfileError, load_profile, parse_project_secret
from karnak_dicom.deid.expressions import ExpressionError, Template
from karnak_dicom.transcoding import check_requested_syntax
from karnak_shared.config import DicomDestination, GatewayConfig, Project, Pseudonym, StowDestination
from karnak_shared.errors import ConfigError, KarnakError

AnyDestination = DicomDestination | StowDestination

__all__ = ["CompiledDestination", "compile_destination", "compile_every_destination", "load_project_profile"]


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
    config: GatewayConfig, destination: AnyDestination, where: str, base_dir: Path
) -> CompiledDestination:
    """Check the destination's transfer syntax, load its project's profile and compile its engine."""
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
    try:
        secret = parse_project_secret(project.secret.get_secret_value())
        deidentifier = Deidentifier.for_project(
            profile, project.name, secret, tag_morphing=destination.tag_morphing is not None
        )
    except ConfigError as exc:
        raise ConfigError([f"{where}.{field}: {p}" for p in exc.problems]) from None
    if destination.deidentification is not None:
        _compile_pseudonym_templates(destination.deidentification.pseudonym, f"{where}.deidentification.pseudonym")
    return CompiledDestination(project, profile, secret, deidentifier)


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
