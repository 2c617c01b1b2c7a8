"""The installed package does its main job on its own: a wheel built from this tree carries its
configs and published numbers, and runs a shipped experiment by name from an unrelated directory.

Offline: the wheel is built without build isolation (setuptools from the test environment) and
installed with --no-deps into a folder put first on PYTHONPATH, so it runs on the test
environment's torch and friends and never touches the network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pip(*args: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "-q"], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding robustloss installed from a wheel of this tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building in place would leave build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    _pip("wheel", "--no-build-isolation", "-w", str(work / "dist"), str(source), cwd=work)
    wheels = list((work / "dist").glob("robustloss-*.whl"))
    assert len(wheels) == 1
    _pip("install", "--target", str(work / "site"), str(wheels[0]), cwd=work)
    return work / "site"


def _robustloss(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(cwd), "ROBUSTLOSS_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "robustloss", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_carries_every_config_and_published_table(installed):
    shipped = {p.name for p in (installed / "robustloss" / "configs").glob("*.yaml")}
    assert shipped == {p.name for p in (ROOT / "src" / "robustloss" / "configs").glob("*.yaml")}
    assert {p.name for p in (installed / "robustloss" / "configs" / "published").glob("*.csv")} == {
        p.name for p in (ROOT / "src" / "robustloss" / "configs" / "published").glob("*.csv")}


def test_the_installed_package_runs_the_demo_experiment_by_name_from_elsewhere(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import robustloss; print(robustloss.__file__, robustloss.__version__)"],
                           cwd=tmp_path, env={"PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert probe.stdout.startswith(str(installed)), probe.stdout + probe.stderr  # the wheel, not the checkout

    listed = _robustloss(installed, tmp_path, "configs")
    assert listed.returncode == 0 and "pc-table1" in listed.stdout and "pc-demo" in listed.stdout, listed.stderr

    result = _robustloss(installed, tmp_path, "run", "pc-demo", "--scale", "smoke", "--root", "runs", "--report",
                         "--no-progress")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "runs" / "results.sqlite").is_file()
    assert list((tmp_path / "runs" / "reports").glob("**/*.html")), "no report was written"
