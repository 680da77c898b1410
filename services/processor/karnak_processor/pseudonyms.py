"""Pseudonym sources: where a de-identifying destination gets the pseudonym of an instance's patient.

- ``hash`` (the default): the first 8 bytes of HMAC-SHA256(project secret, PatientID) in upper-case hex,
  so the gateway works without any pseudonym service. The PatientID is hashed as US-ASCII with '?' for
  any other character, as Karnak's Java code does.
- ``tag``: read from an attribute of the instance, optionally one part of it (delimiter and zero-based
  position).
- ``cache``: looked up in the project's table of (PatientID, IssuerOfPatientID) -> pseudonym, filled by
  `karnak pseudonyms import`; the destination's default issuer stands in when the instance has none.
- ``api``: an HTTP call whose URL and body are templates with ``{{ expression }}`` placeholders evaluated
  on the instance, the pseudonym being read from the JSON answer at a path; optionally authenticated
  with an OAuth2 client-credentials token, cached until it expires.

A source raises `PseudonymMissing` when there is no pseudonym to be had (the instance is rejected for the
destination with the reason) and `PseudonymUnavailable` when the source cannot answer now (network error,
server error, database down: the instance is retried later). Reasons never contain patient data, nor
URLs with their query (which may carry a patient id), nor secrets.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydicom import Dataset
from pydicom.datadict import keyword_dict
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from karnak_dicom.attributes import attribute_text
from karnak_dicom.deid.expressions import Expression, ExpressionError, split_template
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
from karnak_shared.config import Pseudonym
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.pseudonym_store import PSEUDONYM_MAX_LENGTH, lookup_pseudonym

__all__ = [
    "ApiPseudonyms",
    "ApiSettings",
    "CachedPseudonyms",
    "ClientCredentials",
    "HashPseudonyms",
    "PlaceholderCompiler",
    "PseudonymMissing",
    "PseudonymSource",
    "PseudonymUnavailable",
    "TagPseudonyms",
    "pseudonym_source",
]

SessionFactory = Callable[[], Session]
Placeholder = Callable[[Dataset], object]
PlaceholderCompiler = Callable[[str], Placeholder]
"""Turns the text of a ``{{ expression }}`` into a function of the instance; raises ConfigError if invalid."""

_ANSWER_CACHE_SIZE: Final = 10_000
_ANSWER_CACHE_SECONDS: Final = 600.0


class PseudonymMissing(KarnakError):
    """There is no pseudonym for the instance's patient: reject the instance for this destination.

    `reason` says why without any patient data; it goes into the `transfer.rejected` event.
    """

    transient = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PseudonymUnavailable(KarnakError):
    """The pseudonym source cannot answer now (network, server error, database): retry the instance later."""

    transient = True

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PseudonymSource(ABC):
    """Gives the pseudonym of an instance's patient."""

    @abstractmethod
    def pseudonym_for(self, dataset: Dataset) -> str:
        """The pseudonym; raises `PseudonymMissing` or `PseudonymUnavailable`."""


def pseudonym_source(
    config: Pseudonym,
    project_secret: bytes,
    session_factory: SessionFactory | None,
    default_issuer: str | None,
    *,
    project: str | None = None,
    placeholders: PlaceholderCompiler | None = None,
) -> PseudonymSource:
    """The source a destination's `pseudonym` configuration asks for.

    `project` names the project whose cache the ``cache`` type reads. `placeholders` compiles the
    expressions of ``api`` templates (by default: ``getString(tag)`` and quoted strings). Raises
    `ConfigError` naming the field when the configuration cannot work.
    """
    if config.type == "hash":
        return HashPseudonyms(project_secret)
    if config.type == "tag":
        if not config.tag:
            raise ConfigError("pseudonym.tag: is required when the pseudonym type is tag")
        return TagPseudonyms(parse_tag(config.tag, "pseudonym.tag"), config.delimiter, config.position)
    if config.type == "cache":
        if session_factory is None:
            raise ConfigError("pseudonym.type: cache needs the database (database.url)")
        if not project:
            raise ConfigError("pseudonym.type: cache needs the project whose pseudonyms it reads")
        return CachedPseudonyms(session_factory, project, default_issuer)
    if not config.url:
        raise ConfigError("pseudonym.url: is required when the pseudonym type is api")
    settings = ApiSettings(
        url=config.url,
        method=config.method,
        body=config.body,
        response_path=config.response_path,
        timeout=config.timeout,
        credentials=_client_credentials(config),
    )
    return ApiPseudonyms(settings, placeholders or compile_get_string)


