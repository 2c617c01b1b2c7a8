"""Evaluation: plans of attacks x budgets, per-sample records, worst case and diagnostics."""

from robustloss.evaluate.engine import evaluate
from robustloss.evaluate.plan import AttackSpec, pc_table1_plan
from robustloss.evaluate.records import AttackRecord, Evaluation
from robustloss.evaluate.worst_case import worst_case_curves, worst_case_robust

__all__ = ["evaluate", "AttackSpec", "pc_table1_plan", "AttackRecord", "Evaluation", "worst_case_curves",
           "worst_case_robust"]
