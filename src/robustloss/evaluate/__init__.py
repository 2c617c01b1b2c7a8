"""Evaluation: plans of attacks x budgets, per-sample records, and tables built from them."""

from robustloss.evaluate.engine import evaluate
from robustloss.evaluate.plan import AttackSpec, pc_table1_plan
from robustloss.evaluate.records import AttackRecord, Evaluation

__all__ = ["evaluate", "AttackSpec", "pc_table1_plan", "AttackRecord", "Evaluation"]
