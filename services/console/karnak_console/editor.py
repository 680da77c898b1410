"""Every change to the routing configuration: one revision through the revision store, one audit entry.

A resource handler takes the latest revision's document, changes its part of it (`mutate`), and
`RoutingEditor.change` stores the result as one revision: validated as a whole by the configuration's
own models, refused with 409 when another revision came after the one the caller based it on, announced
to the services, and audited with the diff (secrets masked).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, SecretStr

from karnak_console.audit import AuditLog
from karnak_console.masking import MASK, is_masked, mask, mask_headers, mask_secrets
from karnak_console.problems import ApiProblem, invalid
from karnak_console.security import Caller
from karnak_shared.config import RoutingConfig, has_reference
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.logs import EventLogger
from karnak_shared.revisions import (
    ApplyResult,
    Change,
    Document,
    Origin,
    Revision,
    RevisionConflict,
    RevisionStore,
    RoutingReadOnly,
    is_encrypted,
)
from karnak_shared.revisions.secrets import secret_paths

log = EventLogger("karnak.console.editor")

EMPTY_DOCUMENT: Document = {"forward_nodes": [], "projects": []}


class WriteResult(BaseModel):
    """What every write answers: the revision it created (or the current one when nothing changed)."""

    revision: int
    changed: bool
    changes: list[dict[str, Any]] = []
    dry_run: bool = False


def change_view(change: Change) -> dict[str, Any]:
    """A change as the API and the audit show it: secret values masked, wherever they sit."""
    leaf = change.path.rsplit(".", 1)[-1].split("[", 1)[0]
    secret = leaf in {"secret", "client_secret", "token_destination", "token_source", "private_key", "password"}
    in_headers = ".headers" in change.path

    def show(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and is_encrypted(value):
            return MASK
        if secret and isinstance(value, str):
            return mask(value)
        if in_headers:
            return mask_headers(value)
        return mask_secrets(value)

    return {"path": change.path, "kind": change.kind, "before": show(change.before), "after": show(change.after)}


def _value_at(model: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            model = model[part]
        elif isinstance(model, dict):
            model = model[part]
        else:
            model = getattr(model, part)
    return model


def _lookup(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(document, list) or part >= len(document):
                return None
        elif not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _store_at(document: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        document = document[part]
    document[path[-1]] = value


class RoutingEditor:
    def __init__(self, store: RevisionStore, audit: AuditLog, notify: Callable[[Revision], None]) -> None:
        self.store = store
        self.audit = audit
        self._notify = notify
        self._views: dict[int, Document] = {}
        self._lock = threading.Lock()

    # --- reading ---------------------------------------------------------------------------------

    def latest(self) -> Revision | None:
        return self.store.latest()

    def document(self) -> tuple[int, Document]:
        """(number, a copy of the document) of the latest revision; (0, empty) before the first."""
        latest = self.store.latest()
        if latest is None:
            return 0, copy.deepcopy(EMPTY_DOCUMENT)
        return latest.number, copy.deepcopy(latest.document)

    def validated(self, revision: Revision) -> RoutingConfig:
        return self.store.validate(revision.document)

    def masked(self, revision: Revision | None = None) -> tuple[int, Document]:
        """The document as the API shows it: every secret `••••cdef` (its real last four), references kept."""
        number, view = self.masked_view(revision)
        return number, copy.deepcopy(view)

    def masked_view(self, revision: Revision | None = None) -> tuple[int, Document]:
        """`masked` without the copy, for a reader that only reads it (the pages): never change it."""
        revision = revision or self.store.latest()
        if revision is None:
            return 0, EMPTY_DOCUMENT
        with self._lock:
            cached = self._views.get(revision.number)
        if cached is None:
            cached = self._mask(revision.document)
            with self._lock:
                self._views[revision.number] = cached
        return revision.number, cached

    def _mask(self, document: Document) -> Document:
        out = copy.deepcopy(document)
        try:
            routing = self.store.validate(document)
        except ConfigError:
            # Secrets that cannot be decrypted (another secrets.key): hide them without their last four.
            return mask_secrets(_hide_encrypted(out))  # type: ignore[no-any-return]
        for path in secret_paths(routing):
            written = _lookup(out, path)
            if not isinstance(written, str) or (has_reference(written) and not is_encrypted(written)):
                continue
            real = _value_at(routing, path)
            text = real.get_secret_value() if isinstance(real, SecretStr) else real
            shown = mask_headers(text) if "headers" in path else mask(str(text))
            _store_at(out, path, shown)
        return out

    # --- writing ---------------------------------------------------------------------------------

    def change(
        self,
        caller: Caller,
        *,
        action: str,
        object: str,  # noqa: A002 - the audit's word
        mutate: Callable[[Document], None],
        based_on: int | None = None,
        comment: str = "",
        dry_run: bool = False,
    ) -> WriteResult:
        """Store the latest document changed by `mutate` as one revision; see the module's docstring."""
        number, document = self.document()
        if based_on is not None and based_on != number:
            raise ApiProblem(
                409,
                f"this change was based on revision {based_on} but the configuration is at revision {number}: "
                "read it again and retry",
                revision=number,
            )
        before = copy.deepcopy(document)
        mutate(document)
        return self.store_document(
            caller,
            action=action,
            object=object,
            document=document,
            previous=before,
            based_on=number,
            comment=comment,
            dry_run=dry_run,
        )

    def store_document(
        self,
        caller: Caller,
        *,
        action: str,
        object: str,  # noqa: A002
        document: Document,
        previous: Document,
        based_on: int,
        comment: str = "",
        dry_run: bool = False,
        origin: Origin | None = None,
    ) -> WriteResult:
        keep_masked_secrets(document, previous)
        try:
            result: ApplyResult = self.store.apply(
                document,
                author=caller.actor,
                origin=origin or ("console" if caller.origin == "console" else "api"),
                comment=comment or f"{action} {object}",
                based_on=based_on,
                dry_run=dry_run,
            )
        except RevisionConflict as exc:
            raise ApiProblem(409, str(exc), revision=exc.winner.number) from None
        except RoutingReadOnly as exc:
            raise ApiProblem(409, str(exc)) from None
        except ConfigError as exc:
            raise invalid(exc) from None
        changes = [change_view(c) for c in result.changes]
        if result.stored and result.revision is not None:
            self.audit.record(
                actor=caller.actor,
                origin=caller.origin,
                client=caller.client,
                action=action,
                object=object,
                revision=result.number,
                diff=changes,
            )
            try:
                self._notify(result.revision)
            except KarnakError as exc:
                # Stored all the same: every service also checks the latest revision every 30 s.
                log.warning("config.notify-failed", revision=result.number, error=str(exc))
        return WriteResult(revision=result.number, changed=result.changed, changes=changes, dry_run=dry_run)


