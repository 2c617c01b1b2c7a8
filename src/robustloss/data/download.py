"""Downloading one file with a checksum, never leaving a partial file behind.

The bytes are streamed into a hidden temp file in the destination folder while the MD5
is computed; only a complete file with the published checksum is renamed into place
(``os.replace`` is atomic within a folder). Every other outcome - network error, checksum
mismatch, Ctrl-C - removes the temp file, so a file with the final name is always good.
"""

from __future__ import annotations

import logging
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from robustloss.errors import DownloadError
from robustloss.progress import show_progress

_log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0  # per socket operation, not for the whole file
USER_AGENT = "robustloss-data-fetch"  # some servers reject urllib's default agent
FILE_MODE = 0o644


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, destination: Path, md5: str, *, progress: bool | None = None) -> Path:
    """Fetch ``url`` to ``destination`` if it is not already there with checksum ``md5``."""
    destination = Path(destination)
    if destination.is_file() and md5_of(destination) == md5:
        _log.info(f"{destination} already present, checksum ok")
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, destination, progress)
        if actual != md5:
            raise DownloadError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {actual}. The file was "
                "deleted; the download was probably corrupted or the server changed the file. "
                "Try again, or download it by other means and place it at "
                f"{destination} (it must have md5 {md5})."
            )
        os.chmod(tmp_name, FILE_MODE)  # mkstemp creates 0600; a dataset file is not secret
        os.replace(tmp_name, destination)
    finally:
        # Runs on success too, when the temp name no longer exists.
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return destination


def _stream(url: str, out: IO[bytes], destination: Path, progress: bool) -> str:
    """Copy the body of ``url`` into ``out``; return its MD5. Network failures -> DownloadError."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = _content_length(response)
            with _progress_bar(total, destination.name, progress) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"download of {url} failed: the server answered HTTP {err.code} {err.reason}. "
            f"Download the file by other means and copy it to {destination}."
        ) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not download {url} ({reason}). This machine may have no network access "
            "(or a proxy/firewall blocks it). You can download the file on another machine and "
            f"copy it manually to {destination}, then run the command again."
        ) from None
    except ValueError as err:  # malformed URL, unknown scheme
        raise DownloadError(f"cannot download {url!r}: {err}") from None
    return digest.hexdigest()


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if response.headers else None
    return int(value) if value and value.isdigit() else None


def _progress_bar(total: int | None, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, disable=not show_progress(enabled), file=sys.stderr
    )

