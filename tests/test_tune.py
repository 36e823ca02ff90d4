"""comp tune: space validation, the trial loop (counting, resume, failures, pruning, seeding), CLI end to end."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import LR_FINETUNE, Config, load_config
from comp.core.errors import CompError
from comp.tune import default_space, parse_space, tune_experiment
from comp.data.folds import parse_fold_selection
from comp.tune.objective import FoldReporter, trial_config
from comp.tune.space import apply_params
from comp.tune.study import INTERRUPTED, SURPLUS, TrialSeededSampler, counted, open_storage, run_trials
from comp.core.layout import Layout

optuna.logging.set_verbosity(optuna.logging.WARNING)
runner = CliRunner()


@pytest.fixture
def tiny_ws(tiny_ws: Path) -> Path:
    """The shared tiny workspace with 3 folds (it has 4 persons per class)."""
    exp = tiny_ws / "experiments" / "baseline.yaml"
    exp.write_text(yaml.safe_dump({**yaml.safe_load(exp.read_text()), "folds": {"k": 3}}, sort_keys=False))
    return tiny_ws


# ---------------------------------------------------------------- space


def test_space_entries_parse_in_order() -> None:
    params = parse_space({
        "train.lr": {"float": [1.0e-5, 1.0e-2], "log": True},
        "train.batch_size": {"int": [16, 64], "step": 16},
        "model.name": {"categorical": ["test_resnet", "test_efficientnet"]},
    })
    assert [p.key for p in params] == ["train.lr", "train.batch_size", "model.name"]
    assert (params[0].kind, params[0].low, params[0].high, params[0].log) == ("float", 1e-5, 1e-2, True)
    assert (params[1].kind, params[1].step) == ("int", 16)
    assert params[2].choices == ("test_resnet", "test_efficientnet")


@pytest.mark.parametrize("space, match", [
    ({"train.lrr": {"float": [1e-5, 1e-2]}}, r"tune.space\['train.lrr'\].*did you mean train.lr"),
    ({"train.lr": {"uniform": [1e-5, 1e-2]}}, r"tune.space\['train.lr'\]: needs exactly one kind.*uniform"),
    ({"train.lr": {"float": [1e-2, 1e-5]}}, r"tune.space\['train.lr'\]: low > high in float: \[0.01, 1e-05\]"),
    ({"train.batch_size": {"int": [64, 16]}}, r"'train.batch_size'\]: low > high"),
    ({"model.name": {"categorical": []}}, r"'model.name'\]: categorical needs a non-empty list"),
    ({"train.lr": {"float": [0.0, 1e-2], "log": True}}, r"log: true needs low > 0, got low=0.0"),
    ({"train.lr": {"float": [1e-5, 1e-2], "lgo": True}}, r"unknown option 'lgo' for float; did you mean log"),
    ({"train": {"float": [1, 2]}}, r"train is a section, not a value; use one of its keys: train.epochs"),
    ({"tune.trials": {"int": [1, 5]}}, r"tune.\* settings cannot be tuned"),
    ({"train.lr": [1e-5, 1e-2]}, r"must be a mapping like"),
    ({"train.epochs": {"int": [1.5, 3]}}, r"int needs \[low, high\] as two ints, got \[1.5, 3\]"),
    ({"image.size": {"categorical": [[224, 224], 256]}}, r"categorical choices must be numbers.*got \[224, 224\]"),
])
def test_invalid_spaces_name_the_entry(space: dict, match: str) -> None:
    with pytest.raises(CompError, match=match):
        parse_space(space)


def test_invalid_space_in_yaml_fails_before_any_trial(tiny_ws: Path) -> None:
    result = runner.invoke(app, ["tune", "-w", str(tiny_ws), "--trials", "1",
                                 "--set", "tune.space={train.lerning_rate: {float: [0.001, 0.01]}}"])
    assert result.exit_code == 2, result.output
    assert "train.lerning_rate is not a key" in result.output
    assert not (tiny_ws / "experiments" / "baseline" / "tune.journal").exists()


def test_default_space_is_valid_and_follows_the_config() -> None:
    space = default_space(Config())
    assert {"train.lr", "train.weight_decay", "train.label_smoothing", "augment.preset", "image.size"} <= set(space)
    assert space["image.size"]["categorical"] == [160, 224, 288]
    parse_space(space)
    custom = Config.model_validate({"augment": {"transforms": [{"HorizontalFlip": {"p": 0.5}}]}, "image": {"size": [64, 96]}})
    assert "augment.preset" not in default_space(custom) and "image.size" not in default_space(custom)


def test_trial_config_applies_overrides_without_mutating() -> None:
    cfg = Config()
    tuned = trial_config(cfg, {"train.lr": 0.123, "image.size": 64}, epochs=2)
    assert (tuned.train.lr, tuned.image.size, tuned.train.epochs) == (0.123, 64, 2)
    assert (cfg.train.lr, cfg.image.size, cfg.train.epochs) == (LR_FINETUNE, 224, 10)  # resnet18 pretrained
    with pytest.raises(CompError, match=r"train.batch_size must be 1 or more, got 0"):
        apply_params(cfg, {"train.batch_size": 0})


def test_a_trial_at_another_size_gets_that_sizes_cache_margin_unless_one_was_set() -> None:
    """image.cache_scale unset follows the trial's image.size (none under 128 px, 1.14 from there up), as a run at
    that size would; a number the experiment set stays."""
    assert apply_params(Config.model_validate({"image": {"size": 96}}), {"image.size": 160}).image.cache_scale == 1.14
    assert apply_params(Config(), {"image.size": 64}).image.cache_scale == 1.0
    chosen = Config.model_validate({"image": {"size": 96, "cache_scale": 1.3}})
    assert apply_params(chosen, {"image.size": 160}).image.cache_scale == 1.3


def test_parse_fold_selection() -> None:
    assert parse_fold_selection("all", 3) == (0, 1, 2)
    assert parse_fold_selection("0,2", 3) == (0, 2)
    assert parse_fold_selection((1,), 3) == (1,)
    with pytest.raises(CompError, match=r"fold 5 does not exist with k=3"):
        parse_fold_selection("5", 3)
    with pytest.raises(CompError, match=r"--folds takes 'all' or fold numbers.*'first'"):
        parse_fold_selection("first", 3)


def test_running_mean_over_folds_is_reported_at_increasing_steps() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    FoldReporter(trial, (), 0, 0, 3)(0, {"score": 0.2})
    FoldReporter(trial, (), 0, 0, 3)(2, {"score": 0.4})
    FoldReporter(trial, (0.4,), 1, 1, 3)(1, {"score": 0.8})
    assert study.trials[0].intermediate_values == {0: 0.2, 2: 0.4, 4: pytest.approx(0.6)}


# ---------------------------------------------------------------- the trial loop (stand-in objectives)


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -4, 4)
    return (x - 1) ** 2


def journal_study(path: Path, *, seed: int = 3, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return optuna.create_study(storage=open_storage(None, path), study_name="s", load_if_exists=True,
                               sampler=TrialSeededSampler(seed, n_startup_trials=2), pruner=pruner)


def numbers(study: optuna.Study) -> list[int]:
    return sorted(t.number for t in study.get_trials(deepcopy=False))


def test_trials_means_total_and_a_rerun_adds_only_the_missing(tmp_path: Path) -> None:
    path = tmp_path / "tune.journal"
    assert len(list(run_trials(journal_study(path), quadratic, n_trials=3))) == 3
    assert list(run_trials(journal_study(path), quadratic, n_trials=3)) == []
    assert len(list(run_trials(journal_study(path), quadratic, n_trials=5))) == 2
    assert numbers(journal_study(path)) == [0, 1, 2, 3, 4]


def test_interrupted_trial_is_failed_not_counted_and_rerun_resumes(tmp_path: Path) -> None:
    path = tmp_path / "tune.journal"

    def interrupt_second(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise KeyboardInterrupt
        return quadratic(trial)

    with pytest.raises(KeyboardInterrupt):
        list(run_trials(journal_study(path), interrupt_second, n_trials=4))
    study = journal_study(path)
    assert study.trials[1].state == TrialState.FAIL and study.trials[1].user_attrs["fail_reason"] == INTERRUPTED
    ran = list(run_trials(study, quadratic, n_trials=4))
    assert [o.number for o in ran] == [2, 3, 4]
    assert numbers(study) == [0, 1, 2, 3, 4]  # no duplicate numbers; 4 counted trials + the interrupted one


def test_trial_left_running_by_a_dead_process_is_failed(tmp_path: Path) -> None:
    path = tmp_path / "tune.journal"
    study = journal_study(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = study.ask()
    orphan.set_user_attr("host", os.uname().nodename)
    orphan.set_user_attr("pid", int(dead.stdout))
    assert len(list(run_trials(study, quadratic, n_trials=2))) == 2
    assert study.trials[0].state == TrialState.FAIL and numbers(study) == [0, 1, 2]


def test_failed_and_pruned_trials_are_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    study = journal_study(tmp_path / "tune.journal", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))

    def objective(trial: optuna.Trial) -> float:
        quadratic(trial)  # a sampled parameter, as a real objective has; its value plays no part
        if trial.number == 1:
            raise CompError("training loss is nan at epoch 1")
        # each trial better than the last (minimize), except trial 4: the median pruner stops it alone
        value = 1e9 if trial.number == 4 else 10.0 - trial.number
        trial.report(value, 0)
        if trial.should_prune():
            raise optuna.TrialPruned("terrible")
        return value

    ran = list(run_trials(study, objective, n_trials=6, catch=(CompError,)))
    states = [o.state for o in ran]
    assert states == ["complete", "failed", "complete", "complete", "pruned", "complete"]
    assert "training loss is nan" in study.trials[1].user_attrs["fail_reason"]
    assert study.trials[4].state == TrialState.PRUNED


def test_many_failures_in_a_row_stop_the_run(tmp_path: Path) -> None:
    def broken(trial: optuna.Trial) -> float:
        raise ValueError("bug")

    with pytest.raises(CompError, match=r"3 trials in a row failed; the last one with ValueError: bug"):
        list(run_trials(journal_study(tmp_path / "j"), broken, n_trials=10, catch=(ValueError,), max_failures_in_a_row=3))


def test_same_seed_and_storage_state_give_the_same_suggestions(tmp_path: Path) -> None:
    def params(path: Path, seed: int) -> list[float]:
        study = journal_study(path, seed=seed)
        list(run_trials(study, quadratic, n_trials=5))
        return [t.params["x"] for t in study.trials]

    a, b, c = params(tmp_path / "a", 3), params(tmp_path / "b", 3), params(tmp_path / "c", 4)
    assert a == b and a != c
    assert len(set(a)) == 5  # trial-number seeding: workers joining one study never repeat a draw


# ---------------------------------------------------------------- through tune_experiment and the CLI


def fake_fit(job, *, progress, on_epoch):
    cfg, out_dir = job.cfg, job.out_dir
    """A stand-in for fit_fold: score falls with distance from lr=1e-3; writes a file like a checkpoint."""
    out_dir.mkdir(parents=True)
    (out_dir / "best.pt").write_bytes(b"x")
    score = 1.0 / (1.0 + abs(np.log10(cfg.train.lr) + 3))
    for epoch in range(cfg.train.epochs):
        on_epoch(epoch, {"score": score * (epoch + 1) / cfg.train.epochs, "val_loss": 1.0})
    return SimpleNamespace(score=score)


def test_tune_experiment_with_stand_in_fit(tiny_ws: Path) -> None:
    ws = Layout.at(tiny_ws)
    cfg = load_config(tiny_ws, "baseline", ["tune.space={train.lr: {float: [1.0e-5, 1.0e-1], log: true}}",
                                            "tune.epochs=3"])
    result = tune_experiment(ws, cfg, exp="baseline", trials=4, folds="0,1", fit=fake_fit)
    assert result.counts["complete"] + result.counts["pruned"] == 4
    assert not (ws.exp_dir("baseline") / "tune").exists() or not any((ws.exp_dir("baseline") / "tune").iterdir())
    study = optuna.load_study(study_name="baseline", storage=open_storage(None, ws.tune_journal("baseline")))
    steps = study.trials[0].intermediate_values
    assert sorted(steps) == [0, 1, 2, 3, 4, 5]  # fold_pos * epochs + epoch over two folds
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)  # macro_f1: greater is better
    assert (result.best_number, result.best_value, result.best_params) == (best.number, best.value, best.params)
    assert best.value == pytest.approx(1.0 / (1.0 + abs(np.log10(best.params["train.lr"]) + 3)))  # fake_fit's score
    tuned = yaml.safe_load(ws.tuned_yaml("baseline").read_text())
    assert tuned["train"]["lr"] == best.params["train.lr"]
    assert tuned["train"]["epochs"] == 2  # tune.epochs applies during tuning only
    assert "Hyperparameter search" in ws.report_html("baseline").read_text()


def test_tune_experiment_draws_the_same_trials_for_the_same_seed(make_ws) -> None:
    """Reproducible as a property: same seed, same params and best (TPE included); another seed, other params."""
    space = "tune.space={train.lr: {float: [1.0e-5, 1.0e-1], log: true}, train.weight_decay: {float: [0.0, 0.1]}}"

    def run(name: str, seed: int):
        root = make_ws(name)
        cfg = load_config(root, "baseline", ["folds.k=2", space, f"tune.seed={seed}", "tune.n_startup_trials=2",
                                             "tune.pruner=none", "tune.epochs=1"])
        result = tune_experiment(Layout.at(root), cfg, exp="baseline", trials=4, fit=fake_fit)
        study = optuna.load_study(study_name="baseline", storage=open_storage(None, Layout.at(root).tune_journal("baseline")))
        return [t.params for t in study.trials], result

    (a, ra), (b, rb), (c, _) = run("a", 5), run("b", 5), run("c", 6)
    assert len(a) == 4 and a == b and ra.best_params == rb.best_params and ra.best_number == rb.best_number
    assert a != c
    assert len({p["train.lr"] for p in a}) == 4


@pytest.mark.parametrize("pruner", ["median", "hyperband", "none"])
def test_pruners_stop_a_terrible_trial_or_not(tiny_ws: Path, pruner: str) -> None:
    terrible = {3, 5}  # after the pruner's start-up trials; chosen by number, not by what the sampler draws

    def fit(job, *, progress, on_epoch):
        cfg, out_dir = job.cfg, job.out_dir
        score = 0.0 if int(out_dir.parent.name.removeprefix("trial")) in terrible else 0.9
        for epoch in range(cfg.train.epochs):
            on_epoch(epoch, {"score": score, "val_loss": 1.0})
        return SimpleNamespace(score=score)

    cfg = load_config(tiny_ws, "baseline", ["tune.space={train.lr: {categorical: [0.001, 0.002, 0.003, 0.1]}}",
                                            f"tune.pruner={pruner}", "tune.epochs=4", "tune.seed=0"])
    result = tune_experiment(Layout.at(tiny_ws), cfg, exp="baseline", trials=6, fit=fit)
    study = optuna.load_study(study_name="baseline", storage=open_storage(None, Layout.at(tiny_ws).tune_journal("baseline")))
    expected = TrialState.COMPLETE if pruner == "none" else TrialState.PRUNED
    states = {t.number: t.state for t in study.trials}
    assert {n for n, s in states.items() if s == expected} >= terrible, states
    assert all(states[n] == TrialState.COMPLETE for n in states if n not in terrible), states  # good ones finish
    assert result.counts["complete"] + result.counts["pruned"] == 6


def test_interrupted_tune_resumes_where_it_stopped(tiny_ws: Path) -> None:
    ws = Layout.at(tiny_ws)
    cfg = load_config(tiny_ws, "baseline", ["tune.space={train.lr: {float: [1.0e-4, 1.0e-2], log: true}}",
                                            "tune.pruner=none"])  # whether a drawn lr would be pruned is not the point

    def interrupted(job, *, progress, on_epoch):
        out_dir = job.out_dir
        out_dir.mkdir(parents=True)
        if len(list(out_dir.parents[1].glob("trial*"))) and "trial1" in str(out_dir):
            raise KeyboardInterrupt
        return fake_fit(dataclasses.replace(job, out_dir=out_dir / "x"), progress=progress, on_epoch=on_epoch)

    with pytest.raises(KeyboardInterrupt):
        tune_experiment(ws, cfg, exp="baseline", trials=3, fit=interrupted)
    assert not (ws.exp_dir("baseline") / "tune" / "trial1").exists()  # cleaned up on the way out
    result = tune_experiment(ws, cfg, exp="baseline", trials=3, fit=fake_fit)
    assert [o.number for o in result.ran] == [2, 3]
    assert result.counts == {"complete": 3, "pruned": 0, "failed": 1, "running": 0}


def test_three_trial_study_through_the_cli_and_the_tuned_yaml_trains(tiny_ws: Path) -> None:
    space = "tune.space={train.lr: {float: [1.0e-3, 1.0e-2], log: true}, train.weight_decay: {float: [0.0, 0.1]}}"
    args = ["tune", "-w", str(tiny_ws), "--trials", "3", "--set", space, "--set", "tune.epochs=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    print(result.output)
    assert "top trials" in result.output and "comp fold-train -e baseline-tuned" in result.output
    ws = Layout.at(tiny_ws)
    study = optuna.load_study(study_name="baseline", storage=open_storage(None, ws.tune_journal("baseline")))
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert not any((ws.exp_dir("baseline") / "tune").glob("trial*"))  # trial outputs deleted
    report = ws.report_html("baseline").read_text()
    assert "tune-history.png" in report and "tune-importances.png" in report
    tuned = load_config(tiny_ws, "baseline-tuned")
    assert tuned.train.lr == study.best_params["train.lr"] and tuned.train.epochs == 2
    from comp.data.tables import load_tables
    from comp.train.engine import FoldJob, fit_fold
    from comp.data.folds import ensure_folds

    tuned = load_config(tiny_ws, "baseline-tuned", ["train.epochs=1"])
    tables = load_tables(tuned, ws)
    fold_of = ensure_folds(ws, tables, tuned).fold_of(tables.train)
    fit = fit_fold(FoldJob(tuned, tables, fold_of, 0, ws.fold_dir("baseline-tuned", 0), ws=ws))
    assert np.isfinite(fit.score) and (ws.fold_dir("baseline-tuned", 0) / "best.pt").is_file()


def test_nan_trial_fails_with_its_reason_and_the_study_goes_on(tiny_ws: Path) -> None:
    space = "tune.space={train.lr: {categorical: [1.0e+30, 0.003]}}"
    storage = open_storage(None, Layout.at(tiny_ws).tune_journal("baseline"))
    queued = optuna.create_study(storage=storage, study_name="baseline", direction="maximize")
    for lr in (1e30, 0.003):  # the first two trials, whatever the sampler would draw
        queued.enqueue_trial({"train.lr": lr})
    result = runner.invoke(app, ["tune", "-w", str(tiny_ws), "--trials", "3", "--set", space,
                                 "--set", "tune.epochs=1"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="baseline", storage=storage)
    assert [t.params["train.lr"] for t in study.trials[:2]] == [1e30, 0.003] and len(study.trials) == 3
    for t in study.trials:  # the huge lr fails with its reason, the sane one completes; the study goes on
        if t.params["train.lr"] == 1e30:
            assert t.state == TrialState.FAIL and "NonFiniteLoss" in t.user_attrs["fail_reason"], t.number
        else:
            assert t.state == TrialState.COMPLETE, t.number


WORKER = """
import sys, optuna
from comp.tune.study import TrialSeededSampler, open_storage, run_trials
optuna.logging.set_verbosity(optuna.logging.WARNING)
url = sys.argv[1] if sys.argv[1].startswith("postgresql") else None
path = None if url else __import__("pathlib").Path(sys.argv[1])
study = optuna.create_study(storage=open_storage(url, path), study_name="s", load_if_exists=True,
                            sampler=TrialSeededSampler(3))
