"""What an evaluation runs: the attack plan, its budgets and the settings of the run.

``AttackSpec`` names one attack (a registered attack or a preset) with its parameters and budgets;
``EvaluateConfig`` is the whole evaluation (attacks, sample count, mode, seed, precision, defence,
diagnostics), the same object whether it comes from an experiment file's ``evaluate:`` block, from
``robustloss eval``'s flags or from Python. ``DefenseSpec`` names an inference-time defence that
wraps the model before it is attacked.

These sit below the engine (``robustloss.evaluate.engine``) and the front door
(``robustloss.evaluate.run``), so experiments, the CLI and ``standard_evaluation`` all build the
same config and take the same path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from robustloss.attacks import ATTACKS, PRESETS, create_attack
from robustloss.config import MAX_LINF_EPS, check_linf_budget, check_numeric_parameters  # noqa: F401 (re-exported)
from robustloss.defenses import defense_parameters
from robustloss.errors import ConfigError, RobustlossError

MODES = ("protocol", "worst-case")
@dataclass
class AttackSpec:
    """One attack of a plan. ``attack`` is a registered attack (``pgd``) or a preset (``cw-pc-100``);
    ``params`` override the preset's. ``eps`` lists budgets; ``None`` runs a minimum-norm attack
    unbounded or an attack without a norm budget (noise, rotation). Targeted attacks get targets drawn
    by the engine (``targets``: ``random`` - a uniformly random wrong class, seeded - or ``next`` - y + 1).

    ``n_samples`` attacks only a fixed random subset of that many evaluated samples, for attacks too
    costly for the whole test set (SPSA, C&W-1000 on 10,000 images). The subset depends only on the
    evaluation seed, ``n_samples`` and the test-set size, never on the model or the attack, so every
    model and every attack with the same ``n_samples`` sees the same images and paired comparisons
    hold. The record's accuracy is over the subset; reports give it with its confidence interval.

    Budgets: ``inf`` (or ``.inf``) is read as ``None``, unbounded; an empty list is refused (the attack
    would run at no budget at all). ``validate`` refuses L-inf budgets above 1 (see ``check_linf_budget``)."""

    attack: str
    eps: list[float | None] = field(default_factory=lambda: [None])
    params: dict[str, Any] = field(default_factory=dict)  # everything but eps
    label: str = ""  # display name; defaults to the attack (or preset) name
    targets: Literal["random", "next"] = "random"
    n_samples: int | None = None  # a seeded random subset of this many samples (None: all of them)

    def __post_init__(self) -> None:
        if not isinstance(self.eps, list):
            self.eps = [self.eps]  # one budget may be written without brackets (Python callers)
        if not self.eps:
            raise ConfigError(f"attack {self.name!r}: eps is an empty list; give at least one budget "
                              "(null or inf: unbounded)")
        self.eps = [None if isinstance(e, float) and math.isinf(e) and e > 0 else e for e in self.eps]
        if self.n_samples is not None and (isinstance(self.n_samples, bool) or int(self.n_samples) != self.n_samples
                                           or self.n_samples < 1):
            raise ConfigError(f"attack {self.name!r}: n_samples must be an integer >= 1 or null, got {self.n_samples}")

    def resolved(self) -> tuple[str, dict[str, Any]]:
        """(attack name, parameters) with a preset expanded."""
        if self.attack not in ATTACKS and self.attack in PRESETS:
            preset = PRESETS.get(self.attack)
            return preset.attack, {**preset.params, **self.params}
        return self.attack, dict(self.params)

    @property
    def name(self) -> str:
        return self.label or self.attack

    def build(self, eps: float | None):
        attack, params = self.resolved()
        return create_attack(attack, eps=eps, **params)

    def validate(self, where: str) -> None:
        """Build the attack at every budget (names, parameters, the constructors' own checks) and refuse
        L-inf budgets above 1, so a bad plan fails before any data or model is loaded. Errors are
        ConfigErrors that start with ``where`` and name the attack and the budget."""
        attack_name, params = self.resolved()
        if attack_name in ATTACKS:  # an unknown name is reported by build, with the valid names
            check_numeric_parameters(ATTACKS.get(attack_name), params, f"{where} ({self.name})")
        for eps in self.eps:
            context = f"{where} ({self.name}, eps={eps})"
            try:
                with warnings.catch_warnings():  # budget warnings are reported when the attack runs
                    warnings.simplefilter("ignore")
                    attack = self.build(eps)
            except RobustlossError as err:  # a bad parameter or an unknown name, already explained
                raise ConfigError(f"{context}: {err}") from None
            except (TypeError, ValueError) as err:  # a constructor's own check: n_iter=-1, steps=[1]
                if eps is None:  # most likely the cause: only minimum-norm attacks run without a budget
                    raise ConfigError(f"{context}: {self.name} needs a numeric budget (null or inf means "
                                      "unbounded, which only minimum-norm attacks such as cw and deepfool "
                                      "support)") from None
                raise ConfigError(f"{context}: {err}") from None
            if attack.norm == "linf":
                check_linf_budget(eps, context)


@dataclass
class DefenseSpec:
    """An inference-time defence wrapped around the trained model before it is attacked
    (e.g. the randomization defence, the I-SCE tables' "Random" row)."""

    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            valid = defense_parameters(self.name)  # an unknown name lists the valid ones
        except KeyError as err:  # UnknownNameError, which lists the valid names
            raise ConfigError(f"evaluate.defense.name: {err.args[0]}") from None
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            raise ConfigError(f"evaluate.defense.params: unknown parameter(s) {', '.join(unknown)} for defense "
                              f"{self.name!r}; valid parameters: {', '.join(valid) or '(none)'}")


@dataclass
class EvaluateConfig:
    attacks: list[AttackSpec] = field(default_factory=list)
    n_test: int | None = None  # the first N test samples only
    batch_size: int = 500
    mode: Literal["protocol", "worst-case"] = "protocol"
    # Objective of every attack that does not choose one. "adaptive" (the default everywhere: Python,
    # the CLI, experiment files) is the one that fits the model's training loss: ce for softmax heads,
    # mmc for MMC's center head, the logit margin (cw) for models robustloss did not train. None leaves
    # each attack at its own default (ce, as in the papers' protocols).
    objective: str | None = "adaptive"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack or label -> params
    diagnostics: bool = True
    seed: int = 0
    # bf16: budgeted attacks step under bf16 autocast (verdicts stay fp32; C&W/DeepFool stay fp32)
    precision: Literal["fp32", "bf16"] = "fp32"
    defense: DefenseSpec | None = None  # wraps the trained model at evaluation (the training is shared)
    redraws: int = 10  # a stochastic model's final predictions are repeated this many more times (0 = off)

    def __post_init__(self) -> None:
        if self.n_test is not None and (isinstance(self.n_test, bool) or int(self.n_test) != self.n_test
                                        or self.n_test < 1):
            raise ConfigError(f"evaluate.n_test must be an integer >= 1 or null, got {self.n_test}")
        if self.batch_size < 1:
            raise ConfigError(f"evaluate.batch_size must be >= 1, got {self.batch_size}")
        if int(self.redraws) != self.redraws or self.redraws < 0:
            raise ConfigError(f"evaluate.redraws must be an integer >= 0 (0 = a single draw), got {self.redraws}")
        if self.mode not in MODES:
            raise ConfigError(f"evaluate.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"evaluate.precision must be fp32 or bf16, got {self.precision!r}")

    def plan(self) -> list[AttackSpec]:
        """The attacks with the default objective and the overrides applied."""
        plan = []
        for spec in self.attacks:
            params = dict(spec.params)
            name = spec.resolved()[0]
            if self.objective is not None and "objective" not in params and takes_objective(name):
                params["objective"] = self.objective
            for key in (name, spec.attack, spec.name):
                params |= self.overrides.get(key, {})
            plan.append(AttackSpec(spec.attack, list(spec.eps), params, spec.label, spec.targets, spec.n_samples))
        return plan


def takes_objective(attack: str) -> bool:
    """Whether the plan's default objective applies to the registered attack ``attack``: the attacks
    whose own default is CE (FGSM, BIM, PGD, MIM, APGD, SPSA, SimBA), for which "which loss to ascend"
    is the plan's choice. Attacks defined by their objective keep it: the margin of C&W, DeepFool and
    FAB, the fixed losses of APGD-CE/-DLR/-T and Square. An unknown name is left to validation."""
    if attack not in ATTACKS:
        return False
    return ATTACKS.defaults(attack).get("objective") == "ce"
