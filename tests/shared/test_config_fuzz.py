"""Configuration fuzzing: wrong types, bad AE titles, ports, URLs, conditions, TLS settings and profiles.

Whatever the file holds, loading it gives a configuration or a `ConfigError` whose every line names the
field (`forward_nodes[0].destinations[1].port: ... (line 12)`): never a Python traceback, never a secret.
A table pins the messages of typical mistakes; a generated set (a fixed seed, so every run tries the same
cases) mutates a rich valid file and Karnak's sample profiles and checks those properties on each result.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from karnak_dicom_sender.sender import peers
from karnak_processor.routing import Router
from karnak_receiver.listener import tls_context
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.errors import ConfigError

PROFILES = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"
SECRET_ENV = "KARNAK_FUZZ_PROJECT_SECRET"
SECRET = "5e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7"
TOKEN_ENV = "KARNAK_FUZZ_KHEOPS_TOKEN"
TOKEN = "kheops-token-that-must-never-be-shown"

BASE: dict[str, Any] = {
    "listener": {
        "host": "127.0.0.1",
        "port": 11112,
        "max_pdu_bytes": 131072,
        "max_associations": 8,
        "tls": {"certificate": "/etc/karnak/listener.crt", "private_key": "/etc/karnak/listener.key"},
    },
    "forward_nodes": [
        {
            "ae_title": "KARNAK-GW",
            "sources": [{"ae_title": "CT01", "hostname": "ct01.example"}, {"ae_title": "MR01"}],
            "destinations": [
                {
                    "id": "research-pacs",
                    "type": "dicom",
                    "ae_title": "PACS",
                    "hostname": "pacs.example",
                    "port": 104,
                    "condition": "tagValueContains(#Tag.StudyDescription, 'RESEARCH') && !tagIsPresent('0010,1010')",
                    "authorized_sop_classes": ["1.2.840.10008.5.1.4.1.1.2"],
                    "transfer_syntax": "keep",
                    "deidentification": {"project": "study-x", "pseudonym": {"type": "hash"}},
                    "notifications": {"emails": ["a@b.ch"], "interval": 45},
                    "tls": {"ca_certificates": "/etc/karnak/pacs-ca.crt", "verify_hostname": True},
                },
                {
                    "id": "kheops-main",
                    "type": "stow",
                    "url": "https://kheops.example/api/studies",
                    "headers": {"Authorization": f"Bearer ${{{TOKEN_ENV}}}"},
                    "kheops_albums": [
                        {
                            "url_api": "https://kheops.example/api",
                            "token_destination": f"${{{TOKEN_ENV}}}",
                            "token_source": f"${{{TOKEN_ENV}}}",
                            "condition": "tagValueBeginsWith(#Tag.Modality, 'CT')",
                        }
                    ],
                },
            ],
        },
        {"ae_title": "KARNAK-2", "destinations": []},
    ],
    "projects": [
        {"name": "study-x", "secret": f"${{{SECRET_ENV}}}", "profile": str(PROFILES / "profileByDefault.yml")}
    ],
    "smtp": {"host": "smtp.example", "port": 25, "sender": "karnak@example.org"},
    "broker": {"url": "amqp://guest:guest@localhost:5672/", "prefix": "karnak", "retry_delays": [5, 30]},
    "blob_store": {"path": "/var/lib/karnak/blobs", "max_inline_bytes": 65536},
    "dicom_sender": {"dimse_timeout": 30, "idle_release_seconds": 5},
    "metrics": {"host": "0.0.0.0", "ports": {"receiver": 9101, "processor": 9102}},
    "logging": {"level": "INFO", "format": "kv"},
}

# `field.path: message (line N)`: a dotted path of keys and [indexes], or (top level).
PROBLEM = re.compile(r"^(?P<path>\(top level\)|[A-Za-z_][\w-]*(?:\[\d+\]|\.[\w-]+)*): (?P<message>.+) \(line \d+\)$")


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def _text(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def test_the_base_configuration_of_the_generated_set_is_valid_and_routable() -> None:
    config = parse_config(_text(BASE))
    Router(config)
    assert config.listener.tls is not None and config.listener.tls.require_client_certificate is False


# --- typical mistakes: exact messages ---------------------------------------------------------------


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at `path` (e.g. "forward_nodes[0].destinations[0].port") replaced; DELETE removes it."""
    config = copy.deepcopy(BASE)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = config
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return config


