"""Errors a user can act on. Each message says what was wrong and what to do instead."""

from __future__ import annotations


class RobustlossError(Exception):
    """Base class: the CLI prints these without a traceback."""


class UnknownNameError(RobustlossError, KeyError):
    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(valid)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class ConfigError(RobustlossError, ValueError):
    """A malformed config; the message names the offending key path."""


class DatasetNotFoundError(RobustlossError, FileNotFoundError):
    """Files for a dataset are missing; the message lists files, folders searched and the fetch command."""


class DownloadError(RobustlossError):
    """A download failed (no network, bad checksum, ...). No partial file is left behind."""


class NonFiniteLossError(RobustlossError, FloatingPointError):
    """Training diverged (a NaN/inf loss, or non-finite weights or logits); the last good checkpoint is kept."""


class AttackBudgetError(RobustlossError, AssertionError):
    """An attack returned a perturbation outside its budget or outside [0, 1] (a bug, never expected)."""


class CheckpointError(RobustlossError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the requested run."""


class ResultsFileError(RobustlossError, ValueError):
    """A results file (e.g. evaluation records) is damaged or was not written by robustloss."""


class NonFiniteOutputError(RobustlossError, ValueError):
    """A model returns NaN or infinite logits: no accuracy computed from them would mean anything."""


class SanityCheckError(RobustlossError, ValueError):
    """A pre-attack sanity check failed: the model cannot be evaluated honestly as it is."""
