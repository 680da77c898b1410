"""Calling the HTTP APIs a profile or a pseudonym source names: one client for both.

The `api` pseudonym source and the ``action.replace.api`` profile elements ask an HTTP service with a URL
(and a body) rendered from templates, optionally with an OAuth2 client-credentials token (RFC 6749 4.4)
cached until shortly before it expires. `HttpApi.call` returns the body of a 2xx answer or raises
`ApiCallFailed`, whose ``transient`` says whether trying again later can help: 5xx, 408, 429, a timeout or
a network error are transient; other 4xx and a token endpoint answering without a token are not. Reasons
name the service by its origin only (scheme, host, port): a URL's path and query may carry patient data.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from karnak_shared.errors import KarnakError

__all__ = [
    "ApiCallFailed",
    "ClientCredentials",
    "HttpApi",
    "TokenCache",
    "json_string",
    "origin",
    "quote_url_value",
]

MAX_ANSWER_BYTES: Final = 1 << 20
_TOKEN_DEFAULT_LIFETIME: Final = 60.0


class ApiCallFailed(KarnakError):
    """An API call got no usable answer; ``transient`` when it may work later. ``reason`` has no patient data."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        self.reason = reason
        self.transient = transient
        super().__init__(reason)


@dataclass(frozen=True)
class ClientCredentials:
    """OAuth2 client-credentials grant: the token endpoint and the client's id and secret."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class _Unreachable(Exception):
    pass


def _exchange(request: urllib.request.Request, timeout: float) -> bytes:
    """Send the request; returns the body of a 2xx answer, raises _HttpStatus or _Unreachable otherwise."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _HttpStatus(exc.code) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = f"no answer within {timeout:g} s" if isinstance(reason, TimeoutError) else str(reason)
        raise _Unreachable(text[:200]) from None
    except TimeoutError:
        raise _Unreachable(f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Unreachable(type(exc).__name__) from None


def _status_failure(status: int, who: str) -> ApiCallFailed:
    return ApiCallFailed(f"{who} answered HTTP {status}", transient=status >= 500 or status in (408, 429))


class TokenCache:
    """An OAuth2 access token from the client-credentials grant, reused until shortly before it expires."""

    def __init__(self, credentials: ClientCredentials, timeout: float, clock: Callable[[], float] = time.monotonic):
        self._credentials = credentials
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self._where = f"the OAuth2 token endpoint {origin(credentials.token_url)}"

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires:
                self._token, lifetime = self._fetch()
                # Renew a little early so a token does not expire between here and the service.
                self._expires = self._clock() + lifetime - min(30.0, lifetime / 10)
            return self._token

    def invalidate(self, token: str | None) -> None:
        with self._lock:
            if token is not None and token == self._token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        credentials = self._credentials
        form = {"grant_type": "client_credentials"}
        if credentials.scope:
            form["scope"] = credentials.scope
        # RFC 6749 2.3.1: the id and secret are form-encoded, then sent with HTTP Basic authentication.
        user = urllib.parse.quote(credentials.client_id, safe="")
        password = urllib.parse.quote(credentials.client_secret, safe="")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request = urllib.request.Request(
            credentials.token_url,
            data=urllib.parse.urlencode(form).encode("ascii"),
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        try:
            answer = _exchange(request, self._timeout)
        except _HttpStatus as exc:
            raise _status_failure(exc.status, self._where) from None
        except _Unreachable as exc:
            raise ApiCallFailed(f"{self._where} is unreachable: {exc}", transient=True) from None
        try:
            document = json.loads(answer)
            token = document["access_token"]
        except (ValueError, KeyError, TypeError):
            raise ApiCallFailed(f"{self._where} answered without an access_token", transient=False) from None
        if not isinstance(token, str) or not token:
            raise ApiCallFailed(f"{self._where} answered without an access_token", transient=False)
        lifetime = document.get("expires_in")
        try:
            seconds = float(lifetime) if lifetime is not None else _TOKEN_DEFAULT_LIFETIME
        except (TypeError, ValueError):
            seconds = _TOKEN_DEFAULT_LIFETIME
        return token, max(seconds, 0.0)


class HttpApi:
    """One service: requests with the bearer token of its credentials (renewed once when refused with 401)."""

    def __init__(self, who: str, timeout: float, tokens: TokenCache | None = None) -> None:
        self.who = who  # "the pseudonym service http://host:port": how reasons name it
        self._timeout = timeout
        self._tokens = tokens

    def call(self, url: str, method: str, data: bytes | None, content_type: str) -> bytes:
        """The body of the 2xx answer; raises `ApiCallFailed`."""
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            token = self._tokens.token() if self._tokens else None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                return _exchange(request, self._timeout)
            except _HttpStatus as exc:
                if exc.status == 401 and self._tokens and attempt == 1:
                    # The token may have been revoked before its announced expiry: get a fresh one once.
                    self._tokens.invalidate(token)
                    continue
                raise _status_failure(exc.status, self.who) from None
            except _Unreachable as exc:
                raise ApiCallFailed(f"{self.who} is unreachable: {exc}", transient=True) from None
        raise AssertionError("unreachable")  # pragma: no cover


def quote_url_value(value: str) -> str:
    """A value placed in a URL: every reserved character percent-encoded."""
    return urllib.parse.quote(value, safe="")


def json_string(value: str) -> str:
    """A value placed inside a JSON string of a template: escaped, without the surrounding quotes."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: enough to say which service, without a path or query to leak."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"
