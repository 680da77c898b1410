"""A fake Kheops API for the tests: exactly the two endpoints the sharer uses (DESIGN.md section 9).

- ``POST {url_api}/token/introspect``: form field ``token``; the request must carry ``Authorization: Bearer``
  the same token (else 401). Answers ``{"active": true, "scope": "read send"}`` for a known active token,
  ``{"active": false}`` otherwise.
- ``PUT {url_api}/studies/{study}/series/{series}``: ``Authorization: Bearer <destination token>`` needs scope
  ``write``, ``X-Authorization-Source: Bearer <source token>`` needs ``read`` and ``send``; unknown tokens are
  401, tokens without the scopes 403; a success answers 201 and records the series in the album.

Every call is recorded (method, path, both authorization headers, form), and the next answers of either
endpoint can be forced (e.g. 500, 401) to test the sharer's behaviour.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    authorization: str | None
    source_authorization: str | None
    form: dict[str, str]


@dataclass
class Token:
    scopes: frozenset[str]
    active: bool = True


@dataclass
class FakeKheops:
    """The fake API on a free loopback port; `url_api` is its base URL (``http://127.0.0.1:PORT/api``)."""

    tokens: dict[str, Token] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    forced_introspections: list[int] = field(default_factory=list)
    forced_shares: list[int] = field(default_factory=list)
    # album (destination token) -> series shared into it, as (study, series)
    albums: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, payload: object | None = None) -> None:
                body = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> Call:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                form = dict(urllib.parse.parse_qsl(raw))
                call = Call(
                    self.command,
                    self.path,
                    self.headers.get("Authorization"),
                    self.headers.get("X-Authorization-Source"),
                    form,
                )
                with fake._lock:
                    fake.calls.append(call)
                return call

            def do_POST(self) -> None:
                call = self._record()
                if call.path != "/api/token/introspect":
                    self._answer(404, {"error": "not found"})
                    return
                with fake._lock:
                    forced = fake.forced_introspections.pop(0) if fake.forced_introspections else None
                if forced is not None:
                    self._answer(forced, {"error": "forced"})
                    return
                token = call.form.get("token", "")
                if call.authorization != f"Bearer {token}" or token not in fake.tokens:
                    self._answer(401, {"error": "invalid bearer"})
                    return
                known = fake.tokens[token]
                if not known.active:
                    self._answer(200, {"active": False})
                    return
                self._answer(200, {"active": True, "scope": " ".join(sorted(known.scopes)), "token_type": "bearer"})

            def do_PUT(self) -> None:
                call = self._record()
                parts = call.path.split("/")
                if len(parts) != 6 or parts[:2] != ["", "api"] or parts[2] != "studies" or parts[4] != "series":
                    self._answer(404, {"error": "not found"})
                    return
                with fake._lock:
                    forced = fake.forced_shares.pop(0) if fake.forced_shares else None
                if forced is not None:
                    self._answer(forced, {"error": "forced"})
                    return
                destination = _bearer(call.authorization)
                source = _bearer(call.source_authorization)
                if destination not in fake.tokens or source not in fake.tokens:
                    self._answer(401, {"error": "unknown token"})
                    return
                if not fake._allows(destination, {"write"}) or not fake._allows(source, {"read", "send"}):
                    self._answer(403, {"error": "insufficient scope"})
                    return
                with fake._lock:
                    fake.albums.setdefault(destination, []).append((parts[3], parts[5]))
                self._answer(201)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _allows(self, token: str, needed: set[str]) -> bool:
        known = self.tokens[token]
        return known.active and needed <= known.scopes

    @property
    def url_api(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _bearer(header: str | None) -> str:
    if header and header.startswith("Bearer "):
        return header[len("Bearer ") :]
    return ""
