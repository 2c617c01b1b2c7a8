"""The results store: every experiment run, its training log and its evaluation in one SQLite file.

Why SQLite: one file that several runner processes can write at once (WAL mode, ``BEGIN
IMMEDIATE`` transactions that wait for each other instead of failing), that survives a crash
mid-write (every public write is one transaction), and that ``sqlite3`` or any SQL tool can
read without robustloss installed.

Tables (see ``MIGRATIONS`` for the exact columns):

- ``runs``         one row per resolved run config (``hash`` is unique): status, folders, config.
- ``cells``        which grid cell of which experiment at which scale a run answers; several
                   cells may share one run (e.g. a model trained once and attacked by many cells).
- ``checkpoints``  saved model files with their sha256.
- ``metrics``      one row per training epoch (re-logging an epoch replaces it).
- ``evaluations``  one row per attack record: summary numbers plus the per-sample outcomes as
                   a compressed ``.npz`` blob, so ``load_evaluation`` rebuilds the exact
                   ``Evaluation`` that every table and diagnostic is computed from.
- ``clean``        the evaluated samples of a run (index, labels, clean predictions).
- ``diagnostics``  the gradient-masking checks of a run's latest evaluation.
- ``experiments``  the experiment documents (title, table layout, the paper's numbers).
- ``analyses``     analyses of trained models (``robustloss analyze``, or an experiment's
                   ``analyses:`` block): which models, the parameters, the PNG/CSV files
                   written, and a small summary table for the report.

Schema changes go through ``MIGRATIONS``: append ``(version, script)``; opening an older file
applies the missing scripts, one transaction each. Blobs are read with ``allow_pickle=False``,
so opening a results file never executes code.

A damaged file (overwritten pages, truncated, not SQLite at all) can open fine and fail only when a
query reaches the bad pages. Every statement therefore goes through ``_GuardedConnection``, which turns
SQLite's "malformed", "not a database", "disk is full" and I/O errors, at open or at query time, into
one ``StoreError`` that says what happened and what to do; other errors (locks, constraint
violations, which are bugs) pass through unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from robustloss.errors import RobustlossError

if TYPE_CHECKING:  # imported lazily: robustloss.evaluate loads torch, which store users often do not need
    from robustloss.evaluate.records import Evaluation


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


RUN_KINDS = ("model", "substitute")
STATUSES = ("pending", "training", "evaluating", "done", "failed")
ACTIVE_STATUSES = ("training", "evaluating")
FINAL_STATUSES = ("done", "failed")
EXPORT_FORMATS = ("csv", "json")
METRIC_COLUMNS = ("phase", "lr", "train_loss", "train_acc", "test_acc", "seconds")
EXPORT_COLUMNS = ("run_hash", "run_status", "name", "eps", "objective", "n", "accuracy", "mean_linf", "mean_l2")
MIN_PREFIX = 4  # shorter hash prefixes match too many runs to be a useful reference

_SCHEMA_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    experiment    TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL DEFAULT 'model' CHECK (kind IN ('model', 'substitute')),
    config_json   TEXT NOT NULL,
    train_hash    TEXT NOT NULL DEFAULT '',
    model_dir     TEXT NOT NULL DEFAULT '',
    run_dir       TEXT NOT NULL DEFAULT '',
    code_revision TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'training', 'evaluating', 'done', 'failed')),
    error         TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX runs_by_experiment ON runs (experiment, id);
CREATE TABLE cells (
    id         INTEGER PRIMARY KEY,  -- keeps grid order: upserts update in place
    experiment TEXT NOT NULL,
    scale      TEXT NOT NULL,
    cell_json  TEXT NOT NULL,
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    UNIQUE (experiment, scale, cell_json)
);
CREATE INDEX cells_by_run ON cells (run_id);
CREATE TABLE checkpoints (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, path, epoch)
);
CREATE TABLE metrics (
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    phase      TEXT,
    lr         REAL,
    train_loss REAL,
    train_acc  REAL,
    test_acc   REAL,
    seconds    REAL,
    extra_json TEXT NOT NULL DEFAULT '{}',
    UNIQUE (run_id, epoch)
);
CREATE TABLE evaluations (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    attack      TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    params_json TEXT NOT NULL,
    eps         REAL,
    eps_key     TEXT NOT NULL,  -- 'none' or repr(eps): NULLs are all distinct in a UNIQUE constraint
    norm        TEXT,
    objective   TEXT NOT NULL DEFAULT '',
    n           INTEGER NOT NULL,
    accuracy    REAL,
    mean_linf   REAL,
    mean_l2     REAL,
    seconds     REAL NOT NULL DEFAULT 0,
    samples     BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (run_id, name, eps_key, params_json)
);
CREATE TABLE clean (
    run_id     INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    n          INTEGER NOT NULL,
    accuracy   REAL,
    samples    BLOB NOT NULL,
    meta_json  TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE TABLE diagnostics (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    check_name   TEXT NOT NULL,
    status       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    numbers_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX diagnostics_by_run ON diagnostics (run_id, number);
"""

