"""The Kaggle side of a bundle: dataset-metadata.json for `kaggle datasets create -p DIR`, and a notebook that runs predict.py."""

from __future__ import annotations

import json
import re
from typing import Any

from comp.core.errors import CompError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{3,48}[a-z0-9]$")
OWNER_PLACEHOLDER = "INSERT_KAGGLE_USERNAME"


def dataset_slug(name: str) -> str:
    """A Kaggle dataset slug (5-50 characters: lowercase letters, digits, hyphens) from a bundle name."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{name}-bundle".lower()).strip("-")[:50].strip("-")
    return slug if SLUG.match(slug) else f"comp-{slug}"[:50].strip("-")


def dataset_metadata(name: str, dataset_id: str | None) -> dict[str, Any]:
    """dataset-metadata.json: title, id OWNER/SLUG (a placeholder owner without --dataset-id), licence."""
    if dataset_id is not None:
        owner, _, slug = dataset_id.partition("/")
        if not owner or not SLUG.match(slug):
            raise CompError(f"--dataset-id must be OWNER/SLUG with a slug of 5-50 lowercase letters, digits and hyphens, "
                            f"got {dataset_id!r}; e.g. --dataset-id alice/{dataset_slug(name)}")
    else:
        owner, slug = OWNER_PLACEHOLDER, dataset_slug(name)
    return {"title": f"{name} (comp bundle)"[:50], "id": f"{owner}/{slug}", "licenses": [{"name": "CC0-1.0"}]}


def notebook(*, bundle_dir: str, images: str, csv: str, device: str = "cuda") -> dict[str, Any]:
    """An nbformat-4 notebook that runs the bundle's predict.py on the competition's input paths."""
    config = (f"# Paths on Kaggle: edit them to the competition's input layout.\n"
              f"BUNDLE = {bundle_dir!r}  # this dataset, attached to the notebook\n"
              f"IMAGES = {images!r}  # the hidden test images\n"
              f"CSV = {csv!r}  # ids (and image paths) of the test images, in submission order\n"
              f"OUT = '/kaggle/working/submission.csv'\n"
              f"DEVICE = {device!r}  # 'cpu' when the notebook has no accelerator\n")
    run = ("import subprocess, sys\n"
           "cmd = [sys.executable, f'{BUNDLE}/predict.py', '--images', IMAGES, '--csv', CSV, '--out', OUT, '--device', DEVICE]\n"
           "print(' '.join(cmd))\n"
           "subprocess.run(cmd, check=True)\n")
    show = "import pandas as pd\npd.read_csv(OUT).head()\n"
    intro = ("# Offline inference with a comp bundle\n\nRuns `predict.py` from the attached dataset (written by "
             "`comp export`): the same preprocessing, TTA, folds and blend as the submission it reproduces. "
             "Needs no internet.")
    cells = [_cell("markdown", intro), _cell("code", config), _cell("code", run), _cell("code", show)]
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _cell(kind: str, text: str) -> dict[str, Any]:
    lines = text.splitlines(keepends=True)
    cell: dict[str, Any] = {"cell_type": kind, "id": f"cell-{abs(hash(text)) % 10**8:08d}", "metadata": {}, "source": lines}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook_text(**kwargs: Any) -> str:
    return json.dumps(notebook(**kwargs), indent=1) + "\n"
