"""The `api` pseudonym source against a real HTTP server of the test: templates, JSON paths, the OAuth2
client-credentials flow, and how failures are classified (transient or missing)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr
from pydicom import Dataset

from karnak_processor.pseudonyms import (
    ApiPseudonyms,
    ApiSettings,
    ClientCredentials,
    PseudonymMissing,
    PseudonymUnavailable,
    pseudonym_source,
)
from karnak_shared.config import Pseudonym, parse_config
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

SECRET = bytes.fromhex("0123456789abcdef0123456789abcdef")
CLIENT_ID = "karnak-gateway"
CLIENT_SECRET = "s3cr&t:value"  # characters that must be form-encoded before Basic authentication
PATIENT_ID = 'PID 42&"quoted"'


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class PseudonymService:
    """What the test server does and saw."""

    url: str = ""
    token_lifetime: int | None = 3600
    token_status: int = 200
    revoked: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]


def _handler(service: PseudonymService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = Recorded(self.command, parts.path, urllib.parse.parse_qs(parts.query), dict(self.headers), body)
            with service.lock:
                service.requests.append(record)
            route = parts.path
            if route == "/token":
                return self._token(record)
            if route.startswith("/status/"):
                return self._send(int(route.rsplit("/", 1)[1]), {"error": f"patient {PATIENT_ID} unknown"})
            if route == "/slow":
                time.sleep(2)
                return self._send(200, {"pseudonym": "LATE"})
            if route == "/secured" and not self._authorized(record):
                return self._send(401, {"error": "invalid_token"})
            if route in ("/secured", "/pseudonyms"):
                patient = json.loads(body)["patient"]["id"] if body else record.query["id"][0]
                return self._send(200, {"data": {"items": [{"pseudonym": f"PSN-{len(patient)}-{patient[:3]}"}]}})
            if route == "/lookup":
                return self._send(200, {"pseudonym": f"PSN-{record.query['id'][0]}"[:64]})
            if route == "/text":
                return self._send_raw(200, b"  PLAIN-7\n", "text/plain")
            if route == "/html":
                return self._send_raw(200, b"<html>maintenance</html>", "text/html")
            if route == "/empty-object":
                return self._send(200, {"data": {}})
            return self._send(404, {"error": "no route"})

        def _token(self, record: Recorded) -> None:
            expected = base64.b64encode(f"{CLIENT_ID}:{urllib.parse.quote(CLIENT_SECRET, safe='')}".encode()).decode()
            form = urllib.parse.parse_qs(record.body.decode())
            if service.token_status != 200:
                return self._send(service.token_status, {"error": "server_error"})
            if record.headers.get("Authorization") != f"Basic {expected}" or form != {
                "grant_type": ["client_credentials"]
            }:
                return self._send(401, {"error": "invalid_client"})
            with service.lock:
                token = f"token-{len(service.issued) + 1}"
                service.issued.append(token)
            answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
            if service.token_lifetime is not None:
                answer["expires_in"] = service.token_lifetime
            return self._send(200, answer)

        def _authorized(self, record: Recorded) -> bool:
            header = record.headers.get("Authorization", "")
            token = header.removeprefix("Bearer ")
            return header.startswith("Bearer ") and token in service.issued and token not in service.revoked

        def _send(self, status: int, document: object) -> None:
            self._send_raw(status, json.dumps(document).encode(), "application/json")

        def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def service() -> Iterator[PseudonymService]:
    state = PseudonymService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads, server.block_on_close = True, False  # the slow handler must not hold up teardown
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="pseudonym-service", daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def patient(patient_id: str = PATIENT_ID, **attributes: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


BODY = '{"patient": {"id": "{{getString(#Tag.PatientID)}}", "issuer": "{{ getString(#Tag.IssuerOfPatientID) }}"}}'
PATH = "$.data.items[0].pseudonym"


def oauth_source(service: PseudonymService, path: str = "/secured", **overrides: Any) -> ApiPseudonyms:
    settings = dict(
        url=service.url + path,
        method="POST",
        body=BODY,
        response_path=PATH,
        timeout=5.0,
        credentials=ClientCredentials(service.url + "/token", CLIENT_ID, CLIENT_SECRET),
    )
    settings.update(overrides)
    return ApiPseudonyms(ApiSettings(**settings))


def test_post_with_a_json_body_template_and_an_oauth2_token_reads_the_pseudonym_at_the_path(
    service: PseudonymService,
) -> None:
    source = oauth_source(service)

    pseudonym = source.pseudonym_for(patient(IssuerOfPatientID="HOSP"))

    assert pseudonym == f"PSN-{len(PATIENT_ID)}-PID"
    [call] = service.calls("/secured")
    assert call.method == "POST"
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["Authorization"] == "Bearer token-1"
    # The placeholder's value was escaped for JSON: the quotes in the patient id did not break the body.
    assert json.loads(call.body) == {"patient": {"id": PATIENT_ID, "issuer": "HOSP"}}


def test_the_token_is_fetched_once_and_reused_until_it_expires(service: PseudonymService) -> None:
    source = oauth_source(service)

    for n in range(5):
        source.pseudonym_for(patient(f"PAT-{n}"))

    assert len(service.calls("/token")) == 1
    assert len(service.calls("/secured")) == 5
    assert {c.headers["Authorization"] for c in service.calls("/secured")} == {"Bearer token-1"}


def test_an_expired_token_is_replaced(service: PseudonymService) -> None:
    service.token_lifetime = 0  # expired as soon as it is issued
    source = oauth_source(service)

    for n in range(3):
        source.pseudonym_for(patient(f"PAT-{n}"))

    assert len(service.calls("/token")) == 3
    assert [c.headers["Authorization"] for c in service.calls("/secured")] == [
        "Bearer token-1",
        "Bearer token-2",
        "Bearer token-3",
    ]


def test_a_token_revoked_before_its_expiry_is_replaced_once(service: PseudonymService) -> None:
    source = oauth_source(service)
    source.pseudonym_for(patient("PAT-1"))
    service.revoked.add("token-1")

    assert source.pseudonym_for(patient("PAT-2")) == "PSN-5-PAT"

    assert service.issued == ["token-1", "token-2"]
    assert [c.headers["Authorization"] for c in service.calls("/secured")][-2:] == ["Bearer token-1", "Bearer token-2"]


def test_refused_client_credentials_are_missing_and_never_show_the_secret(service: PseudonymService) -> None:
    source = oauth_source(service, credentials=ClientCredentials(service.url + "/token", CLIENT_ID, "wrong"))

    with pytest.raises(PseudonymMissing, match=r"the OAuth2 token endpoint http://127.0.0.1:\d+ answered HTTP 401"):
        source.pseudonym_for(patient())

    assert "wrong" not in repr(ClientCredentials(service.url + "/token", CLIENT_ID, "wrong"))


def test_a_failing_token_endpoint_is_transient(service: PseudonymService) -> None:
    service.token_status = 503

    with pytest.raises(PseudonymUnavailable, match=r"token endpoint .* answered HTTP 503"):
        oauth_source(service).pseudonym_for(patient())


def test_get_with_a_url_template_encodes_the_value(service: PseudonymService) -> None:
    source = ApiPseudonyms(
        ApiSettings(url=service.url + "/lookup?id={{getString(#Tag.PatientID)}}&site=1", response_path="pseudonym")
    )

    assert source.pseudonym_for(patient("A B&C")) == "PSN-A B&C"

    [call] = service.calls("/lookup")
    assert call.method == "GET" and call.body == b""
    assert call.query == {"id": ["A B&C"], "site": ["1"]}


def test_answers_are_remembered_so_a_study_costs_one_call_per_patient(service: PseudonymService) -> None:
    source = ApiPseudonyms(
        ApiSettings(url=service.url + "/lookup?id={{getString(#Tag.PatientID)}}", response_path="$.pseudonym")
    )

    for _ in range(10):
        assert source.pseudonym_for(patient("PAT-1")) == "PSN-PAT-1"
    source.pseudonym_for(patient("PAT-2"))

    assert len(service.calls("/lookup")) == 2


def test_without_a_path_the_answer_text_is_the_pseudonym(service: PseudonymService) -> None:
    source = ApiPseudonyms(ApiSettings(url=service.url + "/text"))

    assert source.pseudonym_for(patient()) == "PLAIN-7"


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_server_errors_are_transient_and_name_only_the_service(service: PseudonymService, status: int) -> None:
    source = ApiPseudonyms(ApiSettings(url=service.url + f"/status/{status}?id={{{{getString(#Tag.PatientID)}}}}"))

    with pytest.raises(PseudonymUnavailable) as caught:
        source.pseudonym_for(patient())

    assert caught.value.reason == f"the pseudonym service {service.url} answered HTTP {status}"
    assert caught.value.transient


@pytest.mark.parametrize("status", [404, 400, 403, 422])
def test_client_errors_are_a_missing_pseudonym(service: PseudonymService, status: int) -> None:
    source = ApiPseudonyms(ApiSettings(url=service.url + f"/status/{status}", method="POST", body=BODY))

    with pytest.raises(PseudonymMissing) as caught:
        source.pseudonym_for(patient())

    assert caught.value.reason == f"the pseudonym service {service.url} answered HTTP {status}"
    assert not caught.value.transient


def test_a_slow_service_times_out_as_a_transient_failure(service: PseudonymService) -> None:
    source = ApiPseudonyms(ApiSettings(url=service.url + "/slow", timeout=0.3))
    started = time.monotonic()

    with pytest.raises(PseudonymUnavailable, match=r"is unreachable: no answer within 0.3 s"):
        source.pseudonym_for(patient())

    assert time.monotonic() - started < 1.5


def test_a_service_that_is_down_is_a_transient_failure() -> None:
    source = ApiPseudonyms(ApiSettings(url=f"http://127.0.0.1:{free_port()}/lookup", timeout=2))

    with pytest.raises(PseudonymUnavailable, match=r"is unreachable: .*refused"):
        source.pseudonym_for(patient())


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/html", "did not answer JSON, so \\$.data.items\\[0\\].pseudonym cannot be read"),
        ("/empty-object", "answered without a pseudonym at \\$.data.items\\[0\\].pseudonym"),
    ],
)
def test_an_answer_without_a_pseudonym_at_the_path_is_missing(
    service: PseudonymService, path: str, reason: str
) -> None:
    source = ApiPseudonyms(ApiSettings(url=service.url + path, response_path=PATH))

    with pytest.raises(PseudonymMissing, match=reason):
        source.pseudonym_for(patient())


def test_the_configuration_builds_an_oauth2_api_source(service: PseudonymService) -> None:
    class PseudonymWithOAuth2(Pseudonym):
        # The fields the configuration model gains for OAuth2 (see the report to the lead).
        token_url: str | None = None
        client_id: str | None = None
        client_secret: SecretStr | None = None
        scope: str | None = None

    config = PseudonymWithOAuth2(
        type="api",
        url=service.url + "/secured",
        method="POST",
        body=BODY,
        response_path=PATH,
        timeout=5,
        token_url=service.url + "/token",
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
    )

    source = pseudonym_source(config, SECRET, None, None)

    assert source.pseudonym_for(patient("PAT-1")) == "PSN-5-PAT"
    assert service.issued == ["token-1"]
    incomplete = PseudonymWithOAuth2(type="api", url=service.url + "/secured", token_url=service.url + "/token")
    with pytest.raises(Exception, match=r"pseudonym.client_id: is required with token_url"):
        pseudonym_source(incomplete, SECRET, None, None)


def test_an_auth_config_of_the_routing_configuration_gives_the_api_source_its_credentials(
    service: PseudonymService,
) -> None:
    config = parse_config(
        json.dumps(
            {
                "auth_configs": [
                    {
                        "code": "pseudonym-service",
                        "access_token_url": service.url + "/token",
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                    }
                ],
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
                                "deidentification": {
                                    "project": "study-x",
                                    "pseudonym": {
                                        "type": "api",
                                        "url": service.url + "/secured",
                                        "method": "POST",
                                        "body": BODY,
                                        "response_path": PATH,
                                        "auth_config": "pseudonym-service",
                                    },
                                },
                            }
                        ],
                    }
                ],
                "projects": [{"name": "study-x", "secret": SECRET.hex(), "profile": "profile.yml"}],
            }
        )
    )
    destination = config.destination("research")
    assert destination is not None and destination.deidentification is not None

    source = pseudonym_source(
        config.pseudonym_with_credentials(destination.deidentification.pseudonym), SECRET, None, None
    )

    assert source.pseudonym_for(patient("PAT-1")) == "PSN-5-PAT"
    assert service.issued == ["token-1"]
