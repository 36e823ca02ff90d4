"""The Python API: `comp.Workspace("path")` mirrors the CLI and returns data (DataFrames, dicts, configs).

    import comp
    ws = comp.Workspace("demo")
    ws.folds(k=5)                                    # DataFrame: id, label, [group], fold
    scores = ws.fold_train("baseline", overrides={"train.epochs": 2})   # DataFrame, one row per fold
    ws.predict("baseline", tta="hflip", oof=True)    # DataFrame: test probabilities (fold mean)
    ws.ensemble(["baseline", "effnet"], name="blend1")                  # dict: the submission manifest
    ws.leaderboard()                                 # DataFrame: experiments, best CV first

Progress shows as widgets in Jupyter, as bars on a terminal and as timed lines elsewhere; pass
progress=False for none. Errors a user can fix are comp.core.errors.CompError with a one-line message.

The package: this module is the facade (Workspace, demo); comp.api.workflows runs the stages as the CLI and this
facade share them (a stage plus its trackers, report sections and results); comp.api._child is the entry point of a
`comp fold-train --devices` child (python -m comp.api._child JOB_FILE).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from comp.core.config import Config, resolve_config
from comp.core._inline import rounded
from comp.core.progress import SILENT
from comp.core.layout import Layout as Paths

Overrides = Mapping[str, Any] | Sequence[str] | None


def as_overrides(overrides: Overrides) -> list[str]:
    """{'train.lr': 1e-3} or ['train.lr=1e-3'] -> ['train.lr=0.001'] (values written as YAML/JSON)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def scores_frame(scores: dict) -> pd.DataFrame:
    """scores.json as a DataFrame (fold, metric, best_epoch, val_loss, minutes); CV mean/std and OOF in .attrs."""
    metric = scores.get("metric", "score")
    rows = [{"fold": int(f), metric: float(s), "best_epoch": scores["best_epochs"][f],
             "val_loss": float(scores["val_losses"][f]), "minutes": float(scores["minutes"][f])}
            for f, s in (scores.get("folds") or {}).items()]
    frame = rounded(pd.DataFrame(rows, columns=["fold", metric, "best_epoch", "val_loss", "minutes"]))
    frame.attrs = {k: scores.get(k) for k in ("metric", "mean", "std", "oof", "complete", "missing_folds")}
    return frame


