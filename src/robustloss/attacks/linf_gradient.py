"""FGSM, BIM, PGD and MIM (L-inf) and PGD (L2): thin presets of the iterative gradient loop.

* FGSM (Goodfellow et al. 2015): 1 step of size eps.
* BIM (Kurakin et al. 2016): iterative, no random start. PC paper default: 10 steps of 0.01.
* PGD (Madry et al. 2018): BIM from a random start, optional restarts. PC paper default:
  40 steps of 0.01.
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
from robustloss.attacks.iterative import IterativeGradientAttack, L2IterativeGradientAttack
from robustloss.attacks.registry import ATTACKS


@ATTACKS.register("fgsm")
class FGSM(IterativeGradientAttack):
    """Fast gradient sign method: one step of size eps."""

    name = "fgsm"

    def __init__(self, *, eps: float, targeted: bool = False, objective: str = "ce", eot: int = 1):
        super().__init__(eps=eps, steps=1, step_size=max(eps, 1e-12), targeted=targeted, objective=objective,
                         eot=eot)

    def hyperparameters(self) -> dict:
        return Attack.hyperparameters(self) | eot_hyperparameter(self.eot)


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
                 restarts: int = 1, early_stop: bool = True, targeted: bool = False, objective: str = "ce",
                 eot: int = 1):
        super().__init__(eps=eps, steps=steps, step_size=step_size, random_start=random_start, restarts=restarts,
                         early_stop=early_stop, targeted=targeted, objective=objective, eot=eot)


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
