"""The results store: every experiment run, its training log and its evaluation in one SQLite file.

Why SQLite: one file that several runner processes can write at once (WAL mode, ``BEGIN
IMMEDIATE`` transactions that wait for each other instead of failing), that survives a crash
mid-write (every public write is one transaction), and that ``sqlite3`` or any SQL tool can
read without robustloss installed.

Tables (see ``migrations.MIGRATIONS`` for the exact columns):

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

The modules, each importing only those above it:

- ``connection``     ``StoreError`` and the guarded connection that turns a damaged or full disk
                     into it, at open or at query time.
- ``migrations``     the schema, one script per version, and how an older file is brought up to date.
- ``rows``           the row types the store returns and how values are encoded for its columns.
- ``export``         how the exported rows are written as CSV or JSON.
- ``database``       ``StoreDatabase``: opening the file, transactions, the integrity check.
- ``results_store``  ``ResultsStore``: the queries, table by table.

Import from this package, not from the modules: the names below are the store's interface.
(Tests that replace ``MIGRATIONS`` or the clock patch the module that reads them, ``migrations``
and ``results_store``.)
"""

from robustloss.experiments.store.connection import StoreError, damaged_store_message
from robustloss.experiments.store.export import EXPORT_COLUMNS, EXPORT_FORMATS
from robustloss.experiments.store.migrations import MIGRATIONS, SCHEMA_VERSION
from robustloss.experiments.store.results_store import (ACTIVE_STATUSES, FINAL_STATUSES, METRIC_COLUMNS, MIN_PREFIX,
                                                        RUN_KINDS, STATUSES, ResultsStore)
from robustloss.experiments.store.rows import AnalysisRow, CellRow, RunRow

__all__ = [
    "ACTIVE_STATUSES", "EXPORT_COLUMNS", "EXPORT_FORMATS", "FINAL_STATUSES", "METRIC_COLUMNS", "MIGRATIONS",
    "MIN_PREFIX", "RUN_KINDS", "SCHEMA_VERSION", "STATUSES", "AnalysisRow", "CellRow", "ResultsStore", "RunRow",
    "StoreError", "damaged_store_message",
]
