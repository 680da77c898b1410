"""Secrets inside a routing document: kept as `${ENV}`/`${file:}` references, or encrypted (DESIGN.md section 14).

A revision never holds a secret in clear. A secret field (every `SecretStr` of the routing models, and a
stow destination's `headers`) whose value holds a reference is stored as written: the reference is
resolved by each service when it builds the revision. Any other value is a literal secret: it is
encrypted with AES-256-GCM under `secrets.key` and stored as ``${encrypted:<base64 of nonce + ciphertext>}``,
which `karnak config export` prints and `karnak config apply` takes back unchanged.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, SecretStr

from karnak_shared.config import FieldPath, RoutingConfig, SecretsSettings, format_path, has_reference
from karnak_shared.errors import ConfigError

_PREFIX = "${encrypted:"
# Binds a ciphertext to its purpose: a token of another AES-GCM use of the same key does not decrypt here.
_ASSOCIATED_DATA = b"karnak config secret v1"


def is_encrypted(value: Any) -> bool:
    """Whether a document value is an encrypted secret."""
    return isinstance(value, str) and value.startswith(_PREFIX) and value.endswith("}")


class SecretCipher:
    """AES-256-GCM with the configured `secrets.key`; a fresh random nonce per secret."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("secrets.key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: SecretsSettings) -> SecretCipher | None:
        key = settings.key_bytes()
        return None if key is None else cls(key)

    def encrypt(self, plaintext: str) -> str:
        """The document form of a secret: ``${encrypted:...}``."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _ASSOCIATED_DATA)
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii") + "}"

    def decrypt_body(self, body: str) -> str:
        """The secret of an ``${encrypted:BODY}`` reference; ValueError (never quoting it) when it cannot."""
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
        except (binascii.Error, ValueError):
            raise ValueError("the encrypted secret is damaged (not base64)") from None
        if len(raw) < 12 + 16:
            raise ValueError("the encrypted secret is damaged (too short)")
        try:
            return self._aead.decrypt(raw[:12], raw[12:], _ASSOCIATED_DATA).decode("utf-8")
        except InvalidTag:
            raise ValueError(
                "the encrypted secret does not decrypt with secrets.key (encrypted with another key, or damaged)"
            ) from None

    def decrypt(self, token: str) -> str:
        """The secret of a document value ``${encrypted:...}``."""
        if not is_encrypted(token):
            raise ValueError("not an encrypted secret")
        return self.decrypt_body(token[len(_PREFIX) : -1])


def _is_secret_field(model: BaseModel, name: str) -> bool:
    extra = type(model).model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get("secret") is True


def secret_paths(model: BaseModel, path: FieldPath = ()) -> Iterator[FieldPath]:
    """The path of every secret value of a validated routing configuration (or any part of it)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        here = (*path, name)
        if isinstance(value, SecretStr):
            yield here
        elif _is_secret_field(model, name):
            if isinstance(value, dict):
                yield from ((*here, key) for key in value)
            elif value is not None:
                yield here
        elif isinstance(value, BaseModel):
            yield from secret_paths(value, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from secret_paths(item, (*here, index))


def _lookup(document: Any, path: FieldPath) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(document, list) or part >= len(document):
                return None
        elif not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _store(document: Any, path: FieldPath, value: str) -> None:
    for part in path[:-1]:
        document = document[part]
    document[path[-1]] = value


def encode_secrets(
    document: dict[str, Any],
    routing: RoutingConfig,
    cipher: SecretCipher | None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document as a revision stores it: every literal secret encrypted, references kept.

    `routing` is the document validated (it says which values are secrets). A secret equal to one of the
    `previous` revision keeps that revision's ciphertext, so applying the same file twice changes nothing.
    Raises `ConfigError` naming each literal secret when there is no key to encrypt it with.
    """
    encoded = copy.deepcopy(document)
    reusable: dict[str, str] = {}
    if previous is not None and cipher is not None:
        for token in _encrypted_values(previous):
            try:
                reusable.setdefault(cipher.decrypt(token), token)
            except ValueError:
                continue  # encrypted under an older key: re-encrypted below
    problems = []
    for path in secret_paths(routing):
        value = _lookup(encoded, path)
        if not isinstance(value, str) or value == "" or has_reference(value):
            continue
        if cipher is None:
            problems.append(
                f"{format_path(path)}: a secret written in clear can only be stored encrypted: set secrets.key "
                "in the service settings, or give it as ${ENV_VAR} or ${file:/path}"
            )
            continue
        _store(encoded, path, reusable.get(value) or cipher.encrypt(value))
    if problems:
        raise ConfigError(problems)
    return encoded


def _encrypted_values(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        for value in document.values():
            yield from _encrypted_values(value)
    elif isinstance(document, list):
        for value in document:
            yield from _encrypted_values(value)
    elif is_encrypted(document):
        yield document
