"""Start-up stays light: help and the table-only verbs never import torch (timing lives in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "timm", "albumentations", "matplotlib", "optuna", "sklearn", "ttach")

SCRIPT = """
import json, sys
from comp.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("MODULES=" + json.dumps(sorted(m for m in sys.modules if "." not in m)))
"""


def imported(args: list[str], cwd: Path) -> set[str]:
    """Top-level modules loaded after running `comp ARGS` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("MODULES=")]
    assert line, f"comp {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return set(json.loads(line[-1].removeprefix("MODULES=")))


@pytest.mark.parametrize("args", [["--help"], ["fold-train", "--help"], ["tune", "--help"], ["predict", "--help"],
                                  ["eda", "--help"], ["ensemble", "--help"], ["demo", "--help"]])
def test_help_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    heavy = imported(args, tmp_path) & set(HEAVY + ("pandas",))
    assert not heavy, f"comp {' '.join(args)} imported {sorted(heavy)}"


def test_table_verbs_never_import_torch(tiny_ws: Path) -> None:
    runs = [["folds", "--k", "3"], ["leaderboard"],
            ["evaluate", "data/sample_submission.csv", "--solution", "solution.csv"]]
    for args in runs:
        mods = imported(args, tiny_ws)
        assert "torch" not in mods, f"comp {' '.join(args)} imported torch"
    assert (tiny_ws / "folds" / "k3-s42.csv").is_file()  # the verbs really ran
