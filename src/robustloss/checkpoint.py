"""Atomic writes, verified reads and the clean-up of interrupted writes, for every file robustloss keeps.

Writes (``atomic_write``, and ``atomic_save`` for torch objects) go to a temporary file in the target's
folder, named ``.<name>.<random>.tmp`` so that two processes never share one, held under an exclusive
``flock`` while it is written, fsync'ed, then renamed over the target: a crash leaves either the old
file or the new one, never a torn file.

Reads (``safe_load``) refuse anything they cannot vouch for, with one line that names the file and
says what to do. ``torch.load`` does not check the CRC-32 that the zip archive stores for each member,
so a flipped bit in the tensor data would load as a wrong weight; ``verify_archive`` reads every member
and checks it first. When the caller holds a sha256 recorded for the file, that is compared as well
(it also catches a valid archive swapped for another). Loading then uses
``torch.load(weights_only=True)``, which refuses to execute pickled code, so checkpoints hold only
tensors and plain Python values (dicts, lists, str, int, float, bool, None).

A kill during a write leaves its temporary file behind (up to a whole checkpoint).
``remove_stale_temporaries`` deletes such leftovers. It must never delete the file of a write still in
progress in another process (that write's rename would then fail), so a leftover is removed only when
no process holds its lock (the kernel drops the lock of a killed process) and it is older than
``STALE_AFTER_SECONDS`` (the lock is taken just after the file is created; the age rule covers that gap).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pickle
import re
import struct
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from robustloss.errors import CheckpointError

STALE_AFTER_SECONDS = 2.0
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what atomic_write's mkstemp call creates
_log = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, mode: int | None = None,
                 keep_previous: Path | None = None) -> Path:
    """Write ``path`` through ``write(file)`` atomically; ``mode`` sets permissions (mkstemp gives 0600).
    ``keep_previous``: the file being replaced is renamed there first, once the new one is safely on disk
    (between the two renames only ``keep_previous`` exists; readers must look there too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # marks the write as live for remove_stale_temporaries
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            if keep_previous is not None and path.exists():
                os.replace(path, keep_previous)
            os.replace(tmp, path)  # still under the lock: the file is never seen unlocked before the rename
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_save(obj: Any, path: str | Path, *, keep_previous: Path | None = None) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f), keep_previous=keep_previous)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut could otherwise bring the old name back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the data itself is synced
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted ``atomic_write`` calls left in ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in sorted(folder.iterdir()):
        if _TEMPORARY.match(candidate.name) and candidate.is_file() and _remove_if_abandoned(candidate):
            removed.append(candidate)
    if removed:
        _log.warning("removed %d temporary file(s) left by interrupted writes in %s: %s", len(removed), folder,
                     ", ".join(p.name for p in removed))
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        if time.time() - path.stat().st_mtime < STALE_AFTER_SECONDS:
            return False
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live write in another process
            path.unlink()
            return True
    except FileNotFoundError:  # renamed or removed meanwhile by its writer
        return False


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_damage(path: str | Path) -> str | None:
    """Why the zip archive at ``path`` cannot be trusted (truncated, not a zip, a member failing its
    CRC-32), or None when every member reads back intact."""
    path = Path(path)
    if path.stat().st_size == 0:
        return "it is empty (0 bytes, truncated: a full disk or an interrupted copy can do this)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as err:
        return f"it is not a complete zip archive ({err}): truncated or overwritten"
    except Exception as err:  # a damaged header makes zipfile fail in many ways (struct, zlib, EOF, ...)
        return f"its zip structure is damaged ({type(err).__name__}: {err})"
    if bad is not None:
        return f"member {bad!r} fails its CRC-32 check: its bytes changed after it was written"
    return _local_header_damage(path)


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, lengths
_DATA_DESCRIPTOR = 0x08  # flag bit 3: CRC and sizes follow the data instead of sitting in the local header
_ZIP64_EXTRA, _TORCH_PADDING_EXTRA = 0x0001, 0x4246  # torch pads local headers with "FB" fields of b"Z"


