"""``robustloss data fetch NAME``: put a dataset's files where its loader looks for them.

Each of the spec's downloads goes to ``<root>/<name>/<filename>``. That is already the
loader's folder for the MNIST family and SVHN. Archives (CIFAR, Tiny ImageNet) are then
unpacked into ``<root>``, which yields the folders the loaders search
(``<root>/cifar-10-batches-py/``, ``<root>/tiny-imagenet-200/`` ...). The archive is kept,
so a second fetch is a checksum check, and a small marker file records that it was unpacked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from robustloss.data.download import download_file
from robustloss.data.extract import extract_archive
from robustloss.data.registry import DATASETS
from robustloss.data.root import data_root
from robustloss.data.spec import DatasetSpec, Download

_log = logging.getLogger(__name__)


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool | None = None,
    mirror: str | None = None,
) -> Path:
    """Download (and unpack) dataset ``name``; return the data root to load it from.

    ``mirror``: a base URL (``https://...``, ``file:///...``) used instead of each file's
    canonical host, e.g. a local copy; the file name is appended to it and the published
    MD5 is still enforced.
    """
    return fetch_spec(DATASETS.get(name), data_root(data_dir), progress=progress, mirror=mirror)


def fetch_spec(spec: DatasetSpec, root: Path, *, progress: bool | None = None, mirror: str | None = None) -> Path:
    if spec.embedded:
        _log.info(f"{spec.name} is embedded in an installed Python package; nothing to download.")
        return root
    folder = root / spec.name
    for item in spec.downloads:
        archive = download_file(_url(item, mirror), folder / item.filename, item.md5, progress=progress)
        if item.extract:
            _extract_once(archive, root, item, progress)
    _log.info(f"{spec.name} is ready under {root}")
    return root


def _url(item: Download, mirror: str | None) -> str:
    if not mirror:
        return item.url
    return mirror.rstrip("/") + "/" + item.filename


def _extract_once(archive: Path, root: Path, item: Download, progress: bool) -> None:
    # The marker holds the archive's MD5 and the top-level names it unpacked, so a replaced
    # archive, or an unpacked folder the user has since deleted, triggers a new extraction.
    marker = archive.with_name(f".{archive.name}.extracted")
    if marker.is_file():
        md5, *placed = marker.read_text().split("\n")
        placed = [p for p in placed if p]
        if md5 == item.md5 and placed and all((root / p).exists() for p in placed):
            _log.info(f"{archive.name} already unpacked")
            return
    _log.info(f"unpacking {archive.name} into {root}")
    placed_paths = extract_archive(archive, root)
    marker.write_text("\n".join([item.md5, *(p.name for p in placed_paths)]) + "\n")

