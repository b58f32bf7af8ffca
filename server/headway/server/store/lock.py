"""Exclusive use of one database file by one server process.

Two servers on one SQLite file would each keep their own revision counter in
memory and then collide on writes (IntegrityError), corrupting what
subscribers see. SQLite's own locks only serialise transactions, so the store
takes an advisory `flock` on `<database>.lock` before it touches the database
and keeps it until it closes. The kernel releases a `flock` when its holder
dies, even by SIGKILL, so a crashed server never blocks its restart; the file
itself stays (unlinking it would let two processes lock different inodes) and
only says who holds it, for the error message.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path


class DatabaseInUseError(RuntimeError):
    """Another process (or another store in this one) holds the database."""

    def __init__(self, database: Path, holder: str) -> None:
        super().__init__(
            f"database {database} is in use by {holder}; "
            "stop that server first or give this one another --database"
        )
        self.database = database
        self.holder = holder


def lock_path(database: Path) -> Path:
    """`headway.db` is locked through `headway.db.lock`, beside it."""
    return database.with_name(database.name + ".lock")


class DatabaseLock:
    """An exclusive, non-blocking `flock` on the lock file of one database."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise DatabaseInUseError naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise DatabaseInUseError(self.database, holder) from None
        except BaseException:
            os.close(fd)
            raise
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"process {os.getpid()} on {socket.gethostname()} (started {started})\n".encode(), 0
        )
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; the file stays, emptied, for the next holder."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


def _read(fd: int) -> str:
    """Who the lock file says holds it; empty while the holder is still writing it."""
    text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    return text or "another process"
