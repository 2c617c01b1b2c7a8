"""Finding a dataset's files among the folders it may live in, and saying so when it is not there.

A missing dataset is the most common first-run failure, so the error carries everything
needed to fix it without reading code: each file expected, each folder searched, and the
exact command that downloads the data to a place the loader will look.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from robustloss.data.root import DEBIAN_PACKAGES, ROOT_RULE, system_data_roots
from robustloss.errors import DatasetNotFoundError

GZ_SUFFIX = ".gz"


def fetch_command(name: str, root: Path) -> str:
    return f"robustloss data fetch {name} --data-dir {shlex.quote(str(root))}"


def find_files(
    name: str,
    root: Path,
    folders: Sequence[Path],
    files: Sequence[str],
    *,
    gzip_allowed: bool = False,
    copy_to: Path | None = None,
) -> dict[str, Path]:
    """Paths of ``files`` in the first of ``folders`` that holds all of them.

    Entries of ``files`` ending in "/" are folders. With ``gzip_allowed`` a file may also be
    present as ``<file>.gz``; the uncompressed one is preferred because it reads faster.
    All files must come from one folder: mixing a train set from one copy with a test set
    from another would silently produce a dataset nobody published. After ``folders`` (the
    user's data root), the system dataset folders are searched (see ``system_folders``).
    """
    folders = [*folders, *system_folders(name, root, folders)]
    partial: list[tuple[Path, list[str]]] = []
    for folder in folders:
        found = {f: p for f in files if (p := _present(folder, f, gzip_allowed)) is not None}
        if len(found) == len(files):
            return found
        if found:
            partial.append((folder, [f for f in files if f not in found]))
    raise missing_dataset_error(
        name, root, files, folders, gzip_allowed=gzip_allowed, partial=partial, copy_to=copy_to
    )


def system_folders(name: str, root: Path, folders: Sequence[Path]) -> list[Path]:
    """The system counterparts of ``folders``: ``<system>/<name>/`` (Debian's layout), then each
    folder's path below ``root`` re-rooted at ``<system>`` (never ``<system>`` itself, which
    holds every dataset's folder, not one dataset's files)."""
    found: list[Path] = []
    for system in system_data_roots():
        candidates = [system / name]
        for folder in folders:
            try:
                relative = folder.relative_to(root)
            except ValueError:
                continue
            if relative.parts:
                candidates.append(system / relative)
        found += [c for c in candidates if c not in found and c not in folders]
    return found


def _present(folder: Path, entry: str, gzip_allowed: bool) -> Path | None:
    if entry.endswith("/"):
        path = folder / entry.rstrip("/")
        return path if path.is_dir() else None
    candidates = [entry, entry + GZ_SUFFIX] if gzip_allowed else [entry]
    for candidate in candidates:
        path = folder / candidate
        if path.is_file():
            return path
    return None


def missing_dataset_error(
    name: str,
    root: Path,
    files: Sequence[str],
    folders: Sequence[Path],
    *,
    gzip_allowed: bool = False,
    partial: Sequence[tuple[Path, list[str]]] = (),
    copy_to: Path | None = None,
) -> DatasetNotFoundError:
    def describe(f: str) -> str:
        if f.endswith("/"):
            return f"{f} (folder)"
        return f"{f} (or {f}{GZ_SUFFIX})" if gzip_allowed else f

    lines = [f"dataset {name!r} was not found under the data root {root}."]
    lines.append("Expected files:")
    lines += [f"  {describe(f)}" for f in files]
    lines.append("Folders searched, in order:")
    lines += [f"  {folder}" for folder in folders]
    for folder, missing in partial:
        lines.append(f"{folder} holds only some of them; missing: {', '.join(missing)}")
    if name in DEBIAN_PACKAGES:
        lines.append("On Debian or Ubuntu, the package manager installs it where it will be found:")
        lines.append(f"  sudo apt-get install {DEBIAN_PACKAGES[name]}")
    lines.append("To download it (needs network access), run:")
    lines.append(f"  {fetch_command(name, root)}")
    destination = copy_to if copy_to is not None else folders[0]
    lines.append(f"or copy the files into {destination} yourself.")
    lines.append(f"Note: {ROOT_RULE}.")
    return DatasetNotFoundError("\n".join(lines))
