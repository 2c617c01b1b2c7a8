"""``ResultsStore``: the reads and writes of everything a results file holds.

The queries are grouped by table: runs and experiment documents, analyses, grid cells, training
artefacts (checkpoints, metrics) and evaluations, plus the rows of the export. Opening the file,
migrating it and transactions come from ``StoreDatabase``; every public write here is one
``transaction()``, so a crash mid-write leaves the file as it was before the call.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustloss.experiments.store.connection import StoreError
from robustloss.experiments.store.database import StoreDatabase
from robustloss.experiments.store.export import EXPORT_COLUMNS, EXPORT_FORMATS, write_export
from robustloss.experiments.store.rows import (AnalysisRow, CellRow, RunRow, _canonical, _cell_json, _eps_key,
                                               _json_default, _pack, _plain)

if TYPE_CHECKING:  # imported lazily: robustloss.evaluate loads torch, which store users often do not need
    from robustloss.evaluate.records import Evaluation

RUN_KINDS = ("model", "substitute")
STATUSES = ("pending", "training", "evaluating", "done", "failed")
ACTIVE_STATUSES = ("training", "evaluating")
FINAL_STATUSES = ("done", "failed")
METRIC_COLUMNS = ("phase", "lr", "train_loss", "train_acc", "test_acc", "seconds")
MIN_PREFIX = 4  # shorter hash prefixes match too many runs to be a useful reference


class ResultsStore(StoreDatabase):
    """One SQLite results file; safe to open from several processes at once."""

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
        return write_export(path, fmt, self._export_rows(experiment))

    def _export_rows(self, experiment: str | None) -> list[dict]:
        """The rows ``export`` writes, ordered by experiment, scale and grid order."""
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
    """The time stamp stored in the ``*_at`` columns: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    """Refuse an argument outside ``valid`` with a StoreError that lists the valid ones."""
    if value not in valid:
        raise StoreError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _filters(**conditions: Any) -> tuple[str, tuple]:
    """A WHERE clause over the conditions that are not None (column names are ours, never user input)."""
    given = {column: value for column, value in conditions.items() if value is not None}
    if not given:
        return "", ()
    return "WHERE " + " AND ".join(f"{column} = ?" for column in given), tuple(given.values())
