"""The console's tools: C-ECHO (with a destination's calling AE and TLS), a STOW-RS probe, Kheops tokens.

Each tool answers what it found (never a secret): an unreachable peer is a result, not an error.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from karnak_console.problems import ApiProblem
from karnak_shared.config import DicomDestination, GatewayConfig, StowDestination
from karnak_shared.errors import DeliveryError
from karnak_shared.headers import parse_headers

TIMEOUT_SECONDS = 5.0


class EchoResult(BaseModel):
    success: bool
    calling_ae_title: str
    called_ae_title: str
    hostname: str
    port: int
    tls: bool
    # The C-ECHO response status (0x0000: success); None when no association was made.
    status: int | None
    message: str
    connection_ms: float | None
    elapsed_ms: float


def _destination(config: GatewayConfig, destination_id: str) -> tuple[str, DicomDestination | StowDestination, str]:
    for n, node in enumerate(config.forward_nodes):
        for d, dest in enumerate(node.destinations):
            if dest.id == destination_id:
                return node.ae_title, dest, f"forward_nodes[{n}].destinations[{d}]"
    raise ApiProblem(404, f"no destination {destination_id!r}")


def echo(
    console: Any,
    destination_id: str | None,
    ae_title: str | None,
    hostname: str | None,
    port: int | None,
    calling_ae_title: str | None,
) -> EchoResult:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    context: ssl.SSLContext | None = None
    if destination_id is not None:
        node_ae, dest, where = _destination(console.gateway_config(), destination_id)
        if not isinstance(dest, DicomDestination):
            raise ApiProblem(422, f"destination {destination_id!r} is a STOW destination: use tools/stow-probe")
        called, host, peer_port = dest.ae_title, dest.hostname, dest.port
        calling = calling_ae_title or (dest.ae_title if dest.use_aetitle_destination else node_ae)
        if dest.tls is not None:
            context = dest.tls.client_context(f"{where}.tls")
    else:
        assert ae_title is not None and hostname is not None and port is not None
        called, host, peer_port = ae_title, hostname, port
        calling = calling_ae_title or "KARNAK-ECHO"
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = TIMEOUT_SECONDS
    ae.connection_timeout = TIMEOUT_SECONDS
    started = time.monotonic()
    assoc = ae.associate(host, peer_port, ae_title=called, tls_args=(context, host) if context else None)
    connected = time.monotonic()
    status: int | None = None
    if assoc.is_established:
        answer = assoc.send_c_echo()
        status = int(answer.Status) if answer and "Status" in answer else None
        assoc.release()
        message = "Success" if status == 0 else ("no response" if status is None else f"status 0x{status:04X}")
    elif assoc.is_rejected:
        message = "association rejected (check the called and calling AE titles)"
    else:
        message = "no association: the peer cannot be reached or closed the connection"
    elapsed = time.monotonic()
    ae.shutdown()
    return EchoResult(
        success=status == 0,
        calling_ae_title=calling,
        called_ae_title=called,
        hostname=host,
        port=peer_port,
        tls=context is not None,
        status=status,
        message=message,
        connection_ms=round((connected - started) * 1000, 1) if assoc.is_established else None,
        elapsed_ms=round((elapsed - started) * 1000, 1),
    )


def _tls_summary(url: str) -> dict[str, Any] | None:
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None:
        return None
    context = ssl.create_default_context()
    try:
        with (
            socket.create_connection((parts.hostname, parts.port or 443), timeout=TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            certificate = tls.getpeercert() or {}
            expires = certificate.get("notAfter")
            days = None
            if isinstance(expires, str):
                days = int((ssl.cert_time_to_seconds(expires) - time.time()) // 86400)
            return {"protocol": tls.version(), "verified": True, "expires_in_days": days}
    except (OSError, ssl.SSLError) as exc:
        return {"protocol": None, "verified": False, "error": type(exc).__name__}


def stow_probe(console: Any, destination_id: str | None, url: str | None) -> dict[str, Any]:
    """OPTIONS on the STOW-RS URL with the destination's headers: reachable, HTTP status, TLS. No upload."""
    headers: dict[str, str] = {}
    if destination_id is not None:
        _, dest, _ = _destination(console.gateway_config(), destination_id)
        if not isinstance(dest, StowDestination):
            raise ApiProblem(422, f"destination {destination_id!r} is a DICOM destination: use tools/echo")
        url, headers = dest.url, parse_headers(dest.headers)
    assert url is not None
    started = time.monotonic()
    result: dict[str, Any] = {"url": url, "reachable": False, "http_status": None, "tls": _tls_summary(url)}
    try:
        answer = httpx.request("OPTIONS", url, headers=headers, timeout=TIMEOUT_SECONDS, follow_redirects=False)
    except httpx.HTTPError as exc:
        result["message"] = f"no HTTP response ({type(exc).__name__})"
    else:
        result.update(
            reachable=True,
            http_status=answer.status_code,
            allow=answer.headers.get("allow"),
            message=f"HTTP OPTIONS returned status {answer.status_code}"
            + (" (the credentials were refused)" if answer.status_code in (401, 403) else ""),
        )
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def kheops_token(
    console: Any, destination_id: str | None, album: int, url_api: str | None, token: str | None, role: str
) -> dict[str, Any]:
    """Introspect tokens as the kheops-sharer does: active, scopes, and what a share would lack."""
    from karnak_kheops_sharer.kheops import KheopsApi
    from karnak_kheops_sharer.settings import KheopsSharerSettings
    from karnak_kheops_sharer.tokens import DESTINATION_SCOPES, SOURCE_SCOPES, token_problem

    checks: list[tuple[str, str, str]] = []  # (role, url_api, token)
    if destination_id is not None:
        _, dest, _ = _destination(console.gateway_config(), destination_id)
        if not isinstance(dest, StowDestination) or album >= len(dest.kheops_albums):
            raise ApiProblem(404, f"destination {destination_id!r} has no Kheops album {album}")
        entry = dest.kheops_albums[album]
        checks = [
            ("destination", entry.url_api, entry.token_destination.get_secret_value()),
            ("source", entry.url_api, entry.token_source.get_secret_value()),
        ]
    else:
        assert url_api is not None and token is not None
        checks = [(role, url_api, token)]
    results = []
    for which, api, value in checks:
        needed = DESTINATION_SCOPES if which == "destination" else SOURCE_SCOPES
        try:
            seen = KheopsApi(api, KheopsSharerSettings()).introspect(value)
        except DeliveryError as exc:
            results.append({"role": which, "url_api": api, "valid": False, "problem": exc.reason})
            continue
        problem = token_problem(which, seen, needed)
        results.append(
            {
                "role": which,
                "url_api": api,
                "active": seen.active,
                "scopes": sorted(seen.scopes),
                "needed": sorted(needed),
                "valid": problem is None,
                "problem": problem,
            }
        )
    return {"tokens": results, "valid": all(r["valid"] for r in results)}
