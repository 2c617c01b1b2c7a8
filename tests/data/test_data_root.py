"""Data-root precedence: explicit argument > $ROBUSTLOSS_DATA > ~/.cache/robustloss."""

from __future__ import annotations

from pathlib import Path

from robustloss.data import DATA_ENV_VAR, data_root


def test_argument_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "from-env"))
    assert data_root(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert data_root(str(tmp_path / "from-arg")) == tmp_path / "from-arg"


def test_environment_wins_over_default(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "from-env"))
    assert data_root() == tmp_path / "from-env"
    assert data_root(None) == tmp_path / "from-env"


def test_default_is_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root() == tmp_path / ".cache" / "robustloss"


def test_empty_environment_variable_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root() == tmp_path / ".cache" / "robustloss"


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root("~/datasets") == tmp_path / "datasets"
    monkeypatch.setenv(DATA_ENV_VAR, "~/envdata")
    assert data_root() == tmp_path / "envdata"


def test_loading_uses_environment_root(tmp_path, monkeypatch):
    # The same rule must reach the loaders, not only data_root().
    import pytest

    from robustloss.data import load_dataset
    from robustloss.errors import DatasetNotFoundError

    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env-root"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist")
    assert str(Path(tmp_path / "env-root" / "mnist")) in str(info.value)