def _local_header_damage(path: Path) -> str | None:
    """Why a member's local header disagrees with the central directory, or None.

    ``testzip`` reads each member's data through the central directory and checks its CRC, but it never
    compares the local header's copies of the flags, method, time, CRC and sizes, nor its extra fields.
    Damage there leaves the data readable, yet the file is no longer what was written, and the next
    tool to read it may trust the local copy; so it is refused like any other damage."""
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for member in archive.infolist():
            raw.seek(member.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            signature, _, flags, method, time_, date, crc, packed, size, name_length, extra_length = fields
            name = raw.read(name_length)
            extra = raw.read(extra_length)
            year, month, day, hour, minute, second = member.date_time
            expected_time = (hour << 11) | (minute << 5) | (second // 2)
            expected_date = ((year - 1980) << 9) | (month << 5) | day
            sizes_ok = _local_sizes(flags, crc, packed, size, extra) in ((None, None, None),
                                                                         (member.CRC, member.compress_size,
                                                                          member.file_size))
            if (signature != b"PK\x03\x04" or flags != member.flag_bits or method != member.compress_type
                    or (time_, date) != (expected_time, expected_date) or not sizes_ok
                    or name.decode("utf-8" if flags & 0x800 else "cp437", "replace") != member.orig_filename
                    or not _padding_intact(extra)):
                return (f"the local header of member {member.filename!r} disagrees with the archive's directory: "
                        "its bytes changed after it was written")
            if flags & _DATA_DESCRIPTOR and not _descriptor_intact(raw, member, len(name) + len(extra)):
                return (f"the data descriptor of member {member.filename!r} disagrees with the archive's "
                        "directory: its bytes changed after it was written")
        return _end_record_damage(raw, len(archive.infolist()))


def _descriptor_intact(raw: BinaryIO, member: zipfile.ZipInfo, name_and_extra: int) -> bool:
    """The CRC and sizes written after a member's data (flag bit 3) match the central directory's.
    ``name_and_extra``: the lengths of the local header's name and extra field, already read."""
    raw.seek(member.header_offset + _LOCAL_HEADER.size + name_and_extra + member.compress_size)
    block = raw.read(24)
    if block[:4] == b"PK\x07\x08":  # the signature is optional
        block = block[4:]
    wanted = (member.CRC, member.compress_size, member.file_size)
    return (struct.unpack_from("<3L", block) == wanted if len(block) >= 12 else False) or (
        len(block) >= 20 and struct.unpack_from("<L2Q", block) == wanted)


_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disk numbers, entry counts, directory
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk of the end record, its offset, number of disks


def _end_record_damage(raw: BinaryIO, members: int) -> str | None:
    """Damage in the end-of-archive records (and the zip64 one torch writes), whose disk numbers, entry
    counts and comment length Python does not check; None when they are consistent."""
    raw.seek(0, os.SEEK_END)
    end = raw.tell()
    raw.seek(max(0, end - 22 - 65536 - _ZIP64_LOCATOR.size))
    tail = raw.read()
    eocd = tail.rfind(b"PK\x05\x06")
    if eocd < 0 or eocd + 22 > len(tail):
        return "its end-of-archive record is missing: truncated or overwritten"
    disk_number, directory_disk, on_disk, total, _, _, comment = struct.unpack_from("<4H2LH", tail, eocd + 4)
    if (disk_number, directory_disk) not in ((0, 0), (0xFFFF, 0xFFFF)) or on_disk != total or total not in (
            members, 0xFFFF) or eocd + 22 + comment != len(tail):
        return "its end-of-archive record disagrees with the archive's directory: its bytes changed after it was written"
    at = tail.rfind(b"PK\x06\x07")
    if at < 0 or at + _ZIP64_LOCATOR.size > len(tail):
        return None
    _, disk, offset, disks = _ZIP64_LOCATOR.unpack_from(tail, at)
    raw.seek(offset)
    record = raw.read(_ZIP64_END.size)
    if len(record) < _ZIP64_END.size:
        return "its zip64 end record is cut short: truncated or overwritten"
    signature, _, _, _, disk_number, directory_disk, on_disk, total, _, _ = _ZIP64_END.unpack(record)
    if (signature != b"PK\x06\x06" or (disk, disks, disk_number, directory_disk) != (0, 1, 0, 0)
            or on_disk != total or total != members):
        return "its zip64 end record disagrees with the archive's directory: its bytes changed after it was written"
    return None


def _extra_fields(extra: bytes) -> list[tuple[int, bytes]]:
    fields, at = [], 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        fields.append((kind, extra[at + 4 : at + 4 + length]))
        at += 4 + length
    if at != len(extra):
        fields.append((-1, b""))  # a length that runs past the end: damaged
    return fields


def _local_sizes(flags: int, crc: int, packed: int, size: int, extra: bytes) -> tuple:
    """(CRC, compressed size, size) as the local header gives them; Nones when a data descriptor holds them."""
    if flags & _DATA_DESCRIPTOR and (crc, packed, size) == (0, 0, 0):
        return None, None, None
    if 0xFFFFFFFF in (packed, size):  # zip64: the real sizes are in the zip64 extra field
        zip64 = next((data for kind, data in _extra_fields(extra) if kind == _ZIP64_EXTRA), b"")
        values = list(struct.unpack_from(f"<{len(zip64) // 8}Q", zip64)) if len(zip64) % 8 == 0 else []
        if size == 0xFFFFFFFF:
            size = values.pop(0) if values else -1
        if packed == 0xFFFFFFFF:
            packed = values.pop(0) if values else -1
    return crc, packed, size


def _padding_intact(extra: bytes) -> bool:
    """Extra fields parse, and torch's alignment padding is still all b"Z"."""
    fields = _extra_fields(extra)
    return all(kind != -1 and (kind != _TORCH_PADDING_EXTRA or set(data) <= {ord("Z")}) for kind, data in fields)


def verify_file(path: str | Path, sha256: str | None = None) -> str | None:
    """``archive_damage``, then (when given) the sha256 recorded for the file."""
    damage = archive_damage(path)
    if damage is None and sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            damage = f"its sha256 {actual[:12]}... differs from the {sha256[:12]}... recorded when it was written"
    return damage


DEFAULT_REMEDY = "delete it and rerun the command that wrote it"


def safe_load(path: str | Path, map_location: str | torch.device = "cpu", *, sha256: str | None = None,
              remedy: str = DEFAULT_REMEDY) -> Any:
    """Load a checkpoint robustloss wrote, after checking it; ``remedy`` ends every error message
    (what the user should do about this particular file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    damage = verify_file(path, sha256)
    if damage is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {damage}. {_sentence(remedy)}".strip())
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # intact archive whose pickle holds something other than plain data
        raise CheckpointError(f"cannot load {path}: {_unsafe_reason(err)}. {_sentence(remedy)}".strip()) from None
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in first:  # PyTorch's advice to switch the safety off is never passed on
            first = type(err).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first}. {_sentence(remedy)}".strip()) from None


def _unsafe_reason(err: Exception) -> str:
    """What the weights-only unpickler refused, without repeating PyTorch's advice to turn it off."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f"it refers to the Python object {found.group(1)}" if found else "it holds Python objects"
    return (f"it is not a robustloss checkpoint or it is unsafe: {what}, and robustloss will not execute "
            "code from a file (its checkpoints hold only tensors and plain values)")


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def name_the_file(err: BaseException, path: str | Path) -> None:
    """A failed ``write`` on a file object (a full disk) raises an OSError without a file name;
    give it the file the user asked for, so the one-line error says which write failed."""
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(path)
