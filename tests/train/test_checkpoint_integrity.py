"""Verified checkpoint reads, the fallback to the previous epoch's state, and the clean-up of killed writes."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch

from robustloss import checkpoint
from robustloss.checkpoint import atomic_save, file_sha256, remove_stale_temporaries, safe_load
from robustloss.data.spec import Dataset
from robustloss.errors import CheckpointError
from robustloss.evaluate.chunk_cache import ChunkCache
from robustloss.train import OptimizerConfig, Phase, TrainConfig, train

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


@pytest.fixture(scope="module")
def small(mnist5k):
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 300)), mnist5k.test.subset(slice(0, 100)))


def flip_inside_member(path, member_suffix: str) -> None:
    """Invert 8 bytes in the middle of one zip member's stored data."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(f.read(4), dtype="<u2")
        middle = info.header_offset + 30 + int(name_length) + int(extra_length) + info.compress_size // 2
        f.seek(middle)
        chunk = f.read(8)
        f.seek(middle)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_a_bit_flip_in_tensor_data_is_refused_though_torch_load_takes_it(tmp_path):
    path = atomic_save({"weights": torch.arange(4096, dtype=torch.float32)}, tmp_path / "last.pt")
    flip_inside_member(path, "data/0")
    loaded = torch.load(path, weights_only=True)  # what resumed silently before: wrong weights, no error
    assert not torch.equal(loaded["weights"], torch.arange(4096, dtype=torch.float32))
    with pytest.raises(CheckpointError, match=r"fails its CRC-32 check") as raised:
        safe_load(path, remedy="delete it and retry")
    message = str(raised.value)
    assert str(path) in message and message.endswith("Delete it and retry.") and "\n" not in message


def test_the_recorded_sha256_is_compared(tmp_path):
    path = atomic_save({"epoch": 3}, tmp_path / "model.pt")
    recorded = file_sha256(path)
    assert safe_load(path, sha256=recorded) == {"epoch": 3}
    atomic_save({"epoch": 4}, tmp_path / "model.pt")  # an intact archive, but not the one recorded
    with pytest.raises(CheckpointError, match="differs from the .* recorded when it was written"):
        safe_load(path, sha256=recorded)


