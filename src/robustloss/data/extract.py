"""Unpacking a downloaded archive (tar.gz or zip) into the data root, safely.

An archive can name members like ``/etc/x`` or ``../../x``, or contain links pointing out of
the target folder. Every member is checked before anything is written, and tar uses the
standard library's ``data`` filter as a second line of defence where available.

Unpacking goes to a hidden staging folder next to the target, whose top-level entries are
then moved into place, so an interrupted extraction leaves no half-filled dataset folder
that the loader would mistake for a complete one.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from robustloss.errors import DownloadError


def extract_archive(archive: Path, target: Path) -> list[Path]:
    """Unpack ``archive`` into ``target``; return the top-level paths it created or updated."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=f".{archive.name}.", suffix=".extracting"))
    try:
        if tarfile.is_tarfile(archive):
            _extract_tar(archive, staging)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, staging)
        else:
            raise DownloadError(f"{archive}: not a tar or zip archive; delete it and fetch again")
        placed = []
        for entry in sorted(staging.iterdir()):
            _move_into(entry, target / entry.name)
            placed.append(target / entry.name)
        return placed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_member_name(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DownloadError(f"{archive}: refusing to extract member {name!r} (it points outside the target folder)")


def _extract_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            check_member_name(member.name, archive)
            if member.issym() or member.islnk():
                # Dataset archives hold only files and folders; a link is at best useless.
                raise DownloadError(f"{archive}: refusing to extract link {member.name!r}")
            if not (member.isfile() or member.isdir()):
                raise DownloadError(f"{archive}: refusing to extract special file {member.name!r}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12
            tar.extractall(staging, members=members, filter="data")
        else:
            tar.extractall(staging, members=members)  # names already checked above


def _extract_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            check_member_name(name, archive)
        zf.extractall(staging)


def _move_into(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination``, merging into an existing folder file by file.

    Merging (rather than deleting the old folder) keeps anything the user added there, such
    as the Tiny ImageNet cache; files from the archive replace same-named old ones.
    """
    if source.is_dir() and destination.is_dir():
        for child in source.iterdir():
            _move_into(child, destination / child.name)
        return
    if destination.is_dir() or (source.is_dir() and destination.exists()):
        # File-vs-folder clash: never delete the user's data to make room.
        raise DownloadError(
            f"cannot unpack {source.name} to {destination}: something of another kind is there; move it away"
        )
    os.replace(source, destination)
