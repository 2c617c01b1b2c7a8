"""The error for dataset files that exist but are not what the format promises."""

from __future__ import annotations

from robustloss.errors import RobustlossError


class DatasetFormatError(RobustlossError, ValueError):
    """A dataset file is truncated, of the wrong kind, or has unexpected shapes.

    Distinct from ``DatasetNotFoundError``: re-downloading (``robustloss data fetch``) is the
    usual fix, but the message names the file so that the user can check it first.
    """
