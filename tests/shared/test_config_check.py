"""`karnak config check` loads every profile and compiles every expression as the processor does at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"
CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: research, type: dicom, ae_title: PACS, hostname: localhost, port: 104,
         deidentification: {project: study-x}}
projects:
  - name: study-x
    secret: 0123456789abcdef0123456789abcdef
    profile: PROFILE
"""
PROFILE_HEAD = "name: p\nversion: '1.0'\nminimumKarnakVersion: '0.9.2'\nprofileElements:\n"


def check(
    tmp_path: Path, profile: str, profile_text: str | None = None, deidentification: str = "{project: study-x}"
) -> subprocess.CompletedProcess[str]:
    if profile_text is not None:
        (tmp_path / profile).write_text(profile_text)
    config = tmp_path / "karnak.yml"
    config.write_text(
        CONFIG.replace("PROFILE", profile).replace(
            "deidentification: {project: study-x}", f"deidentification: {deidentification}"
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "karnak_shared.cli", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_configuration_whose_profiles_compile_is_valid(tmp_path: Path) -> None:
    result = check(tmp_path, "p.yml", (SAMPLES / "profileByDefault.yml").read_text())

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_a_missing_profile_file_is_an_error_naming_the_field_and_its_line(tmp_path: Path) -> None:
    result = check(tmp_path, "missing.yml")

    assert result.returncode != 0
    assert f"projects[0].profile ({tmp_path / 'missing.yml'}): No such file or directory (line 9)" in result.stderr
    assert "valid (" not in result.stdout


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (
            "  - name: Bad expression\n    codename: expression.on.tags\n    arguments:\n"
            '      expr: "Keep("\n    tags:\n      - (0010,0010)\n',
            "profileElements[0] 'Bad expression': ",
        ),
        (
            "  - name: Bad condition\n    codename: action.on.specific.tags\n    action: X\n"
            "    condition: tagValueContain(#Tag.StudyDescription, 'x')\n    tags:\n      - (0010,0010)\n",
            "did you mean 'tagValueContains'?",
        ),
    ],
    ids=["expression", "condition"],
)
def test_an_invalid_expression_in_a_profile_is_an_error_naming_the_element_and_its_line(
    tmp_path: Path, element: str, expected: str
) -> None:
    result = check(tmp_path, "p.yml", PROFILE_HEAD + element)

    assert result.returncode != 0
    (problem,) = [line for line in result.stderr.splitlines() if line.startswith("projects[0].profile")]
    assert expected in problem
    assert problem.endswith("(line 5)")


def test_an_invalid_placeholder_of_an_api_pseudonym_is_an_error_naming_the_field(tmp_path: Path) -> None:
    pseudonym = "{type: api, url: 'http://x.example/{{Kep()}}', response_path: $.id}"
    result = check(
        tmp_path,
        "p.yml",
        (SAMPLES / "profileByDefault.yml").read_text(),
        deidentification=f"{{project: study-x, pseudonym: {pseudonym}}}",
    )

    assert result.returncode != 0
    assert (
        "forward_nodes[0].destinations[0].deidentification.pseudonym.url: unknown function or variable 'Kep' "
        "(did you mean 'Keep'?) at position 19"
    ) in result.stderr
