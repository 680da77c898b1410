"""The HTTP side of a STOW-RS destination: one `requests` session per destination, kept open between batches.

Connection reuse matters as much as batching: a TLS handshake per request would cost more than the
request. urllib3 sets TCP_NODELAY on its sockets by default; the adapter below sets it explicitly (with
keep-alive probes for connections idle behind firewalls) so a change of default cannot bring back the
Nagle + delayed-ACK stall that DESIGN.md section 8 measured on DICOM sockets.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from karnak_shared.errors import TransientDeliveryError
from karnak_stow_sender.multipart import encode_related
from karnak_stow_sender.response import StowResponse
from karnak_stow_sender.settings import StowSenderSettings

SOCKET_OPTIONS = [
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
]
ACCEPT = "application/dicom+json, application/dicom+xml;q=0.9, */*;q=0.1"


class NoDelayAdapter(HTTPAdapter):
    """An adapter whose connection pools open sockets with TCP_NODELAY and SO_KEEPALIVE."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = SOCKET_OPTIONS
        super().init_poolmanager(*args, **kwargs)


def _no_netrc(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def display_url(url: str) -> str:
    """The URL without credentials or query (which may carry a token): safe for logs and reasons."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def new_session(settings: StowSenderSettings) -> requests.Session:
    """A session with the sender's TLS settings, no-delay sockets, and no credentials from ~/.netrc."""
    session = requests.Session()
    adapter = NoDelayAdapter(pool_connections=1, pool_maxsize=2, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = settings.verify
    # With no auth set, requests would take credentials from ~/.netrc and overwrite the configured
    # Authorization header; a no-op auth keeps the destination's own headers authoritative.
    session.auth = _no_netrc
    return session


class StowClient:
    """Posts batches of Part 10 instances to one destination's STOW-RS URL."""

    def __init__(self, destination_id: str, url: str, headers: dict[str, str], settings: StowSenderSettings) -> None:
        self.destination_id = destination_id
        self.url = url
        self.where = f"{destination_id} ({display_url(url)})"
        self._headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
        self._headers.setdefault("Accept", ACCEPT)
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        self._settings = settings
        self.session = new_session(settings)

    def post(self, parts: list[bytes]) -> StowResponse:
        """Send one request; return the answer whatever its status, raise `TransientDeliveryError` when none came."""
        body, content_type = encode_related(parts)
        headers = {**self._headers, "Content-Type": content_type}
        try:
            # Read whole (not streamed): a fully read response hands its connection back to the pool.
            answer = self.session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                # Per request: requests lets $REQUESTS_CA_BUNDLE override a session's `verify`.
                verify=self._settings.verify,
            )
            return StowResponse(
                status=answer.status_code,
                content_type=answer.headers.get("Content-Type", ""),
                body=answer.content or b"",
                reason_phrase=answer.reason or "",
            )
        except requests.exceptions.SSLError as exc:
            raise TransientDeliveryError(f"TLS with {self.where} failed: {_cause(exc)}") from None
        except requests.exceptions.Timeout:
            raise TransientDeliveryError(
                f"{self.where} did not answer within {self._settings.connect_timeout:g} s (connect) / "
                f"{self._settings.read_timeout:g} s (read)"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TransientDeliveryError(f"request to {self.where} failed: {_cause(exc)}") from None
        except OSError as exc:
            raise TransientDeliveryError(f"request to {self.where} failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self.session.close()


def _cause(exc: BaseException) -> str:
    """The innermost cause of a requests error, without the URL that requests and urllib3 put in messages."""
    inner: BaseException = exc
    for _ in range(6):
        nested = getattr(inner, "reason", None)
        if isinstance(nested, BaseException):
            inner = nested
            continue
        if inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
            continue
        break
    text = str(inner)
    if "url:" in text or "://" in text:
        text = ""
    return f"{type(inner).__name__}: {text}"[:300] if text else type(inner).__name__
