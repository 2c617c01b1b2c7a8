"""Every 16-byte overwrite anywhere in the zip archives robustloss writes (torch checkpoints, numpy
records) is detected by ``archive_damage``: not only in member data (the CRC-32) but in the local
headers, data descriptors and end records, whose copies of the directory Python's zipfile never
compares. A damage there that slipped through would be a corrupt file silently used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustloss.checkpoint import archive_damage


def _torch_file(path):
    torch.save({"state_dict": {"w": torch.arange(40.0).reshape(4, 10), "b": torch.ones(3)}, "epoch": 3}, path)


def _numpy_file(path):
    np.savez_compressed(path, index=np.arange(50), pred=np.arange(50) % 10, meta=np.frombuffer(b'{"a": 1}', np.uint8))


@pytest.mark.parametrize("write", [_torch_file, _numpy_file], ids=["torch", "numpy"])
def test_every_overwritten_window_is_detected(tmp_path, write):
    path = tmp_path / "file.npz"  # numpy would add the suffix
    write(path)
    data = path.read_bytes()
    assert archive_damage(path) is None
    damaged = tmp_path / "damaged"
    missed = []
    for start in range(len(data) - 16):
        damaged.write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start:start + 16]) + data[start + 16:])
        if archive_damage(damaged) is None:
            missed.append(start)
    assert missed == [], f"{len(missed)} of {len(data) - 16} overwritten windows went unnoticed, e.g. at {missed[:5]}"


def test_a_byte_past_the_end_or_a_cut_tail_is_detected(tmp_path):
    path = tmp_path / "file"
    _torch_file(path)
    data = path.read_bytes()
    for changed in (data + b"\0", data[:-1], data[:-22]):
        path.write_bytes(changed)
        assert archive_damage(path) is not None