def _client_credentials(config: Pseudonym) -> ClientCredentials | None:
    # Read with getattr: the OAuth2 fields (token_url, client_id, client_secret, scope) are optional in the model.
    token_url: str | None = getattr(config, "token_url", None)
    client_id: str | None = getattr(config, "client_id", None)
    secret: Any = getattr(config, "client_secret", None)
    scope: str | None = getattr(config, "scope", None)
    given = [
        name for name, value in (("token_url", token_url), ("client_id", client_id), ("client_secret", secret)) if value
    ]
    if not given:
        return None
    missing = sorted({"token_url", "client_id", "client_secret"} - set(given))
    if missing:
        raise ConfigError(f"pseudonym.{missing[0]}: is required with {', '.join(given)} (OAuth2 client credentials)")
    secret_text = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    assert token_url is not None and client_id is not None
    return ClientCredentials(token_url, client_id, secret_text, scope)


# --- hash ------------------------------------------------------------------------------------------------


class HashPseudonyms(PseudonymSource):
    """The first 8 bytes of HMAC-SHA256(project secret, PatientID), upper-case hexadecimal."""

    def __init__(self, project_secret: bytes) -> None:
        self._secret = project_secret

    def pseudonym_for(self, dataset: Dataset) -> str:
        patient_id = _patient_id(dataset)
        return hmac.digest(self._secret, patient_id.encode("ascii", "replace"), "sha256")[:8].hex().upper()


def _patient_id(dataset: Dataset) -> str:
    patient_id = attribute_text(dataset, 0x00100020)
    if not patient_id:
        # A shared pseudonym for every patient without an id would merge them into one research subject.
        raise PseudonymMissing("the instance has no PatientID to derive a pseudonym from")
    return patient_id


# --- tag -------------------------------------------------------------------------------------------------


_HEX_TAG: Final = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?")


def parse_tag(text: str, field_name: str) -> int:
    """A tag written as ``(gggg,eeee)``, ``gggg,eeee``, ``ggggeeee``, a keyword or ``#Tag.Keyword``."""
    stripped = text.strip()
    match = _HEX_TAG.fullmatch(stripped)
    if match:
        return int(match.group(1) + match.group(2), 16)
    keyword = stripped.removeprefix("#Tag.")
    tag = keyword_dict.get(keyword)
    if tag is None and stripped.startswith("#Tag."):
        raise ConfigError(f"{field_name}: unknown DICOM keyword '{keyword}'")
    if tag is None:
        raise ConfigError(f"{field_name}: '{text}' is neither a tag such as (0010,0020) nor a DICOM keyword")
    return tag


class TagPseudonyms(PseudonymSource):
    """The value of an attribute, or its `position`-th part (from 0) when split at `delimiter`."""

    def __init__(self, tag: int, delimiter: str | None, position: int | None) -> None:
        self._tag = tag
        self._delimiter = delimiter or None
        self._position = position or 0
        self._name = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"

    def pseudonym_for(self, dataset: Dataset) -> str:
        value = attribute_text(dataset, self._tag)
        if value is None:
            raise PseudonymMissing(f"the instance has no {self._name} to read the pseudonym from")
        if self._delimiter is not None:
            parts = value.split(self._delimiter)
            if self._position >= len(parts):
                raise PseudonymMissing(
                    f"{self._name} has {len(parts)} part(s) separated by {self._delimiter!r}: "
                    f"no part at position {self._position}"
                )
            value = parts[self._position]
        return _checked(value, f"{self._name}")


