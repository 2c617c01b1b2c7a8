"""The figure configs reuse the models (and where stated the runs) of the table configs they draw:
the runner keys models by the hash of their training config, so equal hashes mean trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustloss.experiments.schema import SCALES, load_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def cells_by_method(name: str, scale: str, section: tuple[str, str] | None = None) -> dict:
    experiment = load_experiment(CONFIGS / name, scale)
    return {c.labels["method"]: c for c in experiment.cells
            if section is None or c.labels.get(section[0]) == section[1]}


@pytest.mark.parametrize("scale", SCALES)
def test_pc_fig3_draws_pc_table1s_mnist_models(scale):
    figure = cells_by_method("pc_fig3.yaml", scale)
    table = cells_by_method("pc_table1.yaml", scale, section=("dataset", "MNIST"))
    assert list(figure) == ["CE", "PC-LC"]
    assert {m: c.train_hash for m, c in figure.items()} == {m: table[m].train_hash for m in figure}


@pytest.mark.parametrize("scale", ["demo", "paper"])
def test_mmc_fig3a_cells_are_mmc_table1s_runs(scale):
    figure = cells_by_method("mmc_fig3a.yaml", scale)
    table = cells_by_method("mmc_table1.yaml", scale)
    # The figure's models, SCE first: the analysis times the others against the first model.
    assert list(figure) == ["SCE", "Center loss", "MMC-10", "AT10-tar(SCE)", "AT10-tar(MMC-10)"]
    for method, cell in figure.items():
        assert cell.train_hash == table[method].train_hash, method
        assert cell.hash == table[method].hash, f"{method}: same training and evaluation, so the same run"


def test_mmc_fig3a_trains_as_the_paper_states():
    """AT is 10-step targeted PGD at eps 8/255; every model 200 epochs of SGD lr 0.01, x0.1 at 100 and 150."""
    figure = cells_by_method("mmc_fig3a.yaml", "paper")
    for method, cell in figure.items():
        assert cell.train.dataset == "cifar10" and cell.train.total_epochs == 200
        assert (cell.train.optimizer.lr, cell.train.optimizer.milestones) == (0.01, [100, 150])
        adversarial = cell.train.adversarial
        assert (adversarial is not None) == method.startswith("AT10-tar"), method
        if adversarial is not None:
            assert (adversarial.steps, adversarial.targeted) == (10, True)
            assert adversarial.eps == pytest.approx(8 / 255)
