"""Reports: tables that put our numbers beside the papers'."""

from robustloss.report.comparison import ComparisonRow, compare_with_paper, to_csv, to_markdown
from robustloss.report.write import describe_attacks, write_comparison

__all__ = ["ComparisonRow", "compare_with_paper", "describe_attacks", "to_csv", "to_markdown", "write_comparison"]
