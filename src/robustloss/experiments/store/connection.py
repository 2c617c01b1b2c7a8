"""The connection to a results store's SQLite file, and ``StoreError``, the one error the store raises.

A damaged file (overwritten pages, truncated, not SQLite at all) can open fine and fail only when a
query reaches the bad pages. Every statement therefore goes through ``_GuardedConnection``, which turns
SQLite's "malformed", "not a database", "disk is full" and I/O errors, at open or at query time, into
one ``StoreError`` that says what happened and what to do; other errors (locks, constraint
violations, which are bugs) pass through unchanged.

This module knows nothing of the store's tables: it sits below the schema and the queries, so that
both can raise ``StoreError`` and run statements through the guard.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robustloss.errors import RobustlossError


class StoreError(RobustlossError):
    """The results store is unusable (newer schema, not a database) or a lookup/argument is wrong."""


def damaged_store_message(path: Path, detail: str) -> str:
    """What to say about a damaged store: the check that shows the damage and the two ways out."""
    return (f"{path} is not a usable results store: it is damaged ({detail}). `sqlite3 {path} 'PRAGMA "
            f"integrity_check'` lists what is broken. Nothing was changed in it. Restore it from a backup, or move "
            f"it away (mv {path} {path}.damaged; `sqlite3 {path}.damaged .recover` exports what is still "
            f"readable as SQL) and rerun `robustloss run` for your experiments: trained models and finished "
            f"evaluation chunks next to it are reused, so the new store fills up without training again")


def _translated(path: Path, exc: sqlite3.Error) -> StoreError | None:
    """The StoreError for an SQLite failure that makes the store file unusable; None for any other."""
    name = getattr(exc, "sqlite_errorname", "") or ""  # e.g. SQLITE_CORRUPT, SQLITE_IOERR_WRITE
    text = str(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return StoreError(damaged_store_message(path, text))
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return StoreError(f"no space left on device for the results store {path}: the write was rolled back and "
                          "everything stored before it is intact; free some space, then run the same command again")
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return StoreError(f"{path}: the system failed to read or write the results store ({text}); check the disk "
                          "(free space, a network file system that went away), then run the same command again")
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return StoreError(f"{path}: the results store cannot be written ({text}); make the file and its folder "
                          "writable, or copy them somewhere writable and pass --root there")
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return StoreError(f"{path}: cannot open the results store ({text}); check that its folder exists and that "
                          "you may write to it")
    return None


class _GuardedConnection:
    """The store's ``sqlite3.Connection``: statements and the rows they return, read lazily by cursors,
    raise ``StoreError`` (see ``_translated``) instead of raw ``sqlite3`` errors, wherever the damage is hit."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._connection, self.path = connection, path

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            translated = _translated(self.path, exc)
            if translated is None:
                raise
            raise translated from exc

    def execute(self, sql: str, parameters: Any = ()) -> _GuardedCursor:
        with self.guard():
            return _GuardedCursor(self._connection.execute(sql, parameters), self)

    def executemany(self, sql: str, rows: Any) -> _GuardedCursor:
        with self.guard():
            return _GuardedCursor(self._connection.executemany(sql, rows), self)

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def close(self) -> None:
        self._connection.close()


class _GuardedCursor:
    """A cursor whose fetches are guarded too: SQLite reads a result's pages while rows are fetched."""

    def __init__(self, cursor: sqlite3.Cursor, connection: _GuardedConnection):
        self._cursor, self._connection = cursor, connection

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        with self._connection.guard():
            return self._cursor.fetchone()

    def fetchall(self) -> list:
        with self._connection.guard():
            return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._connection.guard():
                rows = self._cursor.fetchmany(256)
            if not rows:
                return
            yield from rows