# --- cache -----------------------------------------------------------------------------------------------


class CachedPseudonyms(PseudonymSource):
    """The pseudonym imported for (PatientID, IssuerOfPatientID) in the project's cache."""

    def __init__(self, session_factory: SessionFactory, project: str, default_issuer: str | None) -> None:
        self._sessions = session_factory
        self._project = project
        self._default_issuer = (default_issuer or "").strip()

    def pseudonym_for(self, dataset: Dataset) -> str:
        patient_id = _patient_id(dataset)
        issuer = attribute_text(dataset, 0x00100021) or self._default_issuer
        try:
            pseudonym = lookup_pseudonym(self._sessions, self._project, patient_id, issuer)
        except SQLAlchemyError as exc:
            # The exception's text quotes the query's parameters, the patient id among them.
            raise PseudonymUnavailable(
                f"the pseudonym cache of project {self._project} cannot be read: {type(exc).__name__}"
            ) from None
        if pseudonym is None:
            issuer_text = "with the issuer of patient id given" if issuer else "without an issuer of patient id"
            raise PseudonymMissing(
                f"no pseudonym for this patient ({issuer_text}) in the pseudonym cache of project {self._project}"
            )
        return _checked(pseudonym, f"the pseudonym cache of project {self._project}")


# --- api -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiSettings:
    """How to ask a pseudonym service; `url` and `body` may hold ``{{ expression }}`` placeholders."""

    url: str
    method: Literal["GET", "POST"] = "GET"
    body: str | None = None
    response_path: str | None = None
    timeout: float = 10.0
    credentials: ClientCredentials | None = None


class ApiPseudonyms(PseudonymSource):
    """Asks an HTTP service; answers are remembered for a while, so a study costs one call per patient."""

    def __init__(self, settings: ApiSettings, placeholders: PlaceholderCompiler | None = None) -> None:
        compile_placeholder = placeholders or compile_get_string
        self._settings = settings
        self._url = _Template(settings.url, compile_placeholder, "pseudonym.url", quote_url_value)
        body = settings.body or ""
        as_json = body.lstrip().startswith(("{", "["))
        self._body = _Template(body, compile_placeholder, "pseudonym.body", json_string if as_json else str)
        self._content_type = "application/json" if as_json else "text/plain; charset=utf-8"
        self._path = JsonPath(settings.response_path) if settings.response_path else None
        self._where = origin(settings.url)
        tokens = TokenCache(settings.credentials, settings.timeout) if settings.credentials else None
        self._api = HttpApi(f"the pseudonym service {self._where}", settings.timeout, tokens)
        self._answers: OrderedDict[tuple[str, bytes | None], tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def pseudonym_for(self, dataset: Dataset) -> str:
        url = self._url.render(dataset)
        data = self._body.render(dataset).encode("utf-8") if self._settings.method == "POST" else None
        key = (url, data)
        with self._lock:
            remembered = self._answers.get(key)
            if remembered is not None and remembered[0] > time.monotonic():
                self._answers.move_to_end(key)
                return remembered[1]
        pseudonym = self._ask(url, data)
        with self._lock:
            self._answers[key] = (time.monotonic() + _ANSWER_CACHE_SECONDS, pseudonym)
            self._answers.move_to_end(key)
            while len(self._answers) > _ANSWER_CACHE_SIZE:
                self._answers.popitem(last=False)
        return pseudonym

    def _ask(self, url: str, data: bytes | None) -> str:
        try:
            answer = self._api.call(url, self._settings.method, data, self._content_type)
        except ApiCallFailed as exc:
            raise (PseudonymUnavailable if exc.transient else PseudonymMissing)(exc.reason) from None
        return self._read(answer)

    def _read(self, answer: bytes) -> str:
        text = answer.decode("utf-8", errors="replace").strip()
        where = f"the pseudonym service {self._where}"
        if self._path is None:
            if text.startswith('"'):
                try:
                    text = str(json.loads(text))
                except ValueError:
                    pass
            return _checked(text, where)
        try:
            document = json.loads(text)
        except ValueError:
            raise PseudonymMissing(f"{where} did not answer JSON, so {self._path.text} cannot be read") from None
        value = self._path.find(document)
        if value is None or isinstance(value, bool | dict | list):
            raise PseudonymMissing(f"{where} answered without a pseudonym at {self._path.text}")
        return _checked(str(value), where)


# --- templates and JSON paths ----------------------------------------------------------------------------


class _Template:
    """Text with ``{{ expression }}`` placeholders, each value escaped for where it lands."""

    def __init__(
        self, text: str, compile_placeholder: PlaceholderCompiler, field_name: str, escape: Callable[[str], str]
    ) -> None:
        self._parts: list[str | Placeholder] = []
        self._escape = escape
        try:
            pieces = split_template(text)
        except ExpressionError as exc:
            raise ConfigError(f"{field_name}: '{{{{' at position {exc.position} has no closing '}}}}'") from None
        for piece in pieces:
            if isinstance(piece, str):
                self._parts.append(piece)
                continue
            start, inner = piece
            try:
                self._parts.append(compile_placeholder(inner.strip()))
            except ConfigError as exc:
                raise ConfigError(f"{field_name}: placeholder at position {start}: {exc}") from None

    def render(self, dataset: Dataset) -> str:
        pieces: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                pieces.append(part)
            else:
                value = part(dataset)
                pieces.append("" if value is None else self._escape(str(value)))
        return "".join(pieces)


def compile_get_string(expression: str) -> Placeholder:
    """A placeholder of an API template: an expression of the template dialect, e.g. ``getString(#Tag.X)``,
    ``getString('gggg,eeee')`` or ``'text'`` (what Karnak's templates use), evaluated on the instance."""
    try:
        compiled = Expression.for_value(expression)
    except ExpressionError as exc:
        raise ConfigError(
            f"{exc}; an attribute is read with getString(#Tag.Keyword) or getString('gggg,eeee')"
        ) from None
    return lambda dataset: compiled.evaluate(DatasetValues(dataset))


_PATH_STEP: Final = re.compile(
    r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[\s*(\d+)\s*\]|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]"
)