# (version, SQL script), ascending. Never edit a released script: append a new version instead.
# Version 2: the experiment documents (title, table layout, the paper's numbers), so reports are
# built from the store alone.
_SCHEMA_V2 = """
CREATE TABLE experiments (
    name TEXT NOT NULL,
    scale TEXT NOT NULL,
    document_json TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, scale)
);
"""

# Version 3: analyses of trained models, keyed by what they were computed from, so a report
# can pick up every analysis of its models and a repeated analysis replaces the old one.
_SCHEMA_V3 = """
CREATE TABLE analyses (
    id           INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    experiment   TEXT NOT NULL DEFAULT '',
    scale        TEXT NOT NULL DEFAULT '',
    name         TEXT NOT NULL,
    models_json  TEXT NOT NULL,
    params_json  TEXT NOT NULL,
    files_json   TEXT NOT NULL,
    summary_json TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
"""

MIGRATIONS: list[tuple[int, str]] = [(1, _SCHEMA_V1), (2, _SCHEMA_V2), (3, _SCHEMA_V3)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


@dataclass
class RunRow:
    id: int
    hash: str
    experiment: str
    name: str
    kind: str
    config: dict
    train_hash: str
    model_dir: str
    run_dir: str
    code_revision: str
    status: str
    error: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


@dataclass
class AnalysisRow:
    id: int
    key: str
    experiment: str
    scale: str
    name: str
    models: dict[str, str]  # label -> train hash (model folder name)
    params: dict
    files: list[str]  # absolute, or relative to the store's folder
    summary: list[dict]
    created_at: str


@dataclass
class CellRow:
    experiment: str
    scale: str
    cell: dict
    run_id: int


class ResultsStore:
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
            self._migrate()
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

    def __enter__(self) -> ResultsStore:
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
        return self._stored_version()

    def _stored_version(self) -> int:
        has_meta = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return 0  # a fresh file
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        latest = MIGRATIONS[-1][0]  # read at call time (not SCHEMA_VERSION) so tests can add migrations
        if self._stored_version() > latest:
            raise StoreError(
                f"{self.path} was written by a newer robustloss (schema version {self._stored_version()}, "
                f"this one knows up to {latest}); upgrade robustloss to open it")
        for version, script in MIGRATIONS:
            if self._stored_version() >= version:
                continue  # versions only grow, so this unlocked read is safe; it spares a write lock per open
            with self.transaction():
                # Re-read under the write lock: another process opening the same fresh file may
                # have applied this version while we waited.
                if self._stored_version() >= version:
                    continue
                try:
                    for statement in _statements(script):
                        self._conn.execute(statement)
                except sqlite3.Error as exc:
                    raise StoreError(f"could not migrate {self.path} to schema version {version}: {exc}") from exc
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(version),))

    # -- runs ----------------------------------------------------------------------------------

    def upsert_run(self, *, hash: str, experiment: str, name: str, config: dict, kind: str = "model",
                   train_hash: str = "", model_dir: str = "", run_dir: str = "", code_revision: str = "") -> int:
        """Insert a run as 'pending', or return the id of the run with this hash.

        An existing run keeps its status (a finished run must not be re-trained because a
        second grid points at it); only ``updated_at`` and a given ``code_revision`` change.
        """
        _check_choice("run kind", kind, RUN_KINDS)
        now = _now()
        with self.transaction():
            row = self._conn.execute(
                "INSERT INTO runs (hash, experiment, name, kind, config_json, train_hash, model_dir, run_dir,"
                " code_revision, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                " ON CONFLICT (hash) DO UPDATE SET updated_at = excluded.updated_at,"
                " code_revision = CASE WHEN excluded.code_revision != '' THEN excluded.code_revision"
                "                      ELSE runs.code_revision END"
                " RETURNING id",
                (hash, experiment, name, kind, _canonical(config), train_hash, model_dir, run_dir, code_revision,
                 now, now)).fetchall()
        return int(row[0][0])

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        """Move a run to ``status``; ``error`` replaces the stored error (None clears it).

        ``started_at`` records the first time the run became active; ``finished_at`` the last
        time it ended, and is cleared when a failed run is resumed.
        """
        _check_choice("status", status, STATUSES)
        now = _now()
        with self.transaction():
            updated = self._conn.execute(
                "UPDATE runs SET status = ?, error = ?, updated_at = ?,"
                " started_at = CASE WHEN started_at IS NULL AND ? IN ('training', 'evaluating') THEN ?"
                "                   ELSE started_at END,"
                " finished_at = CASE WHEN ? IN ('done', 'failed') THEN ? ELSE NULL END"
                " WHERE id = ?",
                (status, error, now, status, now, status, now, run_id)).rowcount
        if not updated:
            raise StoreError(f"no run with id {run_id}")

    def get_run(self, ref: int | str) -> RunRow:
        """A run by id, full hash, or unique hash prefix of at least 4 characters."""
        if isinstance(ref, int):
            rows = self._run_rows("WHERE id = ?", (ref,))
        else:
            ref = ref.strip()
            rows = self._run_rows("WHERE hash = ?", (ref,))
            if not rows:
                candidates: dict[int, RunRow] = {}
                if ref.isdigit():
                    candidates |= {r.id: r for r in self._run_rows("WHERE id = ?", (int(ref),))}
                if len(ref) >= MIN_PREFIX:
                    candidates |= {r.id: r for r in self._run_rows(
                        "WHERE substr(hash, 1, ?) = ?", (len(ref), ref))}
                rows = list(candidates.values())
        if len(rows) > 1:
            listed = "; ".join(f"id {r.id} hash {r.hash} ({r.experiment}/{r.name})" for r in rows)
            raise StoreError(f"run reference {ref!r} is ambiguous, it matches: {listed}; give more of the hash")
        if not rows:
            raise StoreError(f"no run matches {ref!r}; give a run id, a full hash or a hash prefix of at least "
                             f"{MIN_PREFIX} characters")
        return rows[0]

    def runs(self, experiment: str | None = None, status: str | None = None) -> list[RunRow]:
        if status is not None:
            _check_choice("status", status, STATUSES)
        where, args = _filters(experiment=experiment, status=status)
        return self._run_rows(where + " ORDER BY id", args)

    def experiments(self) -> list[str]:
        """Experiment names: those saved with a document, and any with runs (substitutes have none)."""
        cursor = self._conn.execute(
            "SELECT name FROM experiments UNION SELECT experiment FROM runs WHERE experiment != '' ORDER BY 1")
        return [r[0] for r in cursor]

    def save_experiment(self, name: str, scale: str, document: dict) -> None:
        """Keep what the report needs about an experiment run at ``scale`` (replaced on every run)."""
        with self.transaction():
            self._conn.execute(
                # REPLACE deletes and re-inserts, so rowid orders the scales by when they were last run.
                "INSERT OR REPLACE INTO experiments (name, scale, document_json, updated_at) VALUES (?, ?, ?, ?)",
                (name, scale, json.dumps(document, sort_keys=True, default=str), _now()))

    def experiment_scales(self, name: str) -> list[str]:
        """Scales ``name`` was run at, the most recently run last."""
        cursor = self._conn.execute("SELECT scale FROM experiments WHERE name = ? ORDER BY rowid",
                                    (name,))
        return [r[0] for r in cursor]

    def experiment_document(self, name: str, scale: str) -> dict:
        row = self._conn.execute("SELECT document_json FROM experiments WHERE name = ? AND scale = ?",
                                 (name, scale)).fetchone()
        if row is None:
            raise StoreError(f"no experiment {name!r} at scale {scale!r} in {self.path}")
        return self._json(row[0])

    def _run_rows(self, clause: str, args: tuple) -> list[RunRow]:
        cursor = self._conn.execute(
            "SELECT id, hash, experiment, name, kind, config_json, train_hash, model_dir, run_dir, code_revision,"
            f" status, error, created_at, updated_at, started_at, finished_at FROM runs {clause}", args)
        return [RunRow(*r[:5], self._json(r[5]), *r[6:]) for r in cursor]

    # -- analyses ------------------------------------------------------------------------------

    def save_analysis(self, *, name: str, models: dict[str, str], params: dict, files: list[str],
                      summary: list[dict], experiment: str = "", scale: str = "") -> int:
        """Record an analysis; the same analysis (name, models, parameters, experiment, scale)
        computed again replaces the earlier row."""
        key = _canonical({"name": name, "models": models, "params": params, "experiment": experiment,
                          "scale": scale})
        with self.transaction():
            self._conn.execute(
                "INSERT INTO analyses (key, experiment, scale, name, models_json, params_json, files_json,"
                " summary_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET files_json = excluded.files_json,"
                " summary_json = excluded.summary_json, created_at = excluded.created_at",
                (key, experiment, scale, name, _canonical(models), _canonical(params), json.dumps(files),
                 json.dumps(summary, default=_json_default), _now()))
            return int(self._conn.execute("SELECT id FROM analyses WHERE key = ?", (key,)).fetchone()[0])

    def analyses(self, experiment: str | None = None, scale: str | None = None,
                 model_hashes: set[str] | None = None) -> list[AnalysisRow]:
        """Analyses of an experiment (at a scale), plus, with ``model_hashes``, every analysis
        whose models all belong to that set (e.g. ones run by hand with ``robustloss analyze``)."""
        cursor = self._conn.execute(
            "SELECT id, key, experiment, scale, name, models_json, params_json, files_json, summary_json,"
            " created_at FROM analyses ORDER BY id")
        rows = [AnalysisRow(i, k, e, s, n, self._json(m), self._json(p), self._json(f), self._json(su), c)
                for i, k, e, s, n, m, p, f, su, c in cursor]

        def wanted(row: AnalysisRow) -> bool:
            if experiment is not None and row.experiment == experiment and scale in (None, row.scale):
                return True
            return model_hashes is not None and bool(row.models) and set(row.models.values()) <= model_hashes

        return rows if experiment is None and model_hashes is None else [r for r in rows if wanted(r)]

    # -- grid cells ----------------------------------------------------------------------------

    def link_cell(self, *, experiment: str, scale: str, cell: dict[str, str], run_id: int) -> None:
        """Record that ``cell`` of ``experiment`` at ``scale`` is answered by ``run_id`` (re-linking moves it)."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO cells (experiment, scale, cell_json, run_id) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (experiment, scale, cell_json) DO UPDATE SET run_id = excluded.run_id",
                (experiment, scale, _cell_json(cell), run_id))

    def cells(self, experiment: str, scale: str | None = None) -> list[CellRow]:
        where, args = _filters(experiment=experiment, scale=scale)
        cursor = self._conn.execute(f"SELECT experiment, scale, cell_json, run_id FROM cells {where} ORDER BY id",
                                    args)
        return [CellRow(e, s, self._json(c), r) for e, s, c, r in cursor]

    # -- training artefacts --------------------------------------------------------------------

    def add_checkpoint(self, run_id: int, path: str, epoch: int, sha256: str) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO checkpoints (run_id, path, epoch, sha256, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, path, epoch) DO UPDATE SET sha256 = excluded.sha256,"
                " created_at = excluded.created_at",
                (run_id, str(path), int(epoch), sha256, _now()))

    def checkpoints(self, run_id: int) -> list[dict]:
        cursor = self._conn.execute(
            "SELECT path, epoch, sha256, created_at FROM checkpoints WHERE run_id = ? ORDER BY epoch, id", (run_id,))
        return [dict(zip(("path", "epoch", "sha256", "created_at"), r)) for r in cursor]

    def recorded_sha256(self, path: str | Path) -> str | None:
        """The digest last recorded for the file at ``path`` by any run, or None if none was."""
        row = self._conn.execute("SELECT sha256 FROM checkpoints WHERE path = ? ORDER BY created_at DESC, id DESC"
                                 " LIMIT 1", (str(path),)).fetchone()
        return row[0] if row else None

    def add_metrics(self, run_id: int, rows: list[dict]) -> None:
        """Log training epochs; re-adding an epoch replaces it (a resumed run re-logs its last epoch).

        Known keys go to their columns; anything else (and a known key whose value is None, so
        that it comes back as None rather than missing) is kept in ``extra_json``.
        """
        records = []
        for row in rows:
            if "epoch" not in row:
                raise StoreError(f"a metrics row needs an 'epoch' key; got keys {sorted(row)}")
            columns = {k: _plain(row[k]) for k in METRIC_COLUMNS if row.get(k) is not None}
            extra = {k: v for k, v in row.items() if k != "epoch" and k not in columns}
            records.append((run_id, int(row["epoch"]), *(columns.get(k) for k in METRIC_COLUMNS), _canonical(extra)))
        with self.transaction():
            self._conn.executemany(
                f"INSERT OR REPLACE INTO metrics (run_id, epoch, {', '.join(METRIC_COLUMNS)}, extra_json)"
                f" VALUES ({', '.join('?' * (len(METRIC_COLUMNS) + 3))})", records)

    def metrics(self, run_id: int) -> list[dict]:
        cursor = self._conn.execute(
            f"SELECT epoch, {', '.join(METRIC_COLUMNS)}, extra_json FROM metrics WHERE run_id = ? ORDER BY epoch",
            (run_id,))
        out = []
        for epoch, *values, extra in cursor:
            row = {"epoch": epoch} | {k: v for k, v in zip(METRIC_COLUMNS, values) if v is not None}
            out.append(row | self._json(extra))
        return out

    # -- evaluations ---------------------------------------------------------------------------

    def save_evaluation(self, run_id: int, evaluation: Evaluation, diagnostics: list | None = None) -> None:
        """Store an evaluation (and optionally its diagnostics) in one transaction.

        Records are upserted by (name, eps, params), so saving a growing evaluation again after
        each attack neither duplicates rows nor loses records saved earlier. If the evaluated
        samples changed, the earlier records describe other samples and are dropped.
        """
        ev = evaluation
        summaries = ev.summary()[1:]  # row 0 is clean; the same mean_linf/mean_l2 every table shows
        clean_blob = _pack(index=ev.index, labels=ev.labels, clean_pred=ev.clean_pred,
                           **({"clean_redraw_pred": ev.clean_redraw_pred} if ev.clean_redraw_pred is not None else {}))
        now = _now()
        with self.transaction():
            old = self._conn.execute("SELECT samples FROM clean WHERE run_id = ?", (run_id,)).fetchone()
            if old is not None and not np.array_equal(self._arrays(old[0])["index"], ev.index):
                self._conn.execute("DELETE FROM evaluations WHERE run_id = ?", (run_id,))
            self._conn.execute(
                "INSERT OR REPLACE INTO clean (run_id, n, accuracy, samples, meta_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (run_id, ev.n, ev.clean_accuracy, clean_blob, _canonical(ev.meta), now))
            for record, summary in zip(ev.records, summaries):
                arrays = dict(adv_pred=record.adv_pred, linf=record.linf, l2=record.l2, queries=record.queries)
                if record.target is not None:
                    arrays["target"] = record.target
                if record.redraw_pred is not None:
                    arrays["redraw_pred"] = record.redraw_pred
                eps = None if record.eps is None else float(record.eps)
                self._conn.execute(
                    "INSERT INTO evaluations (run_id, name, attack, label, params_json, eps, eps_key, norm, objective,"
                    " n, accuracy, mean_linf, mean_l2, seconds, samples, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (run_id, name, eps_key, params_json) DO UPDATE SET"
                    " attack = excluded.attack, label = excluded.label, eps = excluded.eps, norm = excluded.norm,"
                    " objective = excluded.objective, n = excluded.n, accuracy = excluded.accuracy,"
                    " mean_linf = excluded.mean_linf, mean_l2 = excluded.mean_l2, seconds = excluded.seconds,"
                    " samples = excluded.samples, created_at = excluded.created_at",
                    (run_id, record.name, record.attack, record.label, _canonical(record.params), eps, _eps_key(eps),
                     record.norm, record.objective, summary["n"], ev.accuracy(record), summary["mean_linf"],
                     summary["mean_l2"], float(record.seconds), _pack(**arrays), now))
            if diagnostics is not None:
                self._conn.execute("DELETE FROM diagnostics WHERE run_id = ?", (run_id,))
                self._conn.executemany(
                    "INSERT INTO diagnostics (run_id, number, check_name, status, detail, numbers_json)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(run_id, d.number, d.check, d.status, d.detail, _canonical(d.numbers)) for d in diagnostics])

    def load_evaluation(self, run_id: int) -> Evaluation | None:
        """The stored evaluation of a run, exactly as saved (records in the order first saved); None if none."""
        from robustloss.evaluate.records import AttackRecord, Evaluation

        clean = self._conn.execute("SELECT samples, meta_json FROM clean WHERE run_id = ?", (run_id,)).fetchone()
        if clean is None:
            return None
        samples = self._arrays(clean[0])
        records = []
        for attack, label, params, eps, norm, seconds, blob in self._conn.execute(
                "SELECT attack, label, params_json, eps, norm, seconds, samples FROM evaluations"
                " WHERE run_id = ? ORDER BY id", (run_id,)):
            arrays = self._arrays(blob)
            records.append(AttackRecord(
                attack=attack, eps=eps, params=self._json(params), adv_pred=arrays["adv_pred"], linf=arrays["linf"],
                l2=arrays["l2"], queries=arrays["queries"], seconds=seconds, norm=norm, label=label,
                target=arrays.get("target"), redraw_pred=arrays.get("redraw_pred")))
        return Evaluation(index=samples["index"], labels=samples["labels"], clean_pred=samples["clean_pred"],
                          records=records, meta=self._json(clean[1]), clean_redraw_pred=samples.get("clean_redraw_pred"))

    def evaluation_rows(self, run_id: int | None = None, experiment: str | None = None) -> list[dict]:
        """Summary numbers of every stored attack record (no per-sample data), by run then save order."""
        where, args = _filters(**{"e.run_id": run_id, "r.experiment": experiment})
        cursor = self._conn.execute(
            "SELECT e.run_id, e.name, e.attack, e.label, e.eps, e.norm, e.objective, e.params_json, e.n, e.accuracy,"
            " e.mean_linf, e.mean_l2, e.seconds FROM evaluations e JOIN runs r ON r.id = e.run_id"
            f" {where} ORDER BY e.run_id, e.id", args)
        keys = ("run_id", "name", "attack", "label", "eps", "norm", "objective", "params", "n", "accuracy",
                "mean_linf", "mean_l2", "seconds")
        rows = [dict(zip(keys, r)) for r in cursor]
        for row in rows:
            row["params"] = self._json(row["params"])
        return rows

    def diagnostics(self, run_id: int) -> list[dict]:
        cursor = self._conn.execute(
            "SELECT number, check_name, status, detail, numbers_json FROM diagnostics WHERE run_id = ?"
            " ORDER BY number, id", (run_id,))
        return [{"number": n, "check": c, "status": s, "detail": d, "numbers": self._json(nums)}
                for n, c, s, d, nums in cursor]

    # -- export --------------------------------------------------------------------------------

    def export(self, path: str | Path, fmt: str = "csv", experiment: str | None = None) -> Path:
        """Write one row per (grid cell, attack record) plus a 'clean' row per cell.

        Every cell gets its clean row even before its run is evaluated (numbers empty), so
        the export shows which cells are still missing. The file is written to a temporary
        name and renamed, so a reader never sees half a file.
        """
        _check_choice("export format", fmt, EXPORT_FORMATS)
        rows = self._export_rows(experiment)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if fmt == "json":
                    json.dump(rows, f, indent=2)
                else:
                    _write_csv(f, rows)
            os.replace(tmp, path)
        except OSError as err:
            if err.filename is None or err.filename == str(tmp):  # name the file the user asked for
                err.filename = str(path)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _export_rows(self, experiment: str | None) -> list[dict]:
        where, args = _filters(**{"c.experiment": experiment})
        cells = self._conn.execute(
            "SELECT c.experiment, c.scale, c.cell_json, c.run_id, r.hash, r.status, k.n, k.accuracy"
            " FROM cells c JOIN runs r ON r.id = c.run_id LEFT JOIN clean k ON k.run_id = c.run_id"
            f" {where} ORDER BY c.experiment, c.scale, c.id", args).fetchall()
        by_run: dict[int, list[dict]] = {}  # several cells may share a run: read its records once
        out = []
        for exp, scale, cell_json, run_id, run_hash, status, n, accuracy in cells:
            base = {"experiment": exp, "scale": scale, "cell": self._json(cell_json), "run_hash": run_hash,
                    "run_status": status}
            # The clean row follows Evaluation.summary(): eps 0 and no perturbation.
            clean_done = n is not None
            out.append(base | {"name": "clean", "eps": 0.0, "objective": "", "n": n, "accuracy": accuracy,
                               "mean_linf": 0.0 if clean_done else None, "mean_l2": 0.0 if clean_done else None})
            if run_id not in by_run:
                by_run[run_id] = self.evaluation_rows(run_id=run_id)
            for ev in by_run[run_id]:
                out.append(base | {k: ev[k] for k in EXPORT_COLUMNS[2:]})
        return out


# -- helpers -----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise StoreError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _filters(**conditions: Any) -> tuple[str, tuple]:
    """A WHERE clause over the conditions that are not None (column names are ours, never user input)."""
    given = {column: value for column, value in conditions.items() if value is not None}
    if not given:
        return "", ()
    return "WHERE " + " AND ".join(f"{column} = ?" for column in given), tuple(given.values())


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements.

    ``executescript`` would COMMIT our open transaction first, leaving a half-applied
    migration possible; ``complete_statement`` keeps trigger bodies (with inner ';') whole.
    """
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\n;"):
        raise StoreError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def _canonical(value: Any) -> str:
    """Sorted-key JSON, so that equal dicts give equal strings (params are part of a UNIQUE key)."""
    return json.dumps(value, sort_keys=True, default=_json_default)


def _cell_json(cell: dict) -> str:
    # Axis values are compared as strings, so a cell linked with 0.1 and with "0.1" is the same cell.
    return _canonical({str(k): str(v) for k, v in cell.items()})


def _eps_key(eps: float | None) -> str:
    return "none" if eps is None else repr(float(eps))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values: sqlite3 cannot bind np.float32."""
    return value.item() if isinstance(value, np.generic) else value


def _pack(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _write_csv(f: TextIO, rows: list[dict]) -> None:
    axes: list[str] = []
    for row in rows:
        axes += [a for a in row["cell"] if a not in axes]
    # An axis named like a fixed column (say "name") would overwrite it; give such axes a prefix.
    fixed = ("experiment", "scale", *EXPORT_COLUMNS)
    axis_columns = {a: f"cell.{a}" if a in fixed else a for a in axes}
    writer = csv.DictWriter(f, fieldnames=["experiment", "scale", *axis_columns.values(), *EXPORT_COLUMNS])
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k != "cell"}
        writer.writerow(flat | {axis_columns[a]: v for a, v in row["cell"].items()})
