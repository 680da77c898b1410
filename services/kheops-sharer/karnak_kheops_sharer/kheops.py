"""The two calls of the Kheops API the sharer makes (DESIGN.md section 9, as Karnak makes them).

- ``POST {url_api}/token/introspect`` with the form field ``token`` and ``Authorization: Bearer`` the same
  token: is it active, and with which scopes?
- ``PUT {url_api}/studies/{StudyUID}/series/{SeriesUID}`` with ``Authorization: Bearer <destination
  token>`` and ``X-Authorization-Source: Bearer <source token>``: share the series from the source album
  into the destination album.

Network errors, 5xx, 429 and 408 are transient. A 404 on the share is transient too: Kheops may not list
a series yet for a moment after its STOW. 401/403 and other 4xx are permanent. Tokens never appear in a
message raised here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import quote

import requests

from karnak_kheops_sharer.settings import KheopsSharerSettings
from karnak_shared.errors import PermanentDeliveryError, TransientDeliveryError

SOURCE_HEADER = "X-Authorization-Source"


@dataclass(frozen=True)
class Introspection:
    """What Kheops says about a token."""

    active: bool
    scopes: frozenset[str]
    refused_status: int | None = None  # the HTTP status when Kheops would not introspect it at all

    def lacks(self, needed: frozenset[str]) -> frozenset[str]:
        """The needed scopes the token does not have."""
        return needed - self.scopes


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _transient(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class KheopsApi:
    """Calls to one Kheops API (`url_api`), one session per thread so connections are reused."""

    def __init__(self, url_api: str, settings: KheopsSharerSettings) -> None:
        self.url_api = url_api.rstrip("/")
        self._settings = settings
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self._settings.verify
            # With no auth set, requests takes credentials from ~/.netrc and they replace the Authorization
            # header; a no-op auth keeps ours (proxies from the environment still apply).
            session.auth = _keep_headers
            self._local.session = session
        return session

    def introspect(self, token: str) -> Introspection:
        """Introspect `token`; raise `TransientDeliveryError` when Kheops cannot answer now."""
        url = f"{self.url_api}/token/introspect"
        try:
            answer = self._session().post(
                url,
                data={"token": token},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
                verify=self._settings.verify,  # per request: $REQUESTS_CA_BUNDLE overrides a session's
            )
        except requests.RequestException as exc:
            raise TransientDeliveryError(f"token introspection at {url} failed: {type(exc).__name__}") from None
        if _transient(answer.status_code):
            raise TransientDeliveryError(f"token introspection at {url} answered HTTP {answer.status_code}")
        if answer.status_code in (401, 403):
            return Introspection(False, frozenset(), refused_status=answer.status_code)
        if not 200 <= answer.status_code < 300:
            raise PermanentDeliveryError(f"token introspection at {url} answered HTTP {answer.status_code}")
        try:
            data = answer.json()
        except ValueError:
            raise PermanentDeliveryError(f"token introspection at {url} did not answer JSON") from None
        if not isinstance(data, dict):
            raise PermanentDeliveryError(f"token introspection at {url} did not answer a JSON object")
        scope = data.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        return Introspection(data.get("active") is True, scopes)

    def share_series(self, study_uid: str, series_uid: str, destination_token: str, source_token: str) -> int:
        """Share a series into the destination token's album; return the HTTP status (2xx), raise otherwise."""
        url = f"{self.url_api}/studies/{quote(study_uid, safe='')}/series/{quote(series_uid, safe='')}"
        try:
            answer = self._session().put(
                url,
                headers={
                    "Authorization": f"Bearer {destination_token}",
                    SOURCE_HEADER: f"Bearer {source_token}",
                    "Accept": "application/json",
                },
                timeout=self._timeout,
                allow_redirects=False,
                verify=self._settings.verify,
            )
        except requests.RequestException as exc:
            raise TransientDeliveryError(f"sharing at {self.url_api} failed: {type(exc).__name__}") from None
        status = answer.status_code
        if 200 <= status < 300:
            return status
        if _transient(status) or status == 404:
            raise TransientDeliveryError(f"sharing at {self.url_api} answered HTTP {status}")
        if status in (401, 403):
            raise PermanentDeliveryError(
                f"sharing at {self.url_api} answered HTTP {status}: a token is not allowed to share this series"
            )
        raise PermanentDeliveryError(f"sharing at {self.url_api} answered HTTP {status}")

    def close(self) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
