"""``action.replace.api`` profile elements against a real HTTP server of the test: GET and POST templates,
OAuth2 client credentials through an auth config, the default value, and Karnak's classification of
failures (4xx and bad JSON abort the copy, 5xx and timeouts are retried); `karnak config check` on them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO

from karnak_dicom.deid import ReplaceApiElement, load_profile
from karnak_dicom.instance import read_instance
from karnak_processor.http_api import ClientCredentials
from karnak_processor.replace_api import ApiReplacements, ReplaceApiFailed
from karnak_processor.routing import Deliver, Fail, Later, Router
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.errors import ConfigError
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

CLIENT_ID = "karnak-gateway"
CLIENT_SECRET = "s3cr&t:value"
PATIENT_ID = "PAT 42/&?"  # characters a URL template must escape
TAG_PATIENT_ID = "(0010,0020)"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class IdService:
    """The test's identity service and its OAuth2 token endpoint."""

    url: str = ""
    tokens: list[str] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    delay: float = 0.0

    def api_calls(self) -> list[Seen]:
        return [r for r in self.requests if r.path != "/token"]


def _handler(service: IdService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            raw_path = urllib.parse.urlsplit(self.path).path
            path = urllib.parse.unquote(raw_path)
            service.requests.append(Seen(self.command, path, dict(self.headers), body))
            if path == "/token":
                basic = base64.b64encode(
                    f"{urllib.parse.quote(CLIENT_ID, safe='')}:{urllib.parse.quote(CLIENT_SECRET, safe='')}".encode()
                ).decode()
                if self.headers.get("Authorization") != f"Basic {basic}":
                    self._answer(401, b'{"error": "invalid_client"}')
                    return
                token = f"token-{len(service.tokens) + 1}"
                service.tokens.append(token)
                self._answer(200, json.dumps({"access_token": token, "expires_in": 3600}).encode())
                return
            bearer = f"Bearer {service.tokens[-1]}" if service.tokens else None
            if path.startswith("/secured/") and self.headers.get("Authorization") != bearer:
                self._answer(401, b"{}")
                return
            if path.startswith(("/ids/", "/secured/ids/")):
                patient = urllib.parse.unquote(raw_path.rsplit("/", 1)[1])
                self._answer(200, json.dumps({"data": {"id": f"ANON-{len(patient)}"}}).encode())
            elif path == "/lookup":
                patient = json.loads(body)["patient"]
                self._answer(200, json.dumps({"pseudonym": f"POSTED-{len(patient)}"}).encode())
            elif path == "/nothing":
                self._answer(200, b'{"data": {}}')
            elif path == "/not-json":
                self._answer(200, b"<html>maintenance</html>", "text/html")
            elif path.startswith("/status/"):
                self._answer(int(path.rsplit("/", 1)[1]), b"{}")
            elif path == "/slow":
                time.sleep(1.0)
                self._answer(200, b'{"data": {"id": "LATE"}}')
            else:
                self._answer(404, b"{}")

    return Handler


@pytest.fixture
def service() -> Iterator[IdService]:
    state = IdService()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _element(arguments: dict[str, Any], tags: tuple[str, ...] = (TAG_PATIENT_ID, "(0008,0080)")) -> dict[str, Any]:
    return {"name": "Identity API", "codename": "action.replace.api", "arguments": arguments, "tags": list(tags)}


def _config(tmp_path: Path, element: dict[str, Any], *, auth_code: str | None, service: IdService) -> Path:
    profile = {"name": "api", "version": "1.0", "profileElements": [element]}
    (tmp_path / "api.yml").write_text(yaml.safe_dump(profile, sort_keys=False))
    document: dict[str, Any] = {
        "forward_nodes": [
            {
                "ae_title": "KARNAK-GW",
                "destinations": [
                    {
                        "id": "research",
                        "type": "dicom",
                        "ae_title": "PACS",
                        "hostname": "pacs.example",
                        "port": 104,
                        "tag_morphing": {"project": "study-x"},
                    }
                ],
            }
        ],
        "projects": [{"name": "study-x", "secret": "0123456789abcdef0123456789abcdef", "profile": "api.yml"}],
    }
    if auth_code is not None:
        document["auth_configs"] = [
            {
                "code": auth_code,
                "access_token_url": service.url + "/token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            }
        ]
    path = tmp_path / "karnak.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _router(path: Path) -> Router:
    config: GatewayConfig = parse_config(path.read_text())
    return Router(config, base_dir=path.parent)


def _decide(router: Router, part10: Callable[..., bytes]) -> Deliver | Fail | Later:
    [decision] = router.decide("KARNAK-GW", read_instance(part10(PatientID=PATIENT_ID, InstitutionName="Hospital")))
    assert isinstance(decision, Deliver | Fail | Later), decision
    return decision


def _sent(decision: Deliver | Fail | Later) -> Any:
    assert isinstance(decision, Deliver), decision
    return dcmread(DicomBytesIO(decision.part10))


# --- values ------------------------------------------------------------------------------------------


def test_a_get_element_with_an_auth_config_replaces_every_covered_attribute_with_the_api_value(
    tmp_path: Path, service: IdService, part10: Callable[..., bytes]
) -> None:
    element = _element(
        {
            "url": service.url + "/secured/ids/{{getString(#Tag.PatientID)}}",
            "responsePath": "/data/id",
            "authConfig": "ids",
        }
    )
    router = _router(_config(tmp_path, element, auth_code="ids", service=service))

    first, second = _sent(_decide(router, part10)), _sent(_decide(router, part10))

    expected = f"ANON-{len(PATIENT_ID)}"
    assert (first.PatientID, first.InstitutionName) == (expected, expected)
    assert second.PatientID == expected
    assert first.PatientName == "Doe^John"  # not covered: kept (tag morphing)
    calls = service.api_calls()
    assert [c.path for c in calls] == [f"/secured/ids/{PATIENT_ID}"] * 2  # escaped in the URL, one call each
    assert all(c.headers["Authorization"] == "Bearer token-1" for c in calls)
    assert len([r for r in service.requests if r.path == "/token"]) == 1  # the token is reused


def test_a_post_element_sends_its_json_body_rendered_on_the_instance(
    tmp_path: Path, service: IdService, part10: Callable[..., bytes]
) -> None:
    element = _element(
        {
            "url": service.url + "/lookup",
            "method": "POST",
            "body": '{"patient": "{{getString(#Tag.PatientID)}}"}',
            "responsePath": "pseudonym",
        },
        tags=(TAG_PATIENT_ID,),
    )
    router = _router(_config(tmp_path, element, auth_code=None, service=service))

    sent = _sent(_decide(router, part10))

    assert sent.PatientID == f"POSTED-{len(PATIENT_ID)}" and sent.InstitutionName == "Hospital"
    [call] = service.api_calls()
    assert call.method == "POST" and call.headers["Content-Type"] == "application/json"
    assert json.loads(call.body) == {"patient": PATIENT_ID}


def test_the_default_value_stands_in_when_the_answer_has_no_value_and_without_one_the_value_is_kept(
    tmp_path: Path, service: IdService, part10: Callable[..., bytes]
) -> None:
    with_default = _element({"url": service.url + "/nothing", "responsePath": "/data/id", "defaultValue": "UNKNOWN"})
    without = _element({"url": service.url + "/nothing", "responsePath": "/data/id"})

    defaulted = _sent(_decide(_router(_config(tmp_path, with_default, auth_code=None, service=service)), part10))
    kept = _sent(_decide(_router(_config(tmp_path, without, auth_code=None, service=service)), part10))

    assert (defaulted.PatientID, defaulted.InstitutionName) == ("UNKNOWN", "UNKNOWN")
    assert (kept.PatientID, kept.InstitutionName) == (PATIENT_ID, "Hospital")  # left to the next elements


# --- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind", "reason"),
    [
        ("/status/404", Fail, "answered HTTP 404"),
        ("/status/403", Fail, "answered HTTP 403"),
        ("/not-json", Fail, "did not answer JSON"),
        ("/status/503", Later, "answered HTTP 503"),
        ("/status/429", Later, "answered HTTP 429"),
    ],
)
def test_failures_abort_the_copy_or_are_retried_as_karnak_classifies_them(
    tmp_path: Path,
    service: IdService,
    part10: Callable[..., bytes],
    path: str,
    kind: type,
    reason: str,
) -> None:
    element = _element({"url": service.url + path + "?id={{getString(#Tag.PatientID)}}", "responsePath": "/id"})
    router = _router(_config(tmp_path, element, auth_code=None, service=service))

    decision = _decide(router, part10)

    assert isinstance(decision, kind), decision
    assert isinstance(decision, Fail | Later)
    assert reason in decision.reason and "profileElements[0]" in decision.reason
    assert "PAT" not in decision.reason and path not in decision.reason  # no patient value, no URL path


def test_an_auth_config_the_caller_does_not_know_aborts_the_copy(service: IdService) -> None:
    profile = load_profile(
        yaml.safe_dump(
            {
                "name": "api",
                "profileElements": [
                    _element({"url": service.url + "/ids/x", "responsePath": "/id", "authConfig": "gone"})
                ],
            }
        )
    )
    replacements = ApiReplacements({"ids": ClientCredentials(service.url + "/token", CLIENT_ID, CLIENT_SECRET)})
    element = profile.elements[0]
    assert isinstance(element, ReplaceApiElement)
    dataset = Dataset()
    dataset.PatientID = PATIENT_ID

    with pytest.raises(ReplaceApiFailed) as caught:
        replacements(element, dataset)

    assert not caught.value.transient
    assert caught.value.reason == "action.replace.api of profileElements[0]: no auth config 'gone' in auth_configs"
    assert not service.requests


# --- start-up and `karnak config check` --------------------------------------------------------------


def test_the_processor_refuses_at_start_up_an_element_naming_an_auth_config_that_does_not_exist(
    tmp_path: Path, service: IdService
) -> None:
    element = _element({"url": service.url + "/ids/x", "responsePath": "/id", "authConfig": "nowhere"})

    with pytest.raises(ConfigError) as caught:
        _router(_config(tmp_path, element, auth_code="ids", service=service))

    assert caught.value.problems == [
        "projects[0].profile: profileElements[0] 'Identity API': arguments.authConfig: no auth config 'nowhere' "
        "in auth_configs"
    ]


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "karnak_shared.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_karnak_config_check_accepts_the_element_when_its_auth_config_exists_and_names_it_when_not(
    tmp_path: Path, service: IdService
) -> None:
    element = _element(
        {"url": service.url + "/ids/{{getString(#Tag.PatientID)}}", "responsePath": "/id", "authConfig": "ids"}
    )
    good = tmp_path / "good"
    bad = tmp_path / "bad"
    good.mkdir()
    bad.mkdir()

    accepted = _check(_config(good, element, auth_code="ids", service=service))
    refused = _check(_config(bad, element, auth_code="other", service=service))

    assert accepted.returncode == 0, accepted.stderr
    assert "valid" in accepted.stdout
    assert refused.returncode != 0
    assert "profileElements[0] 'Identity API': arguments.authConfig: no auth config 'ids' in auth_configs" in (
        refused.stdout + refused.stderr
    )
    assert not service.requests  # checking calls no API
