"""The command's start-up: glibc's malloc thresholds set once, by restarting the same command line."""

from __future__ import annotations

import os
import subprocess
import sys

from robustloss.launch import ALLOCATOR_SETTINGS, OPT_OUT, allocator_environment


def test_the_thresholds_are_added_on_linux_and_the_users_own_are_kept():
    env = allocator_environment({"PATH": "/bin"}, platform="linux")
    assert env == {"PATH": "/bin"} | ALLOCATOR_SETTINGS
    mine = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    assert allocator_environment(mine, platform="linux")["MALLOC_MMAP_THRESHOLD_"] == "131072"
    assert allocator_environment(dict(ALLOCATOR_SETTINGS), platform="linux") is None  # nothing to do: no restart
    assert allocator_environment({OPT_OUT: "1"}, platform="linux") is None
    assert allocator_environment({}, platform="darwin") is None


def test_the_command_restarts_itself_once_with_the_thresholds_then_runs():
    code = ("import os, sys; from robustloss.launch import run; "
            "print('trim', os.environ.get('MALLOC_TRIM_THRESHOLD_'), os.getpid(), flush=True); "
            "sys.argv = ['robustloss', '--version']; run()")
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_SETTINGS and k != OPT_OUT}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if not sys.platform.startswith("linux"):
        assert lines[0].startswith("trim None") and lines[1].startswith("robustloss")
        return
    first, second, version = lines
    assert first.split()[:2] == ["trim", "None"]
    assert second.split()[:2] == ["trim", ALLOCATOR_SETTINGS["MALLOC_TRIM_THRESHOLD_"]]
    assert first.split()[2] == second.split()[2]  # execve: the same process, so callers and torchrun see one pid
    assert version.startswith("robustloss")
