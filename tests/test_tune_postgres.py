"""Two `comp tune` worker processes sharing one Optuna study in a fresh PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from comp.cli import app
from comp.tune.study import SURPLUS, counted, open_storage

runner = CliRunner()
SPACE = "tune.space={train.lr: {float: [1.0e-3, 1.0e-2], log: true}}"


def fresh_database(server_url: str) -> str:
    """CREATE DATABASE comp_<random> on the test server; its URL (each test gets an empty one)."""
    import psycopg2

    name = f"comp_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


def tune_args(root: Path, url: str, trials: int) -> list[str]:
    return ["tune", "-w", str(root), "--trials", str(trials), "--storage", url, "--study", "shared",
            "--set", "folds.k=2", "--set", SPACE, "--set", "tune.epochs=1", "--set", "tune.pruner=none"]


@pytest.mark.postgres
@pytest.mark.slow
def test_two_cli_workers_share_one_postgres_study(make_ws, postgres_url: str) -> None:
    url = fresh_database(postgres_url)  # both workers race to create optuna's tables in it
    roots = [make_ws("machine-a"), make_ws("machine-b")]  # as on two machines: one database, separate disks
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "comp", *tune_args(root, url, 4)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for root in roots]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=open_storage(url, Path("unused")))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) and numbers == sorted(numbers)  # no duplicate trial numbers
    assert sum(counted(t) for t in study.trials) == 4  # the requested total, not 4 per worker
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4
    assert all(t.user_attrs.get("fail_reason") == SURPLUS for t in study.trials if t.state != TrialState.COMPLETE)
    assert len({t.user_attrs["pid"] for t in study.trials if t.state == TrialState.COMPLETE}) == 2  # both worked
    assert len({t.params["train.lr"] for t in study.trials if t.state == TrialState.COMPLETE}) == 4

    again = runner.invoke(app, tune_args(roots[0], url, 4))  # a late worker finds the study complete
    assert again.exit_code == 0, again.output
    assert "this run: 0 trials" in again.output
    assert len(optuna.load_study(study_name="shared", storage=open_storage(url, Path("unused"))).trials) == len(numbers)
