"""2-D/3-D feature spaces with PGD trajectories (MMC paper, Fig. 3b)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from robustloss.analysis.feature_space import (
    attack_iterates,
    choose_points,
    feature_space_study,
    feature_trajectories,
    require_plottable_features,
)
from robustloss.analysis.feature_space_plots import plot_feature_space
from robustloss.attacks import create_attack
from robustloss.cli import main
from robustloss.data.spec import Dataset
from robustloss.errors import ConfigError
from robustloss.models import create_model
from robustloss.models.saved import load_model
from robustloss.train import Phase, TrainConfig, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPS = 0.3


@pytest.fixture(scope="module")
def small_mnist(mnist5k):
    return Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 1000)), mnist5k.test.subset(slice(0, 200)))


@pytest.fixture(scope="module")
def mmc_2d_run(small_mnist, tmp_path_factory):
    """A LeNet-5 with a 2-D feature layer, trained 3 epochs with MMC centers on those 2 dimensions."""
    run = tmp_path_factory.mktemp("feat2d") / "run"
    config = TrainConfig(model_params={"feature_dim": 2}, recipe=[Phase("mmc", 3, {"embed_dim": None})], seed=0)
    train(config, run, data=small_mnist, progress=False, log=lambda _: None, device="cpu")
    return run


@pytest.fixture(scope="module")
def mmc_2d(mmc_2d_run):
    return load_model(mmc_2d_run / "model.pt")[0]


def _correct_batch(model, split, n=3):
    x, y = split.batch(slice(0, 100))
    with torch.no_grad():
        keep = torch.nonzero(model(x).argmax(1) == y).flatten()[:n]
    return x[keep], y[keep]


def test_trajectory_starts_at_the_clean_features_and_stays_in_budget(mmc_2d, small_mnist):
    x, y = _correct_batch(mmc_2d, small_mnist.test)
    images, norm = attack_iterates(mmc_2d, x, y, eps=EPS, steps=6, step_size=0.05, objective="ce")
    assert norm == "linf" and images.shape == (len(x), 7, *x.shape[1:])
    assert torch.equal(images[:, 0], x)
    assert (images - x[:, None]).abs().amax() <= EPS + 1e-5, "every iterate within the L-inf ball"
    assert images.min() >= 0 and images.max() <= 1
    assert (images[:, 1:] != images[:, :-1]).any(), "the attack moves the image"

    t = feature_trajectories(mmc_2d, x, y, eps=EPS, steps=6, step_size=0.05, objective="ce")
    assert t.features.shape == (len(x), 7, 2) and t.predictions.shape == t.distances.shape == (len(x), 7)
    with torch.no_grad():
        assert np.allclose(t.features[:, 0], mmc_2d.features(x).numpy(), atol=1e-5)
    assert (t.predictions[:, 0] == y.numpy()).all()
    assert (t.distances <= EPS + 1e-5).all() and (t.distances[:, 0] == 0).all()


def test_last_iterate_is_the_plain_attack_result(mmc_2d, small_mnist):
    x, y = _correct_batch(mmc_2d, small_mnist.test)
    images, _ = attack_iterates(mmc_2d, x, y, eps=EPS, steps=5, step_size=0.05, objective="adaptive")
    direct = create_attack("pgd", eps=EPS, steps=5, step_size=0.05, random_start=False, early_stop=False,
                           objective="adaptive")(mmc_2d, x, y)
    assert torch.equal(images[:, -1], direct.x_adv)


def test_adaptive_and_ce_trajectories_differ_for_an_mmc_head(mmc_2d, small_mnist):
    study = feature_space_study(mmc_2d, small_mnist.test, points=3, eps=EPS, steps=4)
    ce, adaptive = study.trajectories["ce"], study.trajectories["adaptive"]
    assert ce.resolved_objective == "ce" and adaptive.resolved_objective == "mmc"
    assert np.array_equal(ce.indices, adaptive.indices), "both objectives attack the same inputs"
    assert np.allclose(ce.features[:, 0], adaptive.features[:, 0])
    assert not np.allclose(ce.features[:, 1:], adaptive.features[:, 1:], atol=1e-3)
    assert study.features.shape == (200, 2) and study.centers.shape == (10, 2)
    assert len(set(study.labels[ce.indices])) == 3, "points come from different classes"


def test_choose_points_takes_correct_samples_from_distinct_classes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    correct = np.array([False, True, True, True, False, False])
    chosen = choose_points(labels, correct, 3, seed=0)
    assert set(chosen) <= {1, 2, 3} and len(chosen) == 3
    assert set(labels[chosen[:2]]) == {0, 1}, "one per class before any class repeats"
    with pytest.raises(ValueError, match="no test sample correctly"):
        choose_points(labels, np.zeros(6, bool), 2, seed=0)


@pytest.mark.parametrize("feature_dim", [None, 10])
def test_model_without_a_plottable_feature_layer_is_a_clear_error(feature_dim, small_mnist):
    model = create_model("lenet5", feature_dim=feature_dim)
    with pytest.raises(ConfigError, match="feature_dim=2"):
        require_plottable_features(model)
    with pytest.raises(ConfigError, match="analyze embedding"):
        feature_space_study(model, small_mnist.test, points=2, steps=2)


def test_only_replayable_attacks_are_accepted(mmc_2d, small_mnist):
    with pytest.raises(ConfigError, match="iterative gradient attack.*pgd"):
        feature_space_study(mmc_2d, small_mnist.test, points=2, steps=2, attack="apgd")


def test_plots_2d_and_3d_as_valid_pngs(mmc_2d, small_mnist, tmp_path):
    torch.manual_seed(0)
    model_3d = create_model("lenet5", feature_dim=3).eval()  # untrained: enough for the 3-D drawing path
    studies = {
        "2-D MMC": feature_space_study(mmc_2d, small_mnist.test, points=2, steps=3),
        "3-D untrained": feature_space_study(model_3d, small_mnist.test, points=2, steps=3, objectives=("ce",)),
    }
    assert studies["3-D untrained"].trajectories["ce"].features.shape == (2, 4, 3)
    data = plot_feature_space(studies, tmp_path / "features.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000


def test_cli_writes_trajectories_and_plot(mmc_2d_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "features", str(mmc_2d_run), "--points", "2", "--steps", "3", "--n-test", "150",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "feature-space.png").read_bytes().startswith(PNG_SIGNATURE)
    with open(out / "feature-space.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 4  # objectives x points x (steps + 1)
    assert {r["resolved_objective"] for r in rows} == {"ce", "mmc"}
    assert all(float(r["linf_distance"]) <= EPS + 1e-5 for r in rows)
    with open(out / "feature-space-test-features.csv") as f:
        assert len(list(csv.DictReader(f))) == 150
    assert "2-D features" in capsys.readouterr().out


def test_cli_explains_how_to_get_a_2d_model(mnist5k, tmp_path, capsys):
    run = tmp_path / "native"
    small = Dataset(mnist5k.spec, mnist5k.train.subset(slice(0, 300)), mnist5k.test.subset(slice(0, 50)))
    train(TrainConfig(recipe=[Phase("ce", 1)], seed=0), run, data=small, progress=False, log=lambda _: None,
          device="cpu")
    assert main(["analyze", "features", str(run), "--n-test", "50", "--out", str(tmp_path / "out")]) == 1
    assert "--model-param feature_dim=2" in capsys.readouterr().err