def test_an_empty_checkpoint_says_it_is_empty(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes, truncated") as raised:
        safe_load(tmp_path / "model.pt")
    assert str(raised.value).endswith("Delete it and rerun the command that wrote it.")


def test_pickled_code_is_refused_without_suggesting_weights_only_false(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as raised:
        safe_load(tmp_path / "evil.pt")
    message = str(raised.value)
    assert "not a robustloss checkpoint or it is unsafe" in message and "will not execute code" in message
    assert "system" in message  # what it tried to call
    assert "weights_only" not in message and "\n" not in message


def _interrupted(config: TrainConfig, run, data, at_epoch: int) -> None:
    def stop(message):
        if f"epoch {at_epoch}/" in message:
            raise KeyboardInterrupt  # after the epoch before was checkpointed

    with pytest.raises(KeyboardInterrupt):
        train(config, run, data=data, progress=False, device="cpu", log=stop)


CONFIG = TrainConfig(recipe=[Phase("ce", 2), Phase("pc", 2)], seed=1, batch_size=100,
                     optimizer=OptimizerConfig(milestones=[3]))


@pytest.fixture(scope="module")
def straight(small, tmp_path_factory):
    return train(CONFIG, tmp_path_factory.mktemp("straight") / "run", data=small, **QUIET).model.state_dict()


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_previous_state_is_kept_while_training_and_dropped_at_the_end(small, tmp_path):
    run = tmp_path / "run"
    _interrupted(CONFIG, run, small, at_epoch=4)
    assert safe_load(run / "checkpoints" / "last.pt")["epoch"] == 3
    assert safe_load(run / "checkpoints" / "previous.pt")["epoch"] == 2
    train(CONFIG, run, data=small, resume=True, **QUIET)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(small, tmp_path, straight):
    run = tmp_path / "run"
    _interrupted(CONFIG, run, small, at_epoch=4)
    flip_inside_member(run / "checkpoints" / "last.pt", "data/0")
    lines = []
    resumed = train(CONFIG, run, data=small, resume=True, progress=False, device="cpu", log=lines.append)
    assert any("last.pt is damaged" in line and "resuming from the epoch before it" in line for line in lines)
    assert any("resuming" in line and "after epoch 2/4" in line for line in lines)
    assert same(resumed.model.state_dict(), straight)  # one epoch redone, same result
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_a_kill_between_the_two_renames_resumes_from_the_previous_state(small, tmp_path, straight):
    run = tmp_path / "run"
    _interrupted(CONFIG, run, small, at_epoch=4)
    (run / "checkpoints" / "last.pt").unlink()  # last.pt renamed away, the new one not yet in place
    resumed = train(CONFIG, run, data=small, resume=True, **QUIET)
    assert same(resumed.model.state_dict(), straight)


def test_no_intact_state_refuses_to_resume_and_says_what_to_do(small, tmp_path):
    run = tmp_path / "run"
    _interrupted(CONFIG, run, small, at_epoch=4)
    for name in ("last.pt", "previous.pt"):
        path = run / "checkpoints" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as raised:
        train(CONFIG, run, data=small, resume=True, **QUIET)
    message = str(raised.value)
    assert "last.pt is damaged" in message and "previous.pt is damaged" in message
    assert "Delete" in message and "--resume to restart the run from its first epoch" in message
    assert (run / "checkpoints" / "last.pt").exists()  # nothing is deleted without an intact state to go on


def test_a_checkpoint_from_another_config_is_not_resumed(small, tmp_path):
    run = tmp_path / "run"
    _interrupted(CONFIG, run, small, at_epoch=2)
    other = TrainConfig(recipe=[Phase("ce", 2), Phase("pc", 2)], seed=2, batch_size=100,
                        optimizer=OptimizerConfig(milestones=[3]))
    (run / "config.yaml").unlink()  # lost; the user reruns with other settings
    with pytest.raises(CheckpointError, match="written by a run with a different config"):
        train(other, run, data=small, resume=True, **QUIET)


def aged(path, seconds: float = 60.0):
    os.utime(path, (time.time() - seconds, time.time() - seconds))
    return path


def test_resume_removes_temporaries_of_killed_writes_and_nothing_else(small, tmp_path):
    run = tmp_path / "run"
    _interrupted(CONFIG, run, small, at_epoch=2)
    stale = [run / "checkpoints" / ".last.pt.k1ll3d_x.tmp", run / ".model.pt.abcdefgh.tmp"]
    fresh = run / "checkpoints" / ".last.pt.justnow1.tmp"  # could be another process's write in progress
    others = [run / "notes.tmp", run / ".hidden", run / "checkpoints" / "mine.pt.tmp"]
    for path in [*stale, *others, fresh]:
        path.write_bytes(b"x")
    for path in [*stale, *others]:
        aged(path)
    lines = []
    train(CONFIG, run, data=small, resume=True, progress=False, device="cpu", log=lines.append)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in others)
    assert any("removed 1 temporary file(s)" in line and ".last.pt.k1ll3d_x.tmp" in line for line in lines)


def test_a_live_write_in_another_process_is_never_removed(tmp_path):
    """A real writer, paused mid-write, then killed with SIGKILL: its file is kept while it lives."""
    target = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import time
        from robustloss.checkpoint import atomic_write
        def slow(f):
            f.write(b"x" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(120)
        atomic_write({str(target)!r}, slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        (temporary,) = tmp_path.glob(".last.pt.*.tmp")
        aged(temporary)
        assert remove_stale_temporaries(tmp_path) == [] and temporary.exists()  # locked by its live writer
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        aged(temporary)
        assert remove_stale_temporaries(tmp_path) == [temporary] and not temporary.exists()
        assert not target.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_locked_temporary_is_kept(tmp_path):
    path = tmp_path / ".last.pt.abcdefgh.tmp"
    path.write_bytes(b"x")
    aged(path)
    with open(path, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path) == [path]


def test_chunk_writes_use_a_temporary_file_of_their_own(tmp_path, monkeypatch):
    cache = ChunkCache(tmp_path)
    renamed = []
    real = os.replace
    monkeypatch.setattr(checkpoint.os, "replace", lambda src, dst: renamed.append((src, dst)) or real(src, dst))
    arrays = {"adv_pred": np.arange(5)}
    cache.save("k" * 32, arrays)
    cache.save("k" * 32, arrays)  # a second writer of the same chunk (another `robustloss eval`)
    sources = [src for src, _ in renamed]
    assert len(set(sources)) == 2 and all(os.path.dirname(s) == str(tmp_path) for s in sources)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k" * 32 + ".npz"]
    assert (tmp_path / f"{'k' * 32}.npz").stat().st_mode & 0o777 == 0o644
    np.testing.assert_array_equal(cache.load("k" * 32)["adv_pred"], np.arange(5))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_chunk_is_dropped_with_a_warning(tmp_path, damage, caplog):
    cache = ChunkCache(tmp_path)
    cache.save("c" * 32, {"adv_pred": np.arange(2000), "linf": np.linspace(0, 1, 2000, dtype=np.float32)})
    path = tmp_path / f"{'c' * 32}.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        flip_inside_member(path, "adv_pred.npy")
    else:
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    with caplog.at_level("WARNING"):
        assert cache.load("c" * 32) is None
    assert not path.exists()
    assert any(str(path) in r.getMessage() and "recomputed" in r.getMessage() for r in caplog.records)


def test_opening_a_chunk_cache_removes_temporaries_of_killed_writes(tmp_path):
    leftover = tmp_path / f".{'d' * 32}.npz.abcdefgh.tmp"
    leftover.write_bytes(b"half a chunk")
    aged(leftover)
    ChunkCache(tmp_path)
    assert not leftover.exists()
