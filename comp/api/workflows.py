"""The stages as the CLI and the Python API run them: a stage plus its trackers, report sections and results.

comp.cli prints what these return; comp.api (the Workspace facade) returns it to a notebook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comp.core.config import Config, load_config, resolve_config
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout

log = logging.getLogger("comp.api.workflows")


def with_seed(overrides: Sequence[str], seed: int | None, key: str = "train.seed") -> list[str]:
    """--seed N as one more --set override."""
    return list(overrides) + ([f"{key}={seed}"] if seed is not None else [])


def train_experiment(ws: Layout, exp: str, cfg: Config, origins: dict[str, str], *,
                     folds: Any = None, force: bool = False, progress: Progress = SILENT,
                     track: Sequence[str] | None = None, aggregate: bool = True, fold_logs: bool = True,
                     devices: Sequence[str] | None = None, overrides: Sequence[str] = ()) -> dict:
    """fold_train, or with `devices` its folds in child processes (comp.train.devices), with trackers; the scores.

    origins: where each config value came from (comp.core.config.resolve_config's second value); required, because the
    report's config table (written with the rest of the report by fold-train) is drawn from it and without it every
    row would read `default`. devices: e.g. ["0", "1"] or ["cpu", "cpu"]; overrides: the --set items the children
    load the config with. Folds whose child failed raise comp.train.devices.FoldsFailed once the others are
    aggregated (it carries their scores and the failed runs).
    """
    from comp.run import distributed
    from comp.train.track import open_trackers, parse_track
    from comp.recipes.inputs import experiment_recipes
    from comp.train.fold_train import fold_train

    names = cfg.track if track is None else parse_track(track)
    writes = aggregate and distributed.is_main()
    with open_trackers(names if writes else (), ws, exp, cfg) as trackers:
        on_epoch = trackers.on_epoch if trackers else None
        progress = trackers.watch(progress) if trackers else progress  # TensorBoard also gets each step
        recipes = experiment_recipes(cfg, ws, exp)
        failed = []
        if devices is None:
            scores = fold_train(cfg, ws, exp, folds=folds, force=force, progress=progress, aggregate=aggregate,
                                on_epoch=on_epoch, fold_logs=fold_logs, recipes=recipes, origins=origins)
        else:
            from comp.train.devices import FoldsFailed, fold_train_parallel

            result = fold_train_parallel(cfg, ws, exp, devices=list(devices), overrides=list(overrides), folds=folds,
                                         force=force, progress=progress, recipes=recipes, origins=origins)
            scores, failed = result.scores, result.failed
        if writes and scores:
            trackers.finish(ws, exp, scores)
    if failed:
        raise FoldsFailed(scores, failed)
    return scores


def resume_command(ws_arg: str, exp: str, overrides: Sequence[str], folds: str | None) -> str:
    """The `comp fold-train` command that resumes an interrupted run (never with --force)."""
    import shlex

    parts = ["comp", "fold-train", "-w", ws_arg, "-e", exp]
    if folds:
        parts += ["--folds", folds]
    for item in overrides:
        parts += ["--set", item]
    return shlex.join(parts)


def predict(ws: Layout, exp: str, cfg: Config, *, tta: str | None = None, oof: bool = False,
            progress: Progress = SILENT) -> dict:
    """predict_experiment, then the report's predict/TTA section.

    tta "auto": choose the TTA on OOF (comp.infer.tta_auto), then predict exactly as `--tta <chosen> --oof` does;
    predict.json also records the choice (`tta_auto`).
    """
    from comp.data.tables import load_tables
    from comp.core.metrics import get_metric
    from comp.infer.predict import predict_experiment
    from comp.report.sections import predict_section

    auto = None
    if tta == "auto":
        from comp.infer.tta_auto import choose_tta

        auto = choose_tta(cfg, ws, exp, progress=progress)
        progress.log(f"--tta auto: {auto.chosen} (OOF {auto.metric} {auto.scores[auto.chosen]:.4f}; nested "
                     f"{auto.nested['nested']:.4f}); predicting the test set and the OOF rows with it")
        tta, oof = auto.chosen, True
    summary = predict_experiment(cfg, ws, exp, tta=tta, oof=oof, progress=progress)
    if auto is not None:
        from comp.core.locks import short_lock
        from comp.core.layout import write_json

        summary = {**summary, "tta_auto": auto.record()}
        with short_lock(ws.exp_lock(exp), f"recording the TTA chosen for {exp}"):
            write_json(ws.predict_json(exp), summary)  # the same record, plus the choice; its files are unchanged
    tables = load_tables(cfg, ws, check_images=False)
    predict_section(ws, exp, summary, get_metric(cfg.metric, tables.task), tables.classes, tables)
    if auto is not None:
        from comp.infer.tta_auto import tta_auto_section

        tta_auto_section(ws, exp, auto, cfg.tta.merge)
    return summary


def ensemble(ws: Layout, experiments: Sequence[str], *, name: str | None = None, method: str = "mean",
             weights: str = "auto", bias: bool = False, oof_source: str = "auto", tta: str | None = None,
             seed: int = 0, overrides: Sequence[str] = (), progress: Progress = SILENT, stacker: str = "logreg",
             stack_log: bool = True) -> tuple[dict, dict]:
    """Predict stale members, fit the blend, write submissions/<name>.csv + .json; (how each member was used, result).

    method "stack": a second-level model (`stacker` logreg | hgb, on log-probabilities unless stack_log is
    False) fitted on the members' OOF with a nested score (comp.blend.stack); weights and bias do not apply.
    method "auto": the plain mean, fitted weights or a logreg stacker, whichever has the best nested score, the plain
    mean unless another beats it (comp.blend.auto); the manifest's "auto" records every candidate.
    """
    from comp.blend.ensemble import METHODS
    from comp.core.errors import CompError
    from comp.infer.predict import member_config, prepare_members
    from comp.report.sections import ensemble_section
    from comp.blend.submission import make_submission

    if method not in (*METHODS, "stack", "auto"):
        raise CompError(f"--method must be one of {', '.join(METHODS)}, stack, auto; got {method!r}")
    if tta == "auto":
        raise CompError("comp ensemble --tta auto is not supported: choose each member's TTA with "
                        "`comp predict -e NAME --tta auto` first; ensemble then uses the TTA recorded in its predict.json")
    if method == "auto" and (bias or weights != "auto"):
        raise CompError("--method auto chooses the weights (equal, fitted, or a stacker) itself: drop "
                        + (f"--weights {weights}" if weights != "auto" else "--bias"))
    if method == "stack" and (bias or weights != "auto"):
        raise CompError(f"--method stack fits a stacker, not weights: drop --weights {weights}" if weights != "auto"
                        else "--method stack fits a stacker, not per-class biases: drop --bias")
    experiments = list(experiments)
    name = name or "-".join([*experiments, method])
    ws.submission_csv(name)  # a plain name, checked before any work
    cfg = member_config(ws, experiments[0], overrides) if experiments else load_config(ws.root)
    used = prepare_members(ws, experiments, tta=tta, oof_source=oof_source, overrides=overrides, progress=progress)
    auto = None
    if method == "auto":
        from comp.blend.auto import auto_candidates, choose
        from comp.core.metrics import get_metric

        candidates = auto_candidates(cfg, ws, experiments, oof_source=oof_source, seed=seed)
        chosen = choose(candidates, get_metric(cfg.metric).greater_is_better)
        auto = {"candidates": candidates, "chosen": {k: chosen.get(k) for k in ("method", "weights", "stacker")},
                "rule": "the best nested score; the plain mean unless another candidate beats it"}
        method, weights, stacker = chosen["method"], chosen["weights"] or "auto", chosen.get("stacker") or stacker
    if method == "stack":
        from comp.blend.stack import make_stack_submission, stack_section

        result = make_stack_submission(cfg, ws, experiments, name=name, stacker=stacker, log_probs=stack_log,
                                       oof_source=oof_source, seed=seed, extra={"auto": auto} if auto else None)
        stack_section(ws, result)
        return used, result
    result = make_submission(cfg, ws, experiments, name=name, method=method, weights=weights, bias=bias,
                             oof_source=oof_source, seed=seed, extra={"auto": auto} if auto else None)
    ensemble_section(ws, result)
    return used, result


# ---------------------------------------------------------------- the demo


DEMO_MEMBERS = ("baseline", "effnet")


def demo_members(kind: str) -> tuple[str, ...]:
    """The demo's two experiments: a ResNet and an EfficientNet; for regression a second ResNet (the tiny
    EfficientNet's validation error grew while it trained on a regression target of the digits)."""
    return ("baseline", "resnet-b") if kind == "regression" else DEMO_MEMBERS


@dataclass
class DemoResult:
    cv: dict[str, dict]
    tuned: Any
    blend: dict
    hidden: float
    estimates: Any  # DataFrame: what, metric


def run_demo_stages(ws: Layout, solution: Path, *, force: bool, epochs: int | None,
                    progress: Callable[[], Any] = lambda: SILENT,
                    step: Callable[[str], None] = lambda title: None,
                    show: Callable[[str, Any], None] = lambda kind, value: None) -> DemoResult:
    """Every stage after folds on the demo's two experiments; step(title) before each, show(kind, result) after."""
    import pandas as pd

    from comp.data.tables import load_tables
    from comp.eda import run_eda
    from comp.core.metrics import get_metric
    from comp.blend.submission import score_submission
    from comp.tune import tune_experiment

    overrides = [f"train.epochs={epochs}"] if epochs else []
    kind = load_config(ws.root).task
    members = demo_members(kind)
    step("3. eda: the data report")
    with progress() as shown:
        show("eda", run_eda(load_config(ws.root), ws, progress=shown))
    cv = {}
    for i, exp in enumerate(members):
        step(f"{4 + i}. fold-train -e {exp}")
        with progress() as shown:
            cfg, origins = resolve_config(ws.root, exp, overrides)  # origins: the report's config table says where from
            cv[exp] = train_experiment(ws, exp, cfg, origins, force=force, progress=shown)
        show("scores", cv[exp])
    step("6. tune -e baseline (a short study: lr and label smoothing, one fold, two epochs a trial)" if kind == "multiclass"
         else "6. tune -e baseline (a short study: lr and weight decay, one fold, two epochs a trial)")
    cfg = load_config(ws.root, "baseline")
    with progress() as shown:
        tuned = tune_experiment(ws, cfg, exp="baseline", progress=shown)
    show("tuned", tuned)
    step("7. predict with the TTA chosen on out-of-fold predictions (--tta auto), every fold of each experiment")
    for exp in members:
        with progress() as shown:
            show("predicted", (exp, predict(ws, exp, load_config(ws.root, exp, overrides), tta="auto", oof=True,
                                            progress=shown)))
    step("8. ensemble: weights fitted on TTA out-of-fold predictions")
    _, blend = ensemble(ws, list(members), name="demo-blend", weights="auto", oof_source="tta")
    show("blend", blend)
    step("9. the hidden test set (what the leaderboard would say)")
    cfg = load_config(ws.root)
    tables = load_tables(cfg, ws, check_images=False)
    hidden = score_submission(Path(blend["csv"]), solution, cfg.submission, classes=tables.classes,
                              metric=get_metric(cfg.metric, tables.task), task=tables.task)
    rows = [{"what": f"{exp} CV (mean of folds)", cfg.metric: cv[exp]["mean"]} for exp in members]
    rows += [{"what": "blend OOF (in-sample weights)", cfg.metric: blend["oof"]},
             {"what": "blend nested estimate", cfg.metric: blend["nested"]},
             {"what": "blend on the hidden test set", cfg.metric: hidden}]
    return DemoResult(cv=cv, tuned=tuned, blend=blend, hidden=hidden, estimates=pd.DataFrame(rows))