DELETE = object()
D0 = "forward_nodes[0].destinations[0]"
D1 = "forward_nodes[0].destinations[1]"

TABLE: list[tuple[str, Any, str]] = [
    ("listener.port", "eleven", "listener.port: input should be a valid integer"),
    ("listener.port", 70000, "listener.port: must be between 1 and 65535"),
    ("listener.port", -1, "listener.port: must be between 1 and 65535"),
    ("listener.port", 104.5, "listener.port: input should be a valid integer"),
    ("listener.max_associations", 0, "listener.max_associations: input should be greater than 0"),
    ("listener.host", ["a", "b"], "listener.host: input should be a valid string"),
    ("forward_nodes", {"ae_title": "X"}, "forward_nodes: input should be a valid list"),
    ("forward_nodes", [], "forward_nodes: list should have at least 1 item"),
    ("forward_nodes[0].ae_title", "", "forward_nodes[0].ae_title: an AE title must have 1 to 16 characters"),
    ("forward_nodes[0].ae_title", "A" * 17, "forward_nodes[0].ae_title: an AE title must have 1 to 16 characters"),
    ("forward_nodes[0].ae_title", "BAD\\AE", "forward_nodes[0].ae_title: an AE title may not contain a backslash"),
    ("forward_nodes[0].ae_title", "TAB\tAE", "forward_nodes[0].ae_title: an AE title may not contain a backslash"),
    ("forward_nodes[0].ae_title", 1234, "forward_nodes[0].ae_title: input should be a valid string"),
    ("forward_nodes[1].ae_title", "KARNAK-GW", "forward_nodes[1].ae_title: 'KARNAK-GW' is already the AE title"),
    ("forward_nodes[0].sources[0].ae_title", "", "forward_nodes[0].sources[0].ae_title: an AE title must have"),
    ("forward_nodes[0].sources", "CT01", "forward_nodes[0].sources: input should be a valid list"),
    (f"{D0}.port", 0, f"{D0}.port: must be between 1 and 65535"),
    (f"{D0}.port", "104x", f"{D0}.port: input should be a valid integer"),
    (f"{D0}.port", None, f"{D0}.port: input should be a valid integer"),
    (f"{D0}.hostname", DELETE, f"{D0}.hostname: is required"),
    (f"{D0}.ae_title", "PACS WITH A VERY LONG TITLE", f"{D0}.ae_title: an AE title must have 1 to 16 characters"),
    (f"{D0}.type", "ftp", f"{D0}.type: must be one of: dicom, stow"),
    (f"{D0}.id", "Research_PACS", f"{D0}.id: must be 1 to 64 characters of a-z, 0-9 and '-'"),
    (f"{D0}.id", "kheops-main", f"{D1}.id: 'kheops-main' is already used by {D0}"),
    (f"{D0}.enabled", "perhaps", f"{D0}.enabled: input should be a valid boolean"),
    (f"{D0}.condition", "tagValueContains(#Tag.StudyDescriptio, 'X')", f"{D0}.condition: invalid condition: "),
    (f"{D0}.condition", "tagIsPresent('0010,0010'", f"{D0}.condition: invalid condition: "),
    (f"{D0}.condition", "tagValueIsPresent(#Tag.PatientID)", f"{D0}.condition: invalid condition: "),
    (f"{D0}.authorized_sop_classes", ["1.2.abc"], f"{D0}.authorized_sop_classes[0]: '1.2.abc' is not a DICOM UID"),
    (f"{D0}.transfer_syntax", "jpeg", f"{D0}.transfer_syntax: 'jpeg' is not a DICOM UID"),
    (f"{D0}.deidentification.project", "nope", f"{D0}.deidentification.project: no project named 'nope'"),
    (f"{D0}.tag_morphing", {"project": "study-x"}, f"{D0}: deidentification and tag_morphing are mutually exclusive"),
    (f"{D0}.deidentification.pseudonym.type", "guess", f"{D0}.deidentification.pseudonym.type: input should be"),
    (f"{D0}.notifications.emails", ["not-an-email"], f"{D0}.notifications.emails[0]: 'not-an-email' is not an email"),
    (f"{D0}.notifications.interval", -5, f"{D0}.notifications.interval: input should be greater than 0"),
    (f"{D0}.tls.verify_hostname", "sometimes", f"{D0}.tls.verify_hostname: input should be a valid boolean"),
    (f"{D0}.tls.certificate", "/etc/karnak/client.crt", f"{D0}.tls.private_key: is required with certificate"),
    (f"{D0}.tls.private_key", "/etc/karnak/client.key", f"{D0}.tls.private_key: needs certificate"),
    (f"{D0}.tls.ca_file", "/etc/ca.crt", f"{D0}.tls.ca_file: unknown field (check its spelling)"),
    (
        f"{D1}.url",
        "ftp://kheops.example/api",
        f"{D1}.url: 'ftp://kheops.example/api' is not an http:// or https:// URL",
    ),
    (f"{D1}.url", "kheops.example", f"{D1}.url: 'kheops.example' is not an http:// or https:// URL"),
    (f"{D1}.kheops_albums[0].url_api", "//x", f"{D1}.kheops_albums[0].url_api: '//x' is not an http"),
    (f"{D1}.kheops_albums[0].condition", "tagIsPresent(", f"{D1}.kheops_albums[0].condition: invalid condition"),
    (f"{D1}.tls", {"verify_hostname": False}, f"{D1}.tls: unknown field (check its spelling)"),
    ("listener.tls.private_key", DELETE, "listener.tls.private_key: is required"),
    ("listener.tls.require_client_certificate", True, "listener.tls.ca_certificates: is required when"),
    ("listener.tls.require_client_certificate", "always", "listener.tls.require_client_certificate: input should"),
    ("projects[0].secret", "0123", "projects[0].secret: must be 32 hexadecimal digits (dashes allowed)"),
    ("projects[0].secret", "${KARNAK_FUZZ_UNSET_VARIABLE}", "projects[0].secret: environment variable KARNAK_FUZZ_"),
    ("projects[0].secret", "${file:/nonexistent/secret}", "projects[0].secret: cannot read secret file /nonexistent"),
    ("smtp.port", 99999, "smtp.port: must be between 1 and 65535"),
    ("smtp.sender", "karnak", "smtp.sender: 'karnak' is not an email address"),
    ("broker.prefix", "karnak queues", "broker.prefix: string should match pattern"),
    ("broker.retry_delays", [], "broker.retry_delays: list should have at least 1 item"),
    ("broker.retry_delays", [5, 5], "broker.retry_delays: retry delays must be distinct"),
    ("broker.retry_delays", [0], "broker.retry_delays[0]: input should be greater than 0"),
    ("metrics.ports", {"receiver": 0}, "metrics.ports.receiver: must be between 1 and 65535"),
    ("logging.level", "TRACE", "logging.level: input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("listner", {"port": 1}, "listner: unknown field (check its spelling)"),
]


@pytest.mark.parametrize("path,value,expected", TABLE, ids=[f"{p}={v!r}"[:60] for p, v, _ in TABLE])
def test_a_typical_mistake_is_reported_naming_its_field_and_line(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_text(_with(path, value)))
    problems = caught.value.problems
    assert any(problem.startswith(expected) for problem in problems), problems
    for problem in problems:
        assert PROBLEM.match(problem), problem
        assert SECRET not in problem and TOKEN not in problem


@pytest.mark.parametrize(
    "value,expected",
    [
        (
            "/nonexistent/listener.crt",
            "listener.tls.certificate: cannot read '/nonexistent/listener.crt': No such file",
        ),
        ("/", "listener.tls.certificate: cannot read '/': Is a directory"),
        ("nul\x00byte", "listener.tls.certificate: cannot read 'nul\\x00byte': embedded null byte"),
        ("-----BEGIN CERTIFICATE-----\nnot base64\n", "listener.tls.certificate: the certificate given as PEM text"),
    ],
    ids=["missing", "a-directory", "nul-byte", "pem-garbage"],
)
def test_an_unusable_listener_certificate_stops_the_receiver_naming_the_field(value: str, expected: str) -> None:
    raw = _with("listener.tls.certificate", value)
    raw["listener"]["tls"]["private_key"] = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    config = parse_config(_text(raw))
    with pytest.raises(ConfigError) as caught:
        tls_context(config.listener)
    assert str(caught.value).startswith(expected), caught.value


# --- a generated set ------------------------------------------------------------------------------


def _paths(node: Any, path: str = "") -> Iterator[str]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, f"{path}[{index}]")


