"""Published numbers from the papers, kept as data so reports can put ours beside theirs."""

from robustloss.reference.published import PAPER_DATASET, PublishedTable, load_published

__all__ = ["PAPER_DATASET", "PublishedTable", "load_published"]
