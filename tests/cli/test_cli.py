"""The command line, end to end on embedded data, and its error messages."""

from __future__ import annotations

import pytest

from robustloss.cli import main


def test_train_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist-5k", "--recipe", "ce:1,pc:1", "--loss-param", "pc.xi=0.9",
                 "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    assert "model written to" in capsys.readouterr().out
    assert "xi: 0.9" in (run / "config.yaml").read_text()
    assert main(["eval", str(run), "--attacks", "fgsm,pgd", "--eps", "0.1", "--steps", "5", "--n-test", "100",
                 "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| Clean | - |" in out and "PGD" in out
    for name in ("results.md", "results.csv", "records.npz"):
        assert (run / "eval" / name).exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--loss", "pcx", "--epochs", "1"], "unknown loss 'pcx'; valid loss names: arcface, ce, center, "),
        (["train", "--recipe", "ce:1", "--model", "lenet"], "unknown model 'lenet'; valid model names: cnn3"),
        (["train", "--recipe", "ce:1", "--dataset", "mnist5k"], "unknown dataset 'mnist5k'; valid dataset names"),
        (["train", "--recipe", "ce:1,pc:1", "--loss-param", "pc.margin=1"], "valid parameters: xi, lam, variant"),
        (["train", "--recipe", "ce1"], "expected LOSS:EPOCHS"),
        (["data", "fetch", "imagenet"], "unknown dataset 'imagenet'"),
    ],
)
def test_bad_input_gets_an_actionable_error(argv, message, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "run")]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_malformed_config_file_points_at_the_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: mnist-5k\noptimizer:\n  lr: 0.01\n  decay: 0.5\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "optimizer.decay: unknown key; valid keys here: name, lr" in capsys.readouterr().err


def test_missing_dataset_names_files_and_fetch_command(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--recipe", "ce:1", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "robustloss data fetch mnist" in err and str(tmp_path) in err


def test_fetch_without_network_fails_clearly(tmp_path, capsys, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "ossci-datasets.s3.amazonaws.com" in err or "yann.lecun.com" in err
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_data_list(capsys, tmp_path):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist-5k" in out and "embedded" in out and "robustloss data fetch cifar10" in out


def test_eval_defaults_to_the_objective_that_fits_the_head(tmp_path, capsys):
    run = tmp_path / "mmc"
    assert main(["train", "--dataset", "mnist-5k", "--loss", "mmc", "--epochs", "1", "--out", str(run),
                 "--device", "cpu", "--no-progress"]) == 0
    assert main(["eval", str(run), "--attacks", "pgd", "--eps", "0.1", "--n-test", "50", "--device", "cpu",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "objective=mmc" in out and "objective_requested=adaptive" in out
