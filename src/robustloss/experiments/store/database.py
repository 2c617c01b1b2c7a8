"""``StoreDatabase``: one open results file, the part of ``ResultsStore`` that is about the file
rather than about what is in it.

Opening sets the SQLite modes that let several runner processes share the file (WAL, a generous
busy timeout) and migrates it to the current schema; ``transaction`` is the one way the store
writes; ``check_integrity`` and the decoders ``_json`` and ``_arrays`` turn damage into
``StoreError``. ``ResultsStore`` inherits all of it and adds the queries.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from robustloss.experiments.store.connection import StoreError, _GuardedConnection, _translated, damaged_store_message
from robustloss.experiments.store.migrations import migrate, stored_version
from robustloss.experiments.store.rows import _unpack

_Database = TypeVar("_Database", bound="StoreDatabase")


class StoreDatabase:
    """One SQLite results file; safe to open from several processes at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._depth = 0  # nesting level of transaction(): only the outermost one BEGINs and COMMITs
        # isolation_level=None: the sqlite3 module never opens transactions behind our back.
        try:
            connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise _translated(self.path, exc) or StoreError(f"cannot open the results store {self.path}: {exc}") \
                from exc
        self._conn = _GuardedConnection(connection, self.path)
        try:
            # busy_timeout first, so that switching a fresh file to WAL waits for a concurrent opener.
            self._conn.execute("PRAGMA busy_timeout=60000")
            self._enable_wal()
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode; no fsync per commit
            migrate(self._conn, self.transaction)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{self.path} is not a usable results store: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _enable_wal(self, patience: float = 60.0) -> None:
        """Switch to WAL, retrying: the switch needs a moment of exclusive access, and SQLite does not
        always apply the busy timeout to it while another process is creating the same file."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- connection and transactions -----------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def _json(self, text: str) -> Any:
        """A JSON column; text SQLite returns but JSON cannot read means damaged content (quick_check
        checks the file's structure, not what the rows hold)."""
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(damaged_store_message(self.path, f"a stored JSON value is unreadable: {exc}")) from exc

    def _arrays(self, blob: bytes) -> dict[str, np.ndarray]:
        """A stored ``.npz`` blob of per-sample outcomes; unreadable bytes mean damaged content."""
        try:
            return _unpack(blob)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise StoreError(damaged_store_message(self.path, f"a stored array blob is unreadable: {exc}")) from exc

    def check_integrity(self) -> None:
        """Refuse a damaged file before writing to it: SQLite's ``quick_check`` reads every page (well
        under a second for a store of a few hundred MB), where a query would only meet the damage
        when it reaches it, maybe after hours of work whose results then could not be stored."""
        problems = [row[0] for row in self._conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
            raise StoreError(damaged_store_message(self.path, f"quick_check: {problems[0]}{more}"))

    def __enter__(self: _Database) -> _Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[_GuardedConnection]:
        """One atomic unit of writes. Nested uses join the outer transaction.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so two writers queue on busy_timeout
        instead of one failing with "database is locked" when it upgrades a read lock.
        A nested block runs under a savepoint: an exception it raises undoes only its own
        writes if the caller catches it, and everything if the caller does not.
        """
        if self._depth:
            savepoint = f"sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute(f"ROLLBACK TO {savepoint}")
                self._conn.execute(f"RELEASE {savepoint}")
                raise
            else:
                self._conn.execute(f"RELEASE {savepoint}")
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # a failed COMMIT also leaves the transaction open
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        return stored_version(self._conn)
