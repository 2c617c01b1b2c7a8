"""Misclassification rank and probability gap against models whose probabilities are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustloss.analysis import class_rank, misclassification_ranks, probability_gaps, summarize_gaps
from robustloss.data.split import ImageSplit

CENTERS = torch.tensor([0.05 + 0.1 * k for k in range(10)])


class LineModel(nn.Module):
    """One pixel x; logit_k = -50 (x - c_k)^2 with centers 0.1 apart: the class boundaries are the
    midpoints, and the nearest other center is always the second most probable class."""

    num_classes = 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, :1]
        return -50.0 * (v - CENTERS.to(x.device)) ** 2


class FixedLogits(nn.Module):
    """Returns the logits stored for each sample, selected by the sample's first pixel (its index / 255)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[(x.flatten(1)[:, 0] * 255).round().long()]


def test_class_rank_by_hand():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert class_rank(probs, torch.tensor([2, 1])).tolist() == [2, 3]
    assert class_rank(probs, torch.tensor([1, 0])).tolist() == [1, 1]


def test_probability_gap_matches_hand_computation():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    images = torch.arange(3, dtype=torch.uint8).reshape(3, 1, 1, 1)
    labels = torch.tensor([0, 0, 2])
    gaps = probability_gaps(FixedLogits(logits), ImageSplit(images, labels))
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    expected = [p[0, 0] - p[0, 1], p[1, 0] - p[1, 1], 0.0]  # the second sample is misclassified: negative
    np.testing.assert_allclose(gaps, expected, atol=1e-6)
    summary = summarize_gaps(gaps)
    assert summary.mean == pytest.approx(np.mean(expected)) and summary.below["0"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no gaps"):
        summarize_gaps(np.zeros(0))


def test_ranks_and_first_eps_on_the_line_model():
    # Samples of class 3 (center 0.35) shifted toward class 4 by 0.015 and 0.025, and of class 6
    # shifted toward class 5 by 0.025. FGSM pushes each toward its nearest neighbour, so it first
    # succeeds once offset + eps passes the midpoint 0.05, landing in the 2nd most probable class.
    x = torch.tensor([0.35 + 0.015, 0.35 + 0.025, 0.65 - 0.025]).reshape(3, 1, 1, 1)
    y = torch.tensor([3, 3, 6])
    grid = [round(0.01 * k, 2) for k in range(1, 8)]
    study = misclassification_ranks(LineModel(), x, y, attack="fgsm", eps_grid=grid)
    np.testing.assert_allclose(study.first_eps, [0.04, 0.03, 0.03])
    assert study.ranks.tolist() == [2, 2, 2]
    assert study.new_successes == [0, 0, 2, 1, 0, 0, 0]
    assert study.percentages() == {"2nd": 100.0, "3rd": 0.0, "4th": 0.0, "5th": 0.0, "other": 0.0}


def test_rank_study_on_a_trained_lenet(trained_lenet, mnist5k):
    x, y = mnist5k.test.batch(slice(0, 100))
    study = misclassification_ranks(trained_lenet, x, y, attack="fgsm", eps_grid=[0.05, 0.1, 0.15, 0.2])
    assert sum(study.new_successes) == int((study.ranks > 0).sum()) > 20
    assert (study.ranks[study.ranks > 0] >= 2).all()  # an adversarial class is never the clean prediction
    shares = study.percentages()
    assert sum(shares.values()) == pytest.approx(100.0)
    assert shares["2nd"] > shares["other"]  # most adversarial examples land in the runner-up class


def test_analyze_commands_write_csv_and_png(cnn3_substitute, tmp_path):
    import csv

    from robustloss.cli import main

    out = tmp_path / "analysis"
    assert main(["analyze", "gap", str(cnn3_substitute), "--n-test", "200", "--out", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "probability-gap.csv")))
    assert len(rows) == 1 and rows[0]["n"] == "200" and -1 <= float(rows[0]["mean"]) <= 1
    assert main(["analyze", "rank", str(cnn3_substitute), "--n-test", "60", "--eps-step", "0.05", "--eps-max", "0.2",
                 "--attacks", "fgsm,mim", "--steps", "4", "--out", str(out), "--device", "cpu"]) == 0
    ranks = list(csv.DictReader(open(out / "rank.csv")))
    assert [(r["attack"], float(r["eps"])) for r in ranks] == [
        (attack, eps) for attack in ("fgsm", "mim") for eps in (0.05, 0.1, 0.15, 0.2)]
    for png in ("probability-gap.png", "rank.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
