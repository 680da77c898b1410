"""``action.replace.api``: the values an HTTP API gives, for the attributes a profile element covers.

The DICOM library leaves the call to its caller (`karnak_dicom.deid.ReplaceApiCall`); this is the caller
the processor injects, with the HTTP client, OAuth2 auth configs and templates of the ``api`` pseudonym
source (`karnak_processor.http_api`). Per element and instance: the URL (and, for POST, the body) is
rendered on the original instance, the JSON answer is read at ``responsePath`` (a JSON pointer,
``/a/b/0``), and that value replaces every covered attribute. As in Karnak:
- no value at the path (or null, an object, a list): ``defaultValue`` when the element has one; otherwise
  the covered attributes are left to the next profile elements;
- HTTP 4xx (but 408 and 429), an answer that is not JSON, or an ``authConfig`` that names no auth config:
  the instance cannot be made for this destination (`ReplaceApiFailed`, not transient: parked with the
  reason);
- HTTP 5xx, 408, 429, a timeout or a network error: transient (`ReplaceApiFailed` with ``transient``, the
  instance is retried later).
Reasons name the element and the service's origin, never a URL's path or query nor a value of the instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydicom import Dataset
from pydicom.datadict import dictionary_VR

from karnak_dicom.deid import Profile, ReplaceApiCall, ReplaceApiElement
from karnak_dicom.language import DatasetValues
from karnak_processor.http_api import (
    ApiCallFailed,
    ClientCredentials,
    HttpApi,
    TokenCache,
    json_string,
    origin,
    quote_url_value,
)
from karnak_shared.config import AuthConfig
from karnak_shared.errors import KarnakError

__all__ = ["ApiReplacements", "ReplaceApiFailed", "replace_api_caller"]

DEFAULT_TIMEOUT: Final = 10.0


class ReplaceApiFailed(KarnakError):
    """An ``action.replace.api`` element got no usable answer; ``transient`` when trying later may help."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        self.reason = reason
        self.transient = transient
        super().__init__(reason)


def replace_api_caller(
    profile: Profile, auth_configs: Iterable[AuthConfig], *, timeout: float = DEFAULT_TIMEOUT
) -> ReplaceApiCall:
    """The caller of `profile`'s ``action.replace.api`` elements, with the routing configuration's auth configs."""
    credentials = {
        auth.code: ClientCredentials(
            str(auth.access_token_url),
            auth.client_id.get_secret_value(),
            auth.client_secret.get_secret_value(),
            auth.scope,
        )
        for auth in auth_configs
    }
    return ApiReplacements(credentials, timeout)


class ApiReplacements:
    """Calls the APIs of a profile's elements; one OAuth2 token cache per auth config, shared by its elements."""

    def __init__(self, credentials: Mapping[str, ClientCredentials], timeout: float = DEFAULT_TIMEOUT) -> None:
        self._tokens = {code: TokenCache(given, timeout) for code, given in credentials.items()}
        self._timeout = timeout

    def __call__(self, element: ReplaceApiElement, dataset: Dataset) -> Mapping[int, str]:
        where = f"action.replace.api of profileElements[{element.index}]"
        code = element.auth_config
        tokens = None
        if code:
            tokens = self._tokens.get(code)
            if tokens is None:
                raise ReplaceApiFailed(f"{where}: no auth config '{code}' in auth_configs", transient=False)
        values = DatasetValues(dataset)
        url = element.url.render(values, quote_url_value)
        data = None
        content_type = "application/json"
        if element.method == "POST":
            body = element.body.source if element.body is not None else ""
            as_json = body.lstrip().startswith(("{", "["))
            content_type = "application/json" if as_json else "text/plain; charset=utf-8"
            rendered = element.body.render(values, json_string if as_json else str) if element.body else ""
            data = rendered.encode("utf-8")
        api = HttpApi(f"{where}: the API {origin(url)}", self._timeout, tokens)
        try:
            answer = api.call(url, element.method, data, content_type)
        except ApiCallFailed as exc:
            raise ReplaceApiFailed(exc.reason, transient=exc.transient) from None
        try:
            document = json.loads(answer.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ReplaceApiFailed(f"{api.who} did not answer JSON", transient=False) from None
        value = _at_pointer(document, element.response_path)
        if value is None or isinstance(value, bool | dict | list):
            value = element.default_value
        if value is None:
            return {}
        text = str(value)
        return dict.fromkeys(_covered_tags(dataset, element), text)


def _at_pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901), or None when the document has nothing there."""
    value = document
    for raw in pointer.split("/")[1:] if pointer else ():
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def _covered_tags(dataset: Dataset, element: ReplaceApiElement) -> set[int]:
    """The tags of the instance (at any depth) the element covers."""
    selector = element.selector
    found: set[int] = set()

    def collect(items: Dataset) -> None:
        for key in items.keys():
            tag = int(key)
            if selector.matches(tag):
                found.add(tag)
            # get_item leaves the element undecoded: only sequences are read, never the pixel data.
            vr = items.get_item(key).VR or _dictionary_vr(tag)
            if vr == "SQ":
                for item in items[key].value or ():
                    collect(item)

    collect(dataset)
    return found


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None
