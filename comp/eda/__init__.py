"""Exploratory data analysis before training: `run_eda` writes eda/report.html, eda/summary.json and PNGs."""

from comp.eda.duplicates import find_duplicates, hamming_pairs
from comp.eda.features import compute_features, dhash, file_facts
from comp.eda.report import EdaResult, run_eda

__all__ = ["EdaResult", "compute_features", "dhash", "file_facts", "find_duplicates", "hamming_pairs", "run_eda"]
