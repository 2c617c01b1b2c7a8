"""Black-box transfer attacks: craft on a substitute model, evaluate on the target.

The adversary trains its own model on the same data (the PC paper: ``cnn3`` as substitute for
LeNet-5, ResNet-56 for VGG-13; the MMC paper: MIM for transferability), runs a white-box attack
on it, and submits the result to the target, which it never queries while crafting.

``substitute`` is a run directory written by ``robustloss train`` (or a ``model.pt`` file), so
the substitute is trained, checkpointed and reused by the same code as any other model. The
inner attack (``method``, PGD or MIM by default settings of the PC paper) resolves its own
objective against the substitute, e.g. ``adaptive`` picks the substitute's training loss.
"""

from __future__ import annotations

from pathlib import Path
import torch
from torch import Tensor, nn

from robustloss.attacks.base import Attack
from robustloss.attacks.crafted_memo import CraftedMemo
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS, create_attack


def substitute_model_path(substitute: str | Path) -> Path:
    path = Path(substitute)
    return path / "model.pt" if path.is_dir() else path


@ATTACKS.register("transfer")
class TransferAttack(Attack):
    name = "transfer"
    queries_target = False
    # One memo for every instance: the engine builds a new attack per (model, eps), and the point is
    # that the second target of the same substitute gets the first one's examples.
    memo = CraftedMemo()

    def __init__(self, *, eps: float, substitute: str, method: str = "pgd", method_params: dict | None = None,
                 targeted: bool = False, objective: str = "adaptive"):
        super().__init__(eps=eps, targeted=targeted, objective=objective)
        self.substitute = str(substitute)
        self.method, self.method_params = method, dict(method_params or {})
        # Build the inner attack now so a bad method or parameter fails before any work. It runs
        # to its final iterate: an example that only just fools the substitute rarely transfers.
        inner_params = {"early_stop": False} | self.method_params
        self.inner = create_attack(method, eps=eps, targeted=targeted, objective=objective, **inner_params)
        self.norm = self.inner.norm  # the budget is the inner attack's
        self._model: nn.Module | None = None

    def hyperparameters(self) -> dict:
        inner = {k: v for k, v in self.inner.hyperparameters().items() if k not in ("eps", "targeted", "objective")}
        return {"eps": self.eps, "targeted": self.targeted, "objective": self.objective_name,
                "substitute": self.substitute, "method": self.method, "method_params": inner}

    def substitute_model(self, device: torch.device) -> nn.Module:
        if self._model is None:
            from robustloss.models.saved import load_model  # attacks must not import models at import time

            path = substitute_model_path(self.substitute)
            if not path.exists():
                from robustloss.errors import CheckpointError

                raise CheckpointError(
                    f"transfer: no substitute model at {path}; train one first, e.g. "
                    f"robustloss train --dataset mnist-5k --model cnn3 --loss ce --epochs 20 --out {self.substitute}"
                )
            self._model = load_model(path)[0]
        return self._model.to(device)

    def run(self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
            generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        source = self.substitute_model(x.device)
        path = substitute_model_path(self.substitute).resolve()
        stat = path.stat()  # a retrained substitute (new file) must not hit the old examples
        # the inner attack resolves its objective against the substitute: the target's does not matter
        settings = (str(path), stat.st_mtime_ns, stat.st_size, self.method, self.inner.hyperparameters())
        x_adv = self.memo.get_or_craft(
            settings, (x, y, goal), generator,
            lambda: self.inner.craft(source, x, y, target=goal if self.targeted else None, generator=generator))
        return x_adv, torch.zeros(len(x), dtype=torch.int64, device=x.device)  # no target queries


register_preset("transfer-pgd-pc", "transfer", "PC paper Table 3: PGD on the substitute, 40 steps of 0.01",
                method="pgd", method_params={"steps": 40, "step_size": 0.01})
register_preset("transfer-mim-pc", "transfer", "PC paper Table 3: MIM on the substitute, 40 steps of 0.01",
                method="mim", method_params={"steps": 40, "step_size": 0.01})
# MMC paper Fig. 4 (Sec. 4.4): untargeted PGD and MIM transferred. The paper gives neither steps nor step
# size for them; these are its Table 1 white-box settings (PGD_10: 10 steps of 2/255, random start) and
# Dong et al.'s decay 1.0 for MIM.
register_preset("transfer-pgd-mmc", "transfer", "MMC paper Fig. 4: untargeted PGD on the substitute, 10 steps of "
                "2/255, random start (steps and step: Table 1's PGD_10, not stated for Fig. 4)",
                method="pgd", method_params={"steps": 10, "step_size": 2 / 255, "random_start": True})
register_preset("transfer-mim-mmc", "transfer", "MMC paper Fig. 4: untargeted MIM on the substitute, 10 steps of "
                "2/255, decay 1.0 (steps and step: Table 1's PGD_10, not stated for Fig. 4)",
                method="mim", method_params={"steps": 10, "step_size": 2 / 255, "decay": 1.0})
