"""Which series were shared into which album: the `kheops_shares` table, so each is shared once.

An album is recorded as ``<index>:<url_api>`` within its destination: it names the album without its
tokens, which never go into the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from karnak_shared.database import KheopsShare


def album_key(index: int, url_api: str) -> str:
    """The database's name of an album of a destination."""
    return f"{index}:{url_api}"


class ShareRecords:
    """Reads and writes the shares of series into albums.

    The database is opened (and migrated) on first use and again after a failure, so a database that is
    down when the sharer starts delays the shares instead of stopping the service.
    """

    def __init__(self, open_sessions: Callable[[], sessionmaker[Session]]) -> None:
        self._open_sessions = open_sessions
        self._factory: sessionmaker[Session] | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the database now (it is opened on first use otherwise); raises the driver's error."""
        self._sessions().close()

    def _sessions(self) -> Session:
        with self._lock:
            if self._factory is None:
                self._factory = self._open_sessions()
            factory = self._factory
        return factory()

    def shared(self, destination: str, album: str, series_instance_uid: str) -> bool:
        """Whether the series was already shared into the album."""
        with self._sessions() as session:
            found = session.execute(
                select(KheopsShare.series_instance_uid).where(
                    KheopsShare.destination == destination,
                    KheopsShare.album == album,
                    KheopsShare.series_instance_uid == series_instance_uid,
                )
            ).first()
            return found is not None

    def record(self, destination: str, album: str, study_instance_uid: str, series_instance_uid: str) -> None:
        """Remember a share; a share recorded meanwhile by another replica is not an error."""
        with self._sessions() as session:
            session.add(
                KheopsShare(
                    destination=destination,
                    album=album,
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series_instance_uid,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
