"""Versioned routing configuration (DESIGN.md section 14): revisions in SQL, their secrets, diffs and commands.

The API the services, the console and `karnak config` build on::

    store = RevisionStore.open("karnak.yml")          # settings from the file, revisions in its database
    revision = store.check()                          # bootstrap / file mode; the latest revision
    config = store.gateway_config(revision)           # the GatewayConfig a service runs
    result = store.apply(document, author="alice", origin="console", based_on=revision.number)
    store.notify(result.revision)                     # {"revision": N, "checksum": ...} to <prefix>.config
"""

from karnak_shared.revisions.document import Change, Document, checksum, diff_documents, format_changes, to_yaml
from karnak_shared.revisions.secrets import SecretCipher, is_encrypted
from karnak_shared.revisions.store import (
    ApplyResult,
    Origin,
    Revision,
    RevisionConflict,
    RevisionNotFound,
    RevisionNotice,
    RevisionStore,
    RevisionStoreUnavailable,
    RoutingFile,
    RoutingReadOnly,
    default_author,
    read_routing_file,
)

__all__ = [
    "ApplyResult",
    "Change",
    "Document",
    "Origin",
    "Revision",
    "RevisionConflict",
    "RevisionNotFound",
    "RevisionNotice",
    "RevisionStore",
    "RevisionStoreUnavailable",
    "RoutingFile",
    "RoutingReadOnly",
    "SecretCipher",
    "checksum",
    "default_author",
    "diff_documents",
    "format_changes",
    "is_encrypted",
    "read_routing_file",
    "to_yaml",
]