_STRINGS = [
    "",
    " ",
    "x" * 300,
    "KARNAK\\GW",
    "line\nbreak",
    "nul\x00byte",
    "ünïcødé-ÆØÅ",
    "${KARNAK_FUZZ_UNSET_VARIABLE}",
    "${file:/nonexistent/karnak}",
    "${not a name}",
    f"${{{SECRET_ENV}}}-suffix",
    "tagValueContains(",
    "'); DROP TABLE pseudonyms; --",
    "http://",
    "https://ok.example/path",
    "1.2.840.10008.1.2.1",
    "-1",
    "0x10",
]


def _bad_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            lambda: rng.choice(_STRINGS),
            lambda: rng.choice([0, -1, 1, 65536, 2**31, 2**64, 10**100]),
            lambda: rng.choice([0.5, -3.25, 1e308, float("inf")]),
            lambda: rng.choice([True, False]),
            lambda: None,
            lambda: [rng.choice(_STRINGS), rng.randint(-5, 5)],
            lambda: {"unexpected": rng.choice(_STRINGS)},
            lambda: [],
            lambda: {},
        ]
    )()


def _mutations(count: int, seed: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    paths = [p for p in _paths(BASE) if p]
    for _ in range(count):
        path = rng.choice(paths)
        kind = rng.choice(["replace", "replace", "replace", "delete", "unknown-key", "duplicate"])
        config = copy.deepcopy(BASE)
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        parent: Any = config
        for part in parts[:-1]:
            parent = parent[int(part[1:-1])] if part.startswith("[") else parent[part]
        key: Any = int(parts[-1][1:-1]) if parts[-1].startswith("[") else parts[-1]
        target = parent[key]
        if kind == "delete":
            del parent[key]
        elif kind == "unknown-key" and isinstance(target, dict):
            target[f"unknown_{rng.randint(0, 99)}"] = _bad_value(rng)
            path = path + ".unknown"
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(target))
        else:
            kind = "replace"
            parent[key] = _bad_value(rng)
        yield kind, path, config


