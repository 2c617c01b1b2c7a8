"""The ``robustloss`` command line: one module per group of commands.

``main`` (the entry point) builds the parser and turns every error into a one-line message; ``train``,
``eval``, ``experiments`` (run, sweep, ls, show, export, report), ``analysis`` (analyze) and
``catalog`` (demo, attacks, configs, data) each add their commands; ``common`` holds the shared flags.
Only this package prints: the library below it logs through ``logging``.
"""

from robustloss.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
