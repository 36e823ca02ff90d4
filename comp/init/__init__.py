"""`comp init`: write a validated workspace (comp.yaml, tables, a baseline experiment) from a competition's data.

Three forms read the data and return a Plan; `write_plan` checks it and writes it atomically:
  init_csv(train_csv, ws, ...)      a table of images: columns guessed, images located
  init_folders(train_dir, ws, ...)  train/<class>/<image>, a flat test folder
  init_mask(root, ws, ...)          the reference face-mask layout (18 composite classes)
"""

from __future__ import annotations

from pathlib import Path

from comp.core.errors import CompError
from comp.init.csv import init_csv
from comp.init.folders import init_folders
from comp.init.mask import init_mask, parse_age_bands
from comp.init.plan import Correction, Guess, Plan, Skipped, Written, write_plan

FORMS = ("csv", "folders", "mask")

__all__ = ["FORMS", "Correction", "Guess", "Plan", "Skipped", "Written", "detect_form", "init_csv",
           "init_folders", "init_mask", "parse_age_bands", "write_plan"]


def detect_form(source: Path) -> str:
    """csv for a .csv file, mask for a folder holding train/images and eval/, folders for class folders."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return "csv"
        raise CompError(f"{source} is a file but not a .csv; pass a train CSV, a folder of class folders, or --from")
    if not source.is_dir():
        raise CompError(f"{source} does not exist; pass the train CSV or the data folder")
    if (source / "train" / "images").is_dir() and (source / "eval").is_dir():
        return "mask"
    if any(d.is_dir() and not d.name.startswith(".") for d in source.iterdir()):
        return "folders"
    raise CompError(f"cannot tell the layout of {source} (no class folders, no train/images + eval/); pass --from")
