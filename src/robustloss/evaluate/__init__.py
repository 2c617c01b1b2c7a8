"""Evaluation: plans of attacks x budgets, per-sample records, worst case and diagnostics.

``run_evaluation(model, data, EvaluateConfig(...))`` is the one path (``robustloss.evaluate.run``);
``evaluate(model, data, plan, ...)`` is its Python shorthand and ``standard_evaluation(model, x, y)`` the
one-call AutoAttack-style ensemble.
"""

from robustloss.evaluate.config import AttackSpec, DefenseSpec, EvaluateConfig
from robustloss.evaluate.plan import pc_table1_plan
from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.evaluate.run import as_split, diagnostics_of, evaluate, run_evaluation
from robustloss.evaluate.standard import StandardReport, standard_evaluation, standard_plan
from robustloss.evaluate.worst_case import worst_case_curves, worst_case_robust

__all__ = ["evaluate", "run_evaluation", "standard_evaluation", "standard_plan", "StandardReport", "as_split",
           "diagnostics_of", "AttackSpec", "DefenseSpec", "EvaluateConfig", "pc_table1_plan", "AttackRecord",
           "Evaluation", "worst_case_curves", "worst_case_robust"]
