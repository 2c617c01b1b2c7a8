"""The results store's SQL schema, and the migrations that bring a file written by an older robustloss
up to date.

The schema is kept as a list of scripts, ``MIGRATIONS``, one per version, rather than as one
``CREATE`` script: a fresh file and an old file then reach the same tables by the same path.
A schema change appends ``(version, script)``; opening an older file applies the missing
scripts, one transaction each, and records the version reached in the ``meta`` table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from robustloss.experiments.store.connection import StoreError, _GuardedConnection

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


def stored_version(conn: _GuardedConnection) -> int:
    """The schema version recorded in the file; 0 for a fresh file."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0  # a fresh file
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: _GuardedConnection, transaction: Callable[[], AbstractContextManager[object]]) -> None:
    """Apply the migrations the file lacks, each in its own ``transaction()``; refuse a newer file.

    ``transaction`` is the store's own (``BEGIN IMMEDIATE``), so that processes opening the same
    file at once queue for the write lock instead of applying a version twice.
    """
    latest = MIGRATIONS[-1][0]  # read at call time (not SCHEMA_VERSION) so tests can add migrations
    if stored_version(conn) > latest:
        raise StoreError(
            f"{conn.path} was written by a newer robustloss (schema version {stored_version(conn)}, "
            f"this one knows up to {latest}); upgrade robustloss to open it")
    for version, script in MIGRATIONS:
        if stored_version(conn) >= version:
            continue  # versions only grow, so this unlocked read is safe; it spares a write lock per open
        with transaction():
            # Re-read under the write lock: another process opening the same fresh file may
            # have applied this version while we waited.
            if stored_version(conn) >= version:
                continue
            try:
                for statement in _statements(script):
                    conn.execute(statement)
            except sqlite3.Error as exc:
                raise StoreError(f"could not migrate {conn.path} to schema version {version}: {exc}") from exc
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(version),))


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