def _hide_encrypted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _hide_encrypted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_encrypted(v) for v in value]
    return MASK if is_encrypted(value) else value


def keep_masked_secrets(document: Any, previous: Any) -> None:
    """Where a client sent back a mask it was shown (`••••cdef`), keep the secret the revision holds.

    Matching is by path, and inside lists by the element's natural key (id, ae_title, name, code) so a
    reordered list keeps each element's own secret.
    """
    if isinstance(document, dict) and isinstance(previous, dict):
        for key, value in list(document.items()):
            old = previous.get(key)
            if is_masked(value) or (key == "headers" and _has_masked_header(value)):
                if old is None:
                    raise ApiProblem(
                        422,
                        "a masked secret was sent where none is stored",
                        [_problem_at(key, "send the secret itself; a masked value only keeps a stored one")],
                    )
                document[key] = _merge_headers(value, old) if key == "headers" else old
            else:
                keep_masked_secrets(value, old)
    elif isinstance(document, list) and isinstance(previous, list):
        for index, item in enumerate(document):
            keep_masked_secrets(item, _counterpart(item, previous, index))


def _counterpart(item: Any, previous: list[Any], index: int) -> Any:
    if isinstance(item, dict):
        for key in ("id", "ae_title", "name", "code"):
            if key in item:
                return next((p for p in previous if isinstance(p, dict) and p.get(key) == item[key]), None)
    return previous[index] if index < len(previous) else None


def _has_masked_header(value: Any) -> bool:
    if isinstance(value, dict):
        return any(is_masked(v) for v in value.values())
    return isinstance(value, str) and MASK in value


def _merge_headers(value: Any, old: Any) -> Any:
    # A mapping keeps the stored value of each masked header; a Karnak-form text is kept whole.
    if isinstance(value, dict) and isinstance(old, dict):
        return {k: (old.get(k, v) if is_masked(v) else v) for k, v in value.items()}
    return old


def _problem_at(field: str, message: str) -> Any:
    from karnak_console.problems import FieldProblem

    return FieldProblem(field=field, message=message)
