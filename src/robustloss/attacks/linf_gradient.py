"""FGSM, BIM, PGD and MIM (L-inf) and PGD (L2): thin presets of the iterative gradient loop.

* FGSM (Goodfellow et al. 2015): 1 step of size eps.
* FGSM-RS (``fgsm-rs``, Wong et al. 2020): FGSM from a uniform random start, step 1.25 eps.
* BIM (Kurakin et al. 2016): iterative, no random start. PC paper default: 10 steps of 0.01.
* PGD (Madry et al. 2018): BIM from a random start, optional restarts. PC paper default:
  40 steps of 0.01. ``relative_step`` makes the step a multiple of each sample's eps (training's
  2.5 eps / steps); ``start_std`` starts from x + N(0, start_std^2) (TRADES).
* MIM (Dong et al. 2018): BIM with momentum, decay mu = 1.0. PC paper default: 40 steps of 0.01.
* PGD-L2 (``pgd-l2``): steps along the unit-L2 gradient, projected onto the L2 ball (the I-SCE
  paper's PGD). Default step 2.5 * eps / steps (Madry et al.'s rule of thumb), 10 steps.

Every preset takes ``eot`` (default 1): gradient passes averaged per step against randomised models
(Athalye et al. 2018; see ``robustloss.attacks.iterative``).
"""

from __future__ import annotations

from robustloss.attacks.step_rule import default_step_size
from robustloss.attacks.base import Attack
from robustloss.attacks.eot import eot_hyperparameter
from robustloss.attacks.objectives import Objective
from robustloss.attacks.iterative import IterativeGradientAttack, L2IterativeGradientAttack
from robustloss.attacks.registry import ATTACKS


@ATTACKS.register("fgsm")
class FGSM(IterativeGradientAttack):
    """Fast gradient sign method: one step of size eps (each sample's own eps when the call gives
    per-sample budgets). ``early_stop=False`` also perturbs samples the model already gets wrong,
    as adversarial training does; by default such a sample keeps its clean image, already adversarial."""

    name = "fgsm"

    def __init__(self, *, eps: float, early_stop: bool = True, targeted: bool = False, objective: str | Objective = "ce",
                 eot: int = 1):
        super().__init__(eps=eps, steps=1, step_size=None, relative_step=1.0, early_stop=early_stop, targeted=targeted,
                         objective=objective, eot=eot)

    def hyperparameters(self) -> dict:
        stop = {} if self.early_stop else {"early_stop": False}
        return Attack.hyperparameters(self) | stop | eot_hyperparameter(self.eot)


@ATTACKS.register("fgsm-rs")
class FGSMRandomStart(IterativeGradientAttack):
    """FGSM from a uniform random start in the eps-ball with a step of 1.25 eps (Wong et al. 2020,
    "fast" adversarial training): from a random start a step of eps alone often falls short."""

    name = "fgsm-rs"

    def __init__(self, *, eps: float, relative_step: float = 1.25, early_stop: bool = True, targeted: bool = False,
                 objective: str | Objective = "ce", eot: int = 1):
        super().__init__(eps=eps, steps=1, step_size=None, relative_step=relative_step, random_start=True,
                         early_stop=early_stop, targeted=targeted, objective=objective, eot=eot)

    def hyperparameters(self) -> dict:
        params = super().hyperparameters()
        del params["steps"], params["step_size"], params["random_start"]  # fixed by the method
        return params


@ATTACKS.register("bim")
class BIM(IterativeGradientAttack):
    name = "bim"

    def __init__(self, *, eps: float, steps: int = 10, step_size: float = 0.01, early_stop: bool = True,
                 targeted: bool = False, objective: str = "ce", eot: int = 1):
        super().__init__(eps=eps, steps=steps, step_size=step_size, early_stop=early_stop, targeted=targeted,
                         objective=objective, eot=eot)


@ATTACKS.register("pgd")
class PGD(IterativeGradientAttack):
    name = "pgd"

    def __init__(self, *, eps: float, steps: int = 40, step_size: float = 0.01, random_start: bool = True,
                 restarts: int = 1, early_stop: bool = True, targeted: bool = False, objective: str | Objective = "ce",
                 eot: int = 1, relative_step: float | None = None, start_std: float | None = None):
        super().__init__(eps=eps, steps=steps, step_size=step_size, random_start=random_start, restarts=restarts,
                         early_stop=early_stop, targeted=targeted, objective=objective, eot=eot,
                         relative_step=relative_step, start_std=start_std)


@ATTACKS.register("mim")
class MIM(IterativeGradientAttack):
    name = "mim"

    def __init__(self, *, eps: float, steps: int = 40, step_size: float = 0.01, decay: float = 1.0,
                 early_stop: bool = True, targeted: bool = False, objective: str = "ce", eot: int = 1):
        super().__init__(eps=eps, steps=steps, step_size=step_size, momentum=decay, early_stop=early_stop,
                         targeted=targeted, objective=objective, eot=eot)

    def hyperparameters(self) -> dict:
        params = super().hyperparameters()
        params["decay"] = params.pop("momentum")  # the constructor's name, so the record rebuilds the attack
        return params


@ATTACKS.register("pgd-l2")
class PGDL2(L2IterativeGradientAttack):
    name = "pgd-l2"

    def __init__(self, *, eps: float, steps: int = 10, step_size: float | None = None, random_start: bool = True,
                 restarts: int = 1, early_stop: bool = True, targeted: bool = False, objective: str = "ce",
                 eot: int = 1):
        step_size = default_step_size(eps, steps) if step_size is None else step_size
        super().__init__(eps=eps, steps=steps, step_size=max(step_size, 1e-12), random_start=random_start,
                         restarts=restarts, early_stop=early_stop, targeted=targeted, objective=objective, eot=eot)