class JsonPath:
    """A JSON path of the answer: ``$.a.b``, ``a.b[0]``, ``$['a key']`` (members and array indices)."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        path = self.text
        if path.startswith("$"):
            path = path[1:]
        elif path and not path.startswith(("[", ".")):
            path = "." + path
        self._steps: list[str | int] = []
        position = 0
        while position < len(path):
            match = _PATH_STEP.match(path, position)
            if match is None:
                raise ConfigError(f"pseudonym.response_path: cannot read '{text}' from position {position}")
            name, index, quoted, double_quoted = match.groups()
            if index is not None:
                self._steps.append(int(index))
            else:
                self._steps.append(next(part for part in (name, quoted, double_quoted) if part is not None))
            position = match.end()

    def find(self, document: Any) -> Any:
        """The value at the path, or None when the document has nothing there."""
        value = document
        for step in self._steps:
            if isinstance(step, int) and isinstance(value, list) and step < len(value):
                value = value[step]
            elif isinstance(step, str) and isinstance(value, dict) and step in value:
                value = value[step]
            else:
                return None
        return value


# --- values ----------------------------------------------------------------------------------------------


def _checked(pseudonym: str, source: str) -> str:
    """The pseudonym if it can be a PatientName (LO-sized, one value); PseudonymMissing otherwise."""
    value = pseudonym.strip()
    if not value:
        raise PseudonymMissing(f"the pseudonym from {source} is empty")
    if len(value) > PSEUDONYM_MAX_LENGTH:
        raise PseudonymMissing(f"the pseudonym from {source} is longer than {PSEUDONYM_MAX_LENGTH} characters")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise PseudonymMissing(f"the pseudonym from {source} contains a backslash or a control character")
    return value
