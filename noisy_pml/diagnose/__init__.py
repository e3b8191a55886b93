"""diagnose: find the samples of a labelled dataset most likely to be mislabelled."""

from .contact_sheet import contact_sheet
from .label_issues import (
    LabelIssue,
    dataset_features,
    find_label_issues,
    rank_label_issues,
    write_csv,
)

__all__ = [
    "LabelIssue",
    "contact_sheet",
    "dataset_features",
    "find_label_issues",
    "rank_label_issues",
    "write_csv",
]