def objective(trial):
    __import__("time").sleep(0.4)
    return trial.suggest_float("x", -4, 4) ** 2
lock = None if url else path.with_name("ask-lock")
print(len(list(run_trials(study, objective, n_trials=12, lock_path=lock))))
"""


def run_workers(target: str, n: int = 2) -> list[int]:
    """Start n WORKER processes on one study at once; how many trials each ran."""
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, target], stdout=subprocess.PIPE, text=True)
               for _ in range(n)]
    ran = [int(w.communicate(timeout=180)[0] or -1) for w in workers]
    assert [w.returncode for w in workers] == [0] * n
    return ran


def test_two_worker_processes_stop_at_the_same_total(tmp_path: Path) -> None:
    path = tmp_path / "tune.journal"
    ran = run_workers(str(path))
    study = journal_study(path)
    assert sum(ran) == 12 and min(ran) >= 1, ran  # both worked, together they stopped at 12
    assert numbers(study) == list(range(12))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.params["x"] for t in study.trials}) == 12  # no repeated draws across workers


@pytest.mark.slow
def test_two_processes_share_one_journal(tiny_ws: Path) -> None:
    space = "tune.space={train.lr: {float: [1.0e-3, 1.0e-2], log: true}}"
    cmd = [sys.executable, "-m", "comp", "tune", "-w", str(tiny_ws), "--trials", "4", "--set", space,
           "--set", "tune.epochs=1", "--set", "tune.pruner=none"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="baseline",
                              storage=open_storage(None, Layout.at(tiny_ws).tune_journal("baseline")))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.params["train.lr"] for t in study.trials}) == 4


@pytest.mark.postgres
def test_workers_on_postgres_stop_at_the_same_total(postgres_url: str) -> None:
    ran = run_workers(postgres_url, n=3)
    study = optuna.load_study(study_name="s", storage=open_storage(postgres_url, Path("unused")))
    assert sum(ran) == 12 and min(ran) >= 1, ran
    assert sum(counted(t) for t in study.trials) == 12
    assert len({t.number for t in study.trials}) == len(study.trials)
    extra = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.user_attrs["fail_reason"] == SURPLUS for t in extra)  # only a lost race leaves one


@pytest.mark.postgres
def test_cli_tune_on_postgres_storage(tiny_ws: Path, postgres_url: str) -> None:
    args = ["tune", "-w", str(tiny_ws), "--trials", "1", "--storage", postgres_url, "--study", "pg",
            "--set", "tune.space={train.lr: {float: [1.0e-3, 1.0e-2], log: true}}", "--set", "tune.epochs=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="pg", storage=open_storage(postgres_url, Path("unused")))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert not Layout.at(tiny_ws).tune_journal("baseline").exists()
    assert load_config(tiny_ws, "baseline-tuned").train.lr == study.best_params["train.lr"]


def test_unreachable_storage_is_a_comp_error(tmp_path: Path) -> None:
    with pytest.raises(CompError, match=r"--storage postgresql://u:\*\*\*@127.0.0.1:1/x: cannot connect"):
        open_storage("postgresql://u:secret@127.0.0.1:1/x", tmp_path / "j")


def test_sigterm_ends_a_tune_run_like_ctrl_c() -> None:
    import signal

    from comp.cli.common import sigterm_as_interrupt

    previous = signal.getsignal(signal.SIGTERM)
    try:
        stop = sigterm_as_interrupt()
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        assert stop.is_set()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_error_while_stopping_counts_as_the_interruption(tmp_path: Path) -> None:
    import threading

    stop = threading.Event()

    def dies_with_its_workers(trial: optuna.Trial) -> float:
        stop.set()  # as the SIGTERM handler does, before the DataLoader notices its killed workers
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    study = journal_study(tmp_path / "j")
    with pytest.raises(KeyboardInterrupt):
        list(run_trials(study, dies_with_its_workers, n_trials=2, catch=(RuntimeError,), stop=stop))
    assert study.trials[0].user_attrs["fail_reason"] == INTERRUPTED and not counted(study.trials[0])


def test_out_of_memory_fails_one_trial_and_the_study_goes_on(tiny_ws: Path) -> None:
    import torch

    def fit(job, *, progress, on_epoch):
        cfg, out_dir = job.cfg, job.out_dir
        if out_dir.parent.name == "trial1":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return SimpleNamespace(score=0.5)

    cfg = load_config(tiny_ws, "baseline", ["tune.space={train.batch_size: {categorical: [8, 4096]}}"])
    result = tune_experiment(Layout.at(tiny_ws), cfg, exp="baseline", trials=4, fit=fit)
    assert [o.state for o in result.ran] == ["complete", "failed", "complete", "complete"]
    assert result.ran[1].reason.startswith("OutOfMemoryError: CUDA out of memory")
    assert result.counts == {"complete": 3, "pruned": 0, "failed": 1, "running": 0}


def test_timeout_zero_starts_no_trial(tmp_path: Path) -> None:
    assert list(run_trials(journal_study(tmp_path / "j"), quadratic, n_trials=3, timeout=0)) == []


def test_a_trial_failed_by_optuna_without_reason_does_not_count(tmp_path: Path) -> None:
    """Optuna's heartbeat check fails a dead worker's trial without comp's fail_reason: a later trial replaces it."""
    study = journal_study(tmp_path / "tune.journal")
    orphan = study.ask()
    study.tell(orphan.number, state=TrialState.FAIL)  # as optuna.storages.fail_stale_trials does
    assert not counted(study.trials[0])
    assert len(list(run_trials(study, quadratic, n_trials=2))) == 2


