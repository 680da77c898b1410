"""The offline commands of `karnak` as a data manager runs them: `deid` and `pseudonyms import|export`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from karnak_dicom.testing import PATIENT_ID, PATIENT_NAME, make_study

PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
SECRET = "0123456789abcdef0123456789abcdef"


def karnak(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("karnak")), *args], capture_output=True, text=True, input=stdin, timeout=120
    )


def _config(tmp_path: Path, pseudonym: dict[str, object] | None = None, condition: str = "") -> Path:
    deid: dict[str, object] = {"project": "study-x"}
    if pseudonym:
        deid["pseudonym"] = pseudonym
    config = {
        "forward_nodes": [
            {
                "ae_title": "KARNAK-GW",
                "destinations": [
                    {
                        "id": "research",
                        "type": "dicom",
                        "ae_title": "PACS",
                        "hostname": "localhost",
                        "port": 104,
                        "condition": condition,
                        "deidentification": deid,
                    }
                ],
            }
        ],
        "projects": [{"name": "study-x", "secret": SECRET, "profile": str(PROFILE)}],
        "database": {"url": f"sqlite:///{tmp_path / 'karnak.db'}"},
    }
    path = tmp_path / "karnak.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_deid_writes_the_copies_the_destination_would_receive(tmp_path: Path) -> None:
    study = make_study(tmp_path / "in", ct=2, mr=2, multiframe=0, large=0, compressed=0)
    config = _config(tmp_path)

    result = karnak(
        "deid",
        "--config",
        str(config),
        "--destination",
        "research",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
    )

    assert result.returncode == 0, result.stderr
    assert "4 sent, 0 rejected, 0 failed" in result.stdout
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == len(study.paths)
    for path in outputs:
        data = path.read_bytes()
        assert PATIENT_NAME.encode() not in data and PATIENT_ID.encode() not in data
        assert dcmread(path).PatientIdentityRemoved == "YES"


def test_deid_reports_rejections_with_their_reason(tmp_path: Path) -> None:
    make_study(tmp_path / "in", ct=1, mr=0, multiframe=0, large=0, compressed=0)
    config = _config(tmp_path, condition="tagValueContains(#Tag.StudyDescription, 'CARDIO')")

    result = karnak(
        "deid",
        "--config",
        str(config),
        "--destination",
        "research",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
    )

    assert result.returncode == 0, result.stderr
    assert "Condition of destination research is not met" in result.stdout
    assert list((tmp_path / "out").iterdir()) == []


def test_deid_names_an_unknown_destination(tmp_path: Path) -> None:
    result = karnak(
        "deid", "--config", str(_config(tmp_path)), "--destination", "nope", str(tmp_path), "--out", str(tmp_path / "o")
    )

    assert result.returncode == 2
    assert "no destination with id 'nope'" in result.stderr


def test_pseudonyms_imported_from_csv_are_used_and_exported_again(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(f"patient_id,issuer_of_patient_id,pseudonym\n{PATIENT_ID},,RESEARCH-0042\n")
    config = _config(tmp_path, pseudonym={"type": "cache"})

    imported = karnak("pseudonyms", "import", str(tmp_path / "in.csv"), "--project", "study-x", "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 pseudonym" in imported.stdout

    make_study(tmp_path / "in", ct=1, mr=0, multiframe=0, large=0, compressed=0)
    result = karnak(
        "deid",
        "--config",
        str(config),
        "--destination",
        "research",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (copy,) = (tmp_path / "out").iterdir()
    assert str(dcmread(copy).PatientName) == "RESEARCH-0042"

    exported = karnak("pseudonyms", "export", "-", "--project", "study-x", "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    assert f"{PATIENT_ID}" in exported.stdout and "RESEARCH-0042" in exported.stdout


def test_a_cache_miss_rejects_the_instance_without_naming_the_patient(tmp_path: Path) -> None:
    make_study(tmp_path / "in", ct=1, mr=0, multiframe=0, large=0, compressed=0)
    config = _config(tmp_path, pseudonym={"type": "cache"})

    result = karnak(
        "deid",
        "--config",
        str(config),
        "--destination",
        "research",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
    )

    assert result.returncode == 0, result.stderr
    assert "0 sent, 1 rejected" in result.stdout
    assert PATIENT_ID not in result.stdout


@pytest.mark.parametrize("kind,args,stdin,expected", [("basic", ["alice"], "s3cret\n", "Basic YWxpY2U6czNjcmV0")])
def test_headers_prints_the_karnak_form(kind: str, args: list[str], stdin: str, expected: str) -> None:
    result = karnak("headers", kind, *args, stdin=stdin)

    assert result.returncode == 0, result.stderr
    assert "<key>Authorization</key>" in result.stdout
    assert f"<value>{expected}</value>" in result.stdout
    assert "s3cret" not in result.stdout
