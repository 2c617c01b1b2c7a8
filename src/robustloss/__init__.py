"""robustloss: train image classifiers with robust losses and evaluate their adversarial robustness honestly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robustloss")  # one source of truth: pyproject.toml, as installed
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