def _related(problem_path: str, mutated: str) -> bool:
    stem = mutated.removesuffix(".unknown")
    return problem_path.startswith(stem) or stem.startswith(problem_path)


GENERATED = 250


def test_generated_configurations_load_or_fail_naming_fields_never_with_a_traceback() -> None:
    outcomes = {"valid": 0, "refused": 0}
    for number, (kind, path, config) in enumerate(_mutations(GENERATED, seed=20260107)):
        text = _text(config)
        where = f"case {number}: {kind} {path}\n{text}"
        try:
            loaded = parse_config(text)
        except ConfigError as exc:
            outcomes["refused"] += 1
            for problem in exc.problems:
                match = PROBLEM.match(problem)
                assert match, f"unlocated problem {problem!r} in {where}"
                assert SECRET not in problem and TOKEN not in problem, f"secret shown in {problem!r}"
            paths = [PROBLEM.match(p).group("path") for p in exc.problems]  # type: ignore[union-attr]
            # A renamed project is reported where it is referred to, a duplicate id or AE title where it is
            # seen the second time: otherwise the message names the field that was changed (or its parent).
            cross_reference = any("no project named" in p or "already" in p for p in exc.problems)
            assert cross_reference or any(_related(p, path) for p in paths), f"{exc.problems} for {where}"
        except Exception as exc:  # noqa: BLE001 - the property under test
            pytest.fail(f"{type(exc).__name__}: {exc} for {where}")
        else:
            outcomes["valid"] += 1
            _route(loaded, where)
    # The set is not all-valid nor all-refused: both paths are exercised.
    assert outcomes["refused"] > GENERATED // 2 and outcomes["valid"] > GENERATED // 20, outcomes


def _route(config: GatewayConfig, where: str) -> None:
    """A configuration that parses builds its routes and TLS contexts, or fails at start-up naming the field."""
    starts = (
        (lambda: Router(config), r"^(forward_nodes\[\d+\]\.destinations\[\d+\]|projects\[\d+\])"),
        (lambda: tls_context(config.listener), r"^listener\.tls\.\w+: "),
        (lambda: peers(config), r"^forward_nodes\[\d+\]\.destinations\[\d+\]\.tls\.\w+: "),
    )
    for start, field in starts:
        try:
            start()
        except ConfigError as exc:
            for problem in exc.problems:
                assert re.match(field, problem), f"{problem!r} for {where}"
                assert SECRET not in problem and TOKEN not in problem
        except Exception as exc:  # noqa: BLE001 - the property under test
            pytest.fail(f"start-up raised {type(exc).__name__}: {exc} for {where}")