def test_folders_of_killed_trials_are_removed_on_the_next_run(tmp_path: Path) -> None:
    from comp.tune import clean_trial_dirs

    ws = Layout.at(tmp_path)
    study = journal_study(ws.tune_journal("baseline"))
    killed, running = study.ask(), study.ask()
    study.tell(killed.number, state=TrialState.FAIL)
    for number in (killed.number, running.number):
        (ws.trial_dir("baseline", number) / "fold0").mkdir(parents=True)
        (ws.trial_dir("baseline", number) / "fold0" / "last.pt").write_bytes(b"x")
    assert clean_trial_dirs(ws, "baseline", study) == [killed.number]
    assert not ws.trial_dir("baseline", killed.number).exists() and ws.trial_dir("baseline", running.number).exists()


@pytest.mark.postgres
def test_a_worker_that_dies_on_another_machine_is_failed_by_heartbeat(postgres_url: str, monkeypatch, caplog) -> None:
    import comp.tune.study as study_module

    monkeypatch.setattr(study_module, "GRACE_S", 2)
    monkeypatch.setattr(study_module, "HEARTBEAT_S", 1)
    storage = open_storage(postgres_url, Path("unused"))
    study = optuna.create_study(storage=storage, study_name="heartbeat", sampler=TrialSeededSampler(1))
    orphan = study.ask()  # a worker elsewhere: its pid means nothing here, only its heartbeat can tell
    orphan.set_user_attr("host", "another-machine")
    orphan.set_user_attr("pid", 1)
    storage.record_heartbeat(study_module.trial_id(storage, study, orphan.number))
    time.sleep(3)
    with caplog.at_level("WARNING", logger="comp.tune"):
        ran = list(run_trials(study, quadratic, n_trials=2, storage=storage))
    assert len(ran) == 2 and study.trials[0].state == TrialState.FAIL and not counted(study.trials[0])
    assert "sent no heartbeat" in caplog.text
    assert storage.get_heartbeat_interval() == 1