class Workspace:
    """A comp workspace (the folder holding comp.yaml), with one method per CLI verb.

    Examples:
        >>> import comp
        >>> ws = comp.Workspace("demo")              # a folder with comp.yaml (comp init or comp.demo writes one)
        >>> ws.config("baseline").metric
        'macro_f1'
    """

    def __init__(self, path: str | Path = ".", *, progress: bool = True) -> None:
        self.paths = Paths.at(path)
        self.root = self.paths.root
        self.show_progress = progress
        self.config("baseline")  # fails at once, in one line, outside a workspace

    def __repr__(self) -> str:
        return f"comp.Workspace({str(self.root)!r})"

    def _progress(self) -> Any:
        from comp.core.display import auto_progress

        return auto_progress() if self.show_progress else nullcontext(SILENT)

    def config(self, experiment: str = "baseline", overrides: Overrides = None) -> Config:
        """The resolved config (defaults < comp.yaml < experiments/<exp>.yaml < overrides)."""
        return resolve_config(self.root, experiment, as_overrides(overrides))[0]

    def config_sources(self, experiment: str = "baseline", overrides: Overrides = None) -> pd.DataFrame:
        """Every config key with its value and where it came from (as `comp config`)."""
        from comp.core.config import value_sources

        cfg, origins = resolve_config(self.root, experiment, as_overrides(overrides))
        return pd.DataFrame(value_sources(cfg, origins), columns=["key", "value", "source"])

    def folds(self, k: int | None = None, seed: int | None = None, *, force: bool = False) -> pd.DataFrame:
        """Make (or reuse) folds/k{K}-s{seed}.csv; the fold table.

        Examples:
            >>> folds = ws.folds(k=5)                    # id, label, [group], fold
            >>> folds.groupby("fold").size()             # rows per fold; a group never spans two folds
        """
        from comp.data.tables import load_tables
        from comp.data.folds import load_or_make_folds

        cfg = self.config()
        with self._progress() as progress:
            tables = load_tables(cfg, self.paths, progress=progress)
        made = load_or_make_folds(self.paths, tables, k=k or cfg.folds.k, seed=cfg.folds.seed if seed is None else seed,
                                  group_col=cfg.data.group_col, stratify=cfg.folds.stratify, force=force)
        return made.folds

    def fold_train(self, experiment: str = "baseline", overrides: Overrides = None, *, folds: Any = None,
                   force: bool = False, seed: int | None = None, track: Sequence[str] | None = None) -> pd.DataFrame:
        """Train the folds (as `comp fold-train`); per-fold scores, CV/OOF in .attrs.

        Examples:
            >>> scores = ws.fold_train("baseline", overrides={"train.epochs": 2})
            >>> scores.attrs["mean"], scores.attrs["oof"]          # CV and the out-of-fold score
            >>> ws.fold_train("baseline", folds="0", force=True)   # fold 0 again, from scratch
        """
        from comp.api.workflows import train_experiment, with_seed

        items = with_seed(as_overrides(overrides), seed)
        cfg, origins = resolve_config(self.root, experiment, items)
        with self._progress() as progress:
            scores = train_experiment(self.paths, experiment, cfg, origins, folds=folds, force=force,
                                      progress=progress, track=track)
        return scores_frame(scores)

    def scores(self, experiment: str = "baseline") -> pd.DataFrame:
        """The scores of a trained experiment (scores.json) as fold_train returns them."""
        from comp.core.layout import read_json

        return scores_frame(read_json(self.paths.scores_json(experiment)))

    def tune(self, experiment: str = "baseline", overrides: Overrides = None, *, trials: int | None = None,
             folds: Any = None, seed: int | None = None) -> Any:
        """An Optuna search (as `comp tune`); the result (best_params, best_value, table, tuned_yaml).

        Examples:
            >>> result = ws.tune("baseline", trials=20)
            >>> result.best_params                        # also written as experiments/baseline-tuned.yaml
        """
        from comp.api.workflows import with_seed
        from comp.tune import tune_experiment

        items = with_seed(as_overrides(overrides), seed, key="tune.seed")
        with self._progress() as progress:
            return tune_experiment(self.paths, self.config(experiment, items), exp=experiment, overrides=tuple(items),
                                   trials=trials, folds=folds, progress=progress)

    def predict(self, experiment: str = "baseline", *, tta: str | None = None, oof: bool = False,
                overrides: Overrides = None) -> pd.DataFrame:
        """Test probabilities with TTA, fold mean (as `comp predict`); the test.csv table.

        Examples:
            >>> ws.predict("baseline", tta="auto", oof=True)   # the TTA chosen on out-of-fold evidence
        """
        from comp.api.workflows import predict

        with self._progress() as progress:
            predict(self.paths, experiment, self.config(experiment, overrides), tta=tta, oof=oof, progress=progress)
        return pd.read_csv(self.paths.test_probs_csv(experiment), dtype={"id": str})

    def ensemble(self, experiments: Sequence[str], *, name: str | None = None, method: str = "mean",
                 weights: str = "auto", bias: bool = False, tta: str | None = None, oof_source: str = "auto",
                 seed: int = 0, stacker: str = "logreg") -> dict:
        """A blend written to submissions/<name>.csv (as `comp ensemble`); its manifest (weights, oof, nested, csv).

        method "stack" fits a second-level model (`stacker` logreg | hgb) on the members' OOF, nested score.

        Examples:
            >>> manifest = ws.ensemble(["baseline", "effnet"], name="blend1", method="auto")
            >>> manifest["nested"]                        # the honest estimate of the submitted blend
        """
        from comp.api.workflows import ensemble

        with self._progress() as progress:
            _, result = ensemble(self.paths, experiments, name=name, method=method, weights=weights, bias=bias,
                                 oof_source=oof_source, tta=tta, seed=seed, progress=progress, stacker=stacker)
        return result

    def leaderboard(self, sort: str = "cv", *, submissions: bool = False) -> pd.DataFrame:
        """Experiments (or submissions), best score first (as `comp leaderboard`).

        Examples:
            >>> ws.leaderboard()                          # experiments: CV, honest CV, OOF, folds
            >>> ws.leaderboard(submissions=True)          # members, nested estimate, LB score when recorded
        """
        from comp.blend.leaderboard import experiment_rows, sort_rows, submission_rows
        from comp.core.metrics import greater_is_better

        better = greater_is_better(self.config().metric)
        if submissions:
            return rounded(sort_rows(submission_rows(self.paths), "submissions", sort, greater_is_better=better))
        return rounded(sort_rows(experiment_rows(self.paths), "experiments", sort, greater_is_better=better))

    def report(self, experiment: str = "baseline") -> Path:
        """Path of the experiment's self-contained report.html; a notebook cell shows its figures inline (curves,
        confusion matrix, highest-loss images, lr-find, TTA)."""
        from comp.core._inline import ReportPath

        return ReportPath(self.paths.report_html(experiment))

    def eda(self, *, samples: int = 8, threshold: int = 6, seed: int = 0) -> Any:
        """The data report (as `comp eda`): eda/report.html; a notebook cell shows its figures inline.
        ["summary"]: the numbers (eda/summary.json), ["report"]: the page's path.

        Examples:
            >>> eda = ws.eda()                            # a notebook cell shows the figures
            >>> eda["report"]                             # eda/report.html
        """
        from comp.eda import run_eda
        from comp.core._inline import Figures, embedded_figures

        with self._progress() as progress:
            result = run_eda(self.config(), self.paths, samples=samples, threshold=threshold, seed=seed,
                             progress=progress)
        return Figures(f"eda: {result.report}", embedded_figures(result.report),
                       {"summary": result.summary, "report": result.report})

    def lr_find(self, experiment: str = "baseline", overrides: Overrides = None, *, fold: int = 0,
                apply: bool = False, **options: Any) -> Any:
        """The learning-rate range test (as `comp lr-find`; options steps, start, end, rule); apply=True writes the
        suggestion as train.lr into experiments/<exp>.yaml. A notebook cell shows the plot; ["suggestion"], ["rule"],
        ["suggestions"] (every rule's lr) hold the numbers.

        Examples:
            >>> ws.lr_find("baseline", apply=True)["suggestion"]   # also written as train.lr in baseline.yaml
        """
        from comp.core._inline import Figures, figure_files
        from comp.train.lrfind import apply_lr, find_lr, rules_note
        from comp.report.page import report_image

        with self._progress() as progress:
            result = find_lr(self.config(experiment, overrides), self.paths, experiment, fold=fold, progress=progress,
                             **options)
        if apply:
            apply_lr(self.paths, experiment, result.suggestion)
        note = f"suggested lr {result.suggestion:.1e}; {rules_note(result.suggestions, result.rule)}"
        return Figures(f"lr-find: {experiment}, fold {fold}", figure_files([report_image(self.paths, experiment,
                       "lr-find.png")[0]]), {"suggestion": result.suggestion, "rule": result.rule,
                       "suggestions": dict(result.suggestions), "applied": apply}, note)


def demo(directory: str | Path = "demo", *, force: bool = False, task: str = "multiclass", **options: Any) -> Workspace:
    """Write the demo workspace (digits photographed per subject; options as comp.init.demo.build_demo) and return it.

    task: multilabel, regression, multitask or binary builds the digits as that kind (comp.init.demo.build_task_demo).

    Examples:
        >>> ws = comp.demo("demo-api", force=True)
        >>> ws.fold_train("baseline", overrides={"train.epochs": 2})
    """
    from comp.init.demo import build_demo, build_task_demo

    if task == "multiclass":
        build_demo(Path(directory), force=force, **options)
    else:
        build_task_demo(Path(directory), task, force=force, **options)
    return Workspace(directory)