# --- profiles --------------------------------------------------------------------------------------


BROKEN_PROFILES: list[tuple[str, str]] = [
    ("  - name: Strange\n    codename: action.on.nothing\n", "profileElements[0] 'Strange': codename: unknown"),
    (
        "  - name: Bad action\n    codename: action.on.specific.tags\n    action: Q\n    tags: ['(0010,0010)']\n",
        "profileElements[0] 'Bad action': action: 'Q' is not one of K, X, Z, U, D",
    ),
    (
        "  - name: Bad tag\n    codename: action.on.specific.tags\n    action: X\n    tags: ['(0010,00GG)']\n",
        "profileElements[0] 'Bad tag': tags[0]: invalid tag '(0010,00GG)'",
    ),
    (
        "  - name: Bad expr\n    codename: expression.on.tags\n    arguments: {expr: \"Replace('x'\"}\n"
        "    tags: ['(0010,0010)']\n",
        "profileElements[0] 'Bad expr': arguments.expr: expected ')'",
    ),
    (
        "  - name: Bad cond\n    codename: basic.dicom.profile\n    condition: \"tagValueContains(#Tag.Nope, 'x')\"\n",
        "profileElements[0] 'Bad cond': condition: unknown DICOM keyword 'Nope'",
    ),
    (
        "  - name: Clean\n    codename: clean.pixel.data\nmasks:\n  - stationName: '*'\n    rectangles: ['1 2 x']\n",
        "masks[0]: rectangles[0]: '1 2 x' is not 'x y width height'",
    ),
]


def _profile_config(profile: Path) -> GatewayConfig:
    raw = {
        "forward_nodes": [
            {
                "ae_title": "GW",
                "destinations": [
                    {"id": "d", "type": "dicom", "ae_title": "P", "hostname": "h", "port": 104}
                    | {"deidentification": {"project": "p"}}
                ],
            }
        ],
        "projects": [{"name": "p", "secret": "0123456789abcdef0123456789abcdef", "profile": str(profile)}],
    }
    return parse_config(json.dumps(raw))


@pytest.mark.parametrize("elements,expected", BROKEN_PROFILES, ids=[e[1].split(":")[0] for e in BROKEN_PROFILES])
def test_a_broken_profile_stops_the_start_naming_the_project_and_the_element(
    tmp_path: Path, elements: str, expected: str
) -> None:
    profile = tmp_path / "profile.yml"
    profile.write_text("name: p\nversion: '1.0'\nminimumKarnakVersion: '0.9.2'\nprofileElements:\n" + elements)
    with pytest.raises(ConfigError) as caught:
        Router(_profile_config(profile))
    assert any(p.startswith(f"projects[0].profile ({profile}): {expected}") for p in caught.value.problems), (
        caught.value.problems
    )


def _mutate_yaml(node: Any, rng: random.Random) -> Any:
    """One random change somewhere in a profile's YAML tree."""
    if isinstance(node, dict) and node and rng.random() < 0.8:
        key = rng.choice(list(node))
        if rng.random() < 0.15:
            return {k: v for k, v in node.items() if k != key}
        return {**node, key: _mutate_yaml(node[key], rng)}
    if isinstance(node, list) and node and rng.random() < 0.8:
        index = rng.randrange(len(node))
        return [*node[:index], _mutate_yaml(node[index], rng), *node[index + 1 :]]
    return _bad_value(rng)


def test_generated_profiles_build_or_fail_naming_the_project_never_with_a_traceback(tmp_path: Path) -> None:
    rng = random.Random(7433)
    samples = sorted(PROFILES.glob("*.yml"))
    refused = 0
    for number in range(150):
        sample = samples[number % len(samples)]
        profile = tmp_path / f"{number}.yml"
        profile.write_text(yaml.safe_dump(_mutate_yaml(yaml.safe_load(sample.read_text()), rng), allow_unicode=True))
        try:
            Router(_profile_config(profile))
        except ConfigError as exc:
            refused += 1
            for problem in exc.problems:
                assert problem.startswith(f"projects[0].profile ({profile}): "), problem
        except Exception as exc:  # noqa: BLE001 - the property under test
            pytest.fail(f"{type(exc).__name__}: {exc} for a mutation of {sample.name}:\n{profile.read_text()}")
    assert refused > 30, refused
