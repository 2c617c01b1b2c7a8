"""t-SNE of penultimate features with successful adversarial examples (PC paper, Fig. 1 and 3)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from robustloss.analysis.embedding import FeatureEmbedding, embed_with_adversarial_examples, embedding_rows
from robustloss.analysis.embedding_plots import plot_embeddings
from robustloss.analysis.features import stratified_subsample
from robustloss.analysis.tsne import resolve_tsne_method, tsne_2d
from robustloss.cli import main
from robustloss.errors import ConfigError
from robustloss.train import Phase, TrainConfig, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A short PGD: enough to fool a 3-epoch LeNet on a good share of samples, fast on CPU.
QUICK_PGD = {"steps": 10, "step_size": 0.03}


@pytest.fixture(scope="module")
def embedding(trained_lenet, mnist5k) -> FeatureEmbedding:
    return embed_with_adversarial_examples(trained_lenet, mnist5k.test, eps=0.2, attack_params=QUICK_PGD, n=80,
                                           method="sklearn", seed=0)


def test_clean_points_are_a_stratified_subsample(embedding, mnist5k):
    clean = ~embedding.adversarial
    assert clean.sum() == 80
    # mnist-5k's test split has 100 images per class: 80 of 1000 is 8 per class.
    assert np.bincount(embedding.labels[clean], minlength=10).tolist() == [8] * 10
    assert np.array_equal(embedding.labels[clean], mnist5k.test.labels.numpy()[embedding.source[clean]])


def test_shapes_and_only_successful_adversarial_points(embedding, trained_lenet, mnist5k):
    m = len(embedding.labels)
    assert embedding.coordinates.shape == (m, 2) and np.isfinite(embedding.coordinates).all()
    assert embedding.predictions.shape == embedding.adversarial.shape == embedding.source.shape == (m,)
    adv = embedding.adversarial
    assert adv.sum() > 0, "a 10-step PGD at eps 0.2 must fool some samples of a 3-epoch LeNet"
    assert (embedding.adversarial_predictions != embedding.labels[adv]).all(), "only successful attacks are shown"
    assert adv.sum() <= embedding.attacked <= 80
    # Every adversarial point comes from a clean sample that the model classified correctly.
    clean_pred = dict(zip(embedding.source[~adv], embedding.predictions[~adv]))
    clean_label = dict(zip(embedding.source[~adv], embedding.labels[~adv]))
    for s in embedding.source[adv]:
        assert clean_pred[s] == clean_label[s]
    # The clean predictions are the model's.
    x, _ = mnist5k.test.batch(torch.as_tensor(embedding.source[~adv]))
    with torch.no_grad():
        assert np.array_equal(trained_lenet(x).argmax(1).numpy(), embedding.predictions[~adv])


def test_same_seed_gives_identical_coordinates(embedding, trained_lenet, mnist5k):
    again = embed_with_adversarial_examples(trained_lenet, mnist5k.test, eps=0.2, attack_params=QUICK_PGD, n=80,
                                            method="sklearn", seed=0)
    assert np.array_equal(again.coordinates, embedding.coordinates)
    assert np.array_equal(again.source, embedding.source)
    other = embed_with_adversarial_examples(trained_lenet, mnist5k.test, eps=0.2, attack_params=QUICK_PGD, n=80,
                                            method="sklearn", seed=1)
    assert not np.array_equal(other.source, embedding.source)


def test_stratified_subsample_keeps_class_shares_and_size():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    index = stratified_subsample(labels, 10, seed=3)
    assert len(index) == 10 and len(set(index)) == 10
    assert np.bincount(labels[index]).tolist() == [5, 3, 2]
    assert np.array_equal(index, stratified_subsample(labels, 10, seed=3))
    assert len(stratified_subsample(labels, 7, seed=0)) == 7  # remainders are distributed, not dropped
    assert np.array_equal(stratified_subsample(labels, 500, seed=0), np.arange(100))


def test_tsne_methods_and_clear_error_without_opentsne(monkeypatch):
    import robustloss.analysis.tsne as tsne

    monkeypatch.setattr(tsne, "opentsne_available", lambda: False)
    assert resolve_tsne_method("auto") == "sklearn"
    with pytest.raises(ConfigError, match="pip install openTSNE"):
        resolve_tsne_method("opentsne")
    with pytest.raises(ConfigError, match="valid: auto, sklearn, opentsne"):
        resolve_tsne_method("umap")
    points = np.random.default_rng(0).normal(size=(12, 5))
    coordinates, backend = tsne_2d(points, method="auto", seed=0)  # perplexity is capped for tiny inputs
    assert coordinates.shape == (12, 2) and backend == "sklearn"


def test_plot_has_one_panel_per_run_and_is_a_valid_png(embedding, tmp_path):
    path = plot_embeddings({"ce": embedding, "again": embedding}, tmp_path / "embedding.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert width > 1.8 * height, "two side-by-side panels"


def test_clean_panels_give_the_papers_four_panels(embedding, tmp_path, monkeypatch):
    """PC Fig. 3: per run, (a) its clean points alone and (b) the same coordinates with the '+' added."""
    import robustloss.analysis.embedding_plots as embedding_plots

    drawn = []
    monkeypatch.setattr(embedding_plots, "save_figure", lambda fig, path: drawn.append(fig) or path)
    plot_embeddings({"CE": embedding, "PC-LC": embedding}, tmp_path / "embedding.png", clean_panels=True)
    axes = drawn[0].axes
    assert [ax.get_title().split("\n")[0] for ax in axes] == [
        "(a) CE: clean test samples only", "(b) CE: clean + successful adversarial examples",
        "(c) PC-LC: clean test samples only", "(d) PC-LC: clean + successful adversarial examples"]
    clean, adversarial = axes[0], axes[1]
    n_clean, n_adv = int((~embedding.adversarial).sum()), int(embedding.adversarial.sum())
    assert [len(c.get_offsets()) for c in clean.collections] == [n_clean]
    assert [len(c.get_offsets()) for c in adversarial.collections] == [n_clean, n_adv, n_adv]
    # Same limits: a clean point is in the same place in both panels.
    assert clean.get_xlim() == pytest.approx(adversarial.get_xlim())
    assert clean.get_ylim() == pytest.approx(adversarial.get_ylim())


def test_rows_hold_every_point(embedding):
    rows = embedding_rows("run", embedding)
    assert len(rows) == len(embedding.labels)
    assert sum(r["adversarial"] for r in rows) == embedding.adversarial.sum()
    assert {"x", "y", "label", "prediction", "test_index"} <= set(rows[0])


def test_cli_writes_png_and_csv(mnist5k, tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(recipe=[Phase("ce", 1)], max_train_samples=1000, seed=0), run, data=mnist5k, progress=False,
          log=lambda _: None, device="cpu")
    out = tmp_path / "out"
    assert main(["analyze", "embedding", str(run), "--n", "40", "--eps", "0.2", "--out", str(out),
                 "--method", "sklearn", "--device", "cpu"]) == 0
    assert (out / "embedding.png").read_bytes().startswith(PNG_SIGNATURE)
    with open(out / "embedding.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["adversarial"] == "False" for r in rows) == 40
    assert "fooled by pgd" in capsys.readouterr().out
