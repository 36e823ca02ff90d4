"""`comp export` for every task kind: the standalone bundle (no comp importable) writes the same bytes as comp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comp.cli import app
from task_data import build_task_workspace
from test_export import bare_python, run_bundle  # noqa: F401 - bare_python is a fixture

runner = CliRunner()


def cli(*args) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, f"comp {' '.join(map(str, args))}\n{r.output}"
    return r.output


@pytest.mark.parametrize("kind, tta", [("multilabel", "hflip"),
                                       pytest.param("multitask", "none", marks=pytest.mark.slow),
                                       pytest.param("binary", "none", marks=pytest.mark.slow),
                                       pytest.param("regression", "hflip", marks=pytest.mark.slow)])
def test_bundle_of_each_task_kind_writes_the_submission_comp_wrote(tmp_path: Path, bare_python: str, kind: str,
                                                                  tta: str, one_torch_thread) -> None:
    # the bundle runs on one thread (run_bundle); comp must too, or a conv summed in another order can move a
    # regression value across a 6th-decimal rounding boundary
    root = build_task_workspace(tmp_path / kind, kind, subjects=20, n_test=8)
    cli("fold-train", "-w", root, "--set", f"tta.transforms={tta}")
    cli("ensemble", "-e", "baseline", "--name", "sub", "-w", root, "--set", f"tta.transforms={tta}")
    manifest = json.loads((root / "submissions" / "sub.json").read_text())
    bundle = tmp_path / "bundle"
    cli("export", "sub", "--to", bundle, "-w", root)
    doc = json.loads((bundle / "bundle.json").read_text())
    assert doc["task"]["kind"] == kind
    assert doc["task"]["thresholds"] == manifest["thresholds"]  # the fitted decision thresholds travel with it
    out = tmp_path / "bundle-submission.csv"
    result = run_bundle(bare_python, bundle, tmp_path, "--images", str(root / "data" / "images"),
                        "--csv", str(root / "data" / "test.csv"), "--out", str(out),
                        "--sample", str(root / "data" / "sample_submission.csv"))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (root / "submissions" / "sub.csv").read_bytes()
