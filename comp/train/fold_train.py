"""All folds of an experiment: fit each fold, then write oof.csv, scores.json and the report.

Reads comp.yaml's tables and folds/k{K}-s{seed}.csv (made when missing); writes under
experiments/<exp>/: config.yaml, fold{i}/{best.pt,last.pt,history.csv}, oof.csv, scores.json,
report.html.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol
from contextlib import AbstractContextManager as ContextManager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from comp.run import distributed
from comp.core.config import Config, read_yaml
from comp.data.checked import load_checked_tables
from comp.data.tables import Tables, targets_by_id
from comp.train.engine import FoldJob, FoldResult, finished_result, fit_fold
from comp.core.errors import CompError
from comp.train.lrfind import lr_chosen
from comp.core.locks import FoldLocked, fold_lock, live_holder, short_lock
from comp.train._foldlog import fold_log
from comp.data.folds import FoldsFile, ensure_folds, parse_fold_selection
from comp.core.metrics import confusion_rates, get_metric, per_class_scores
from comp.core.progress import SILENT, Progress
from comp.train.seeds import fold_runs, mean_result, seed_scores
from comp.core.replace import set_aside, settles_replaced, trained_any
from comp.report.sections import config_section, environment, environment_section, error_analysis_html
from comp.train.selection import keep_nested_epochs, selection_scores
from comp.report.page import add_section, img_html, plt, report_image, save_figure, table_html
from comp.core.layout import Layout, write_csv, write_json

log = logging.getLogger("comp.train.fold_train")

if TYPE_CHECKING:
    from comp.train.targets import RowTargets


class Recipes(Protocol):
    """What an experiment's recipes (pseudo labels, distillation: comp.recipes.inputs.experiment_recipes) hand
    fold-train: each fold's training table, fold of each row and per-row targets, and what scores.json records of
    them. fold-train never imports the recipes; whoever calls it (comp.api.workflows, the CLI) passes them in."""

    def fold_inputs(self, tables: Tables, fold_of: np.ndarray, fold: int, *,
                    progress: Progress) -> tuple[Tables, np.ndarray, "RowTargets | None"]: ...

    def record(self) -> dict: ...


def require_recipes(cfg: Config, recipes: Recipes | None) -> None:
    """An experiment with pseudo labels or a teacher trains only with its recipes handed in."""
    if recipes is None and cfg.uses_recipes:
        raise CompError("this experiment sets pseudo or train.distill, and fold_train was called without its recipes; "
                        "train it with `comp fold-train`, comp.Workspace.fold_train, or pass "
                        "recipes=comp.recipes.inputs.experiment_recipes(cfg, ws, exp)")

def check_experiment(cfg: Config, ws: Layout, exp: str, folds_file: dict) -> None:
    """Refuse to mix configs or folds in one experiment folder (its config.yaml records both).

    A record no epoch was trained under (a run that stopped in its pre-flight checks) refuses nothing.
    """
    path = ws.config_yaml(exp)
    if not path.is_file():
        return
    doc = read_yaml(path) or {}
    old = doc.get("folds_file") or {}
    other_config = doc.get("train_hash") != cfg.train_hash()
    other_folds = bool(old) and old.get("fingerprint") != folds_file["fingerprint"]
    if not (other_config or other_folds):
        return
    if not trained_any(ws.exp_dir(exp)):
        log.info("%s records a run that trained no epoch; starting %s with this config", path, exp)
        return
    fix = f"use a new experiment name (-e NAME with experiments/NAME.yaml) or --force to start {exp!r} over"
    if other_config:
        changes = changed_keys(doc, cfg)
        more = ("; a trained experiment cannot continue for more epochs (train.epochs is part of train_hash, so a "
                "new value starts over)") if any(c.startswith("train.epochs ") for c in changes) else ""
        what = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise CompError(f"experiment {exp!r} was trained with another config ({what + '; ' if what else ''}"
                        f"train_hash {doc.get('train_hash')}, now {cfg.train_hash()}){more}: {fix}")
    raise CompError(f"experiment {exp!r} was trained on {old.get('path')} made from other data "
                    f"(fingerprint {old.get('fingerprint')}, now {folds_file['fingerprint']}); {fix}")


def changed_keys(doc: dict, cfg: Config) -> list[str]:
    """'train.epochs 1 -> 2' for every trained-on key whose value differs between config.yaml's `doc` and `cfg`."""
    def leaves(node: object, prefix: str) -> dict[str, object]:
        if isinstance(node, dict) and node and not prefix.endswith(".space"):
            return {k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}.{key}").items()}
        return {prefix: node}

    now = cfg.model_dump(mode="json")
    sections = ("task", "data", "metric", "folds", "model", "image", "augment", "train")
    was_all = {k: v for s in sections for k, v in leaves(doc.get(s), s).items()}
    now_all = {k: v for s in sections for k, v in leaves(now.get(s), s).items()}
    skip = {"train.device", "train.num_workers", "train.checkpoint_seconds", "data.allow_outside_root"}
    return [f"{k} {was_all.get(k)} -> {now_all.get(k)}" for k in sorted(set(was_all) | set(now_all))
            if k not in skip and was_all.get(k) != now_all.get(k)]


def preflight(cfg: Config) -> None:
    """What a run can fail on before it trains, checked before --force moves anything: the model name, the
    weights file (read once), the device."""
    from comp.run.device import resolve_device
    from comp.model.factory import check_name, check_pretrained

    check_name(cfg.model.name)
    log.info("weights: %s", check_pretrained(cfg.model))  # reachable, and a local file fits model.name's backbone
    resolve_device(cfg.train.device)


def replace_outputs(ws: Layout, exp: str) -> None:
    """--force: move the experiment's training outputs (fold folders, oof, scores, report) aside, keeping the
    tuning study; comp.core.replace deletes them once the new run trains an epoch, or puts them back."""
    for fold_dir in ws.fold_dirs(exp).values():
        holder = live_holder(fold_dir)
        if holder is not None:
            raise CompError(f"--force would replace {fold_dir} while {holder.describe()} trains it; "
                            "wait for it or stop it, then rerun")
    set_aside(ws.exp_dir(exp))


@settles_replaced  # --force's old outputs: deleted once an epoch is trained, else put back
def fold_train(cfg: Config, ws: Layout, exp: str, *, folds: str | Sequence[int] | None = None,
               force: bool = False, progress: Progress = SILENT, aggregate: bool = True,
               on_epoch: Callable[[int, int, dict], None] | None = None, fold_logs: bool = True,
               recipes: Recipes | None = None, origins: dict[str, str] | None = None) -> dict:
    """Train the selected folds (all by default) and write oof.csv, scores.json and the report; returns scores.

    Args:
        cfg: the experiment's resolved config.
        ws: the workspace; reads comp.yaml's tables and the folds file, writes experiments/<exp>/.
        exp: the experiment name (a plain name).
        folds: '0,2', 'all', fold numbers, or None (all). Each fold is locked while this process trains
            it: without a selection a fold held by another process is an error; with one, held folds
            are skipped (several machines share an experiment that way).
        force: start over: the previous outputs are moved aside once every pre-flight check passed, deleted when
            the first epoch is trained, put back when the run stops before that (refused while another process
            trains a fold).
        aggregate: False trains the folds and writes only their own folders (a `--devices` child); returns {}.
        on_epoch: on_epoch(fold, epoch, row) after each epoch (experiment trackers); row as fit_fold's on_epoch gets.
        fold_logs: also write each fold's fold{i}/train.log (never when aggregate is False: a `--devices` child's
            output already goes to that file).
        recipes: the experiment's pseudo labels / teacher (see Recipes); required when its config sets them.
        origins: where each config value came from (comp.core.config.resolve_config); with it the report also gets
            its config and environment sections (this is the report's one writer for fold-train).

    Under torchrun every rank trains; rank 0 alone locks, writes and aggregates.
    """
    require_recipes(cfg, recipes)
    asked = None if origins is None else (cfg, origins)  # the config as resolved (train.lr: auto stays auto there)
    selected = parse_fold_selection(folds, cfg.folds.k)
    cfg, tables, fold_of = prepare_run(cfg, ws, exp, force=force, progress=progress)
    skipped = []
    fresh: dict[Path, FoldResult] = {}  # what this process trained, by run folder: aggregated without reading back
    for fold in progress.track(selected, description="folds"):
        try:  # the fold's checkpoints are on disk when fit_fold returns or raises, before its lock is released
            with fold_lock_if_main(ws.fold_dir(exp, fold)), \
                    fold_log(ws.fold_files(exp, fold).log, progress,
                             enabled=fold_logs and aggregate and distributed.is_main()) as shown:
                fold_tables, fold_rows, targets = (tables, fold_of, None) if recipes is None else \
                    recipes.fold_inputs(tables, fold_of, fold, progress=shown)
                for run_cfg, out_dir, _ in fold_runs(cfg, ws, exp, fold):  # one run, or one per train.seeds entry
                    job = FoldJob(run_cfg, fold_tables, fold_rows, fold, out_dir, ws=ws, targets=targets)
                    fresh[out_dir] = fit_fold(job, progress=shown, on_epoch=None if on_epoch is None
                                              else functools.partial(on_epoch, fold))
        except FoldLocked as exc:
            if folds is None or distributed.active():
                raise
            log.warning("fold %d skipped: %s", fold, exc)
            skipped.append(fold)
    if skipped and len(skipped) == len(selected):
        raise CompError(f"every selected fold ({','.join(map(str, skipped))}) is being trained by another "
                        "process; nothing to do here")
    if not aggregate or not distributed.is_main():
        return {}
    return aggregate_folds(cfg, ws, exp, tables, fold_of, fresh=fresh, recipes=recipes, asked=asked)


def prepare_data(cfg: Config, ws: Layout, *, progress: Progress = SILENT) -> tuple[Tables, FoldsFile]:
    """Check the model, device and data, and make the folds file: (tables, folds), read once and shared by the
    learning-rate finder and the training. Under DDP rank 0 does this first (it writes the caches and the folds)."""
    with distributed.main_first():
        preflight(cfg)
        tables = load_checked_tables(cfg, ws, progress=progress)  # each image decoded once: check + cache
        return tables, ensure_folds(ws, tables, cfg)


def prepare_run(cfg: Config, ws: Layout, exp: str, *, force: bool,
                progress: Progress = SILENT) -> tuple[Config, Tables, np.ndarray]:
    """Everything before the first fold: the data read once (prepare_data), `train.lr: auto` chosen on it, old
    outputs set aside (--force) and config.yaml written; (cfg with its lr, tables, fold_of)."""
    data = prepare_data(cfg, ws, progress=progress)
    cfg, force = resolve_lr(cfg, ws, exp, force=force, progress=progress, data=data)
    tables, fold_of = prepare_experiment(cfg, ws, exp, force=force, progress=progress, data=data)
    return cfg, tables, fold_of


def resolve_lr(cfg: Config, ws: Layout, exp: str, *, force: bool, progress: Progress,
               data: tuple[Tables, FoldsFile]) -> tuple[Config, bool]:
    """`train.lr: auto` -> the chosen number (comp.train.lrfind.resolve_auto_lr) on the prepared data, after
    --force's replace; (cfg, force left to do)."""
    if cfg.train.lr != "auto":
        return cfg, force
    from comp.train.lrfind import resolve_auto_lr

    if force and distributed.is_main():
        replace_outputs(ws, exp)  # every check passed (prepare_data); before the finder: its record must be new
    tables, folds = data
    return resolve_auto_lr(cfg, ws, exp, progress=progress, data=(tables, folds.fold_of(tables.train))), False


def fold_lock_if_main(fold_dir: Path) -> ContextManager[None]:
    """The fold's lock in the process that writes (rank 0); DDP ranks are one job with it."""
    return fold_lock(fold_dir) if distributed.is_main() else nullcontext()


def prepare_experiment(cfg: Config, ws: Layout, exp: str, *, force: bool = False, progress: Progress = SILENT,
                       data: tuple[Tables, FoldsFile] | None = None) -> tuple[Tables, np.ndarray]:
    """The prepared data (prepare_data's, made here when not given), then: move old outputs aside (--force) or
    check the experiment's config, and write config.yaml; (tables, fold_of).

    Under DDP rank 0 does this first (it writes), then the other ranks (they read what it wrote).
    """
    tables, folds = data if data is not None else prepare_data(cfg, ws, progress=progress)
    with distributed.main_first():
        record = folds_file_record(ws, folds)
        if force and distributed.is_main():
            replace_outputs(ws, exp)  # only now that every check passed; comp.core.replace settles them
        check_experiment(cfg, ws, exp, record)
        log.info("folds from %s", folds.path)
        if distributed.is_main():
            ws.write_config(exp, cfg, folds_file=record, extra=lr_chosen(ws, exp, cfg))
    return tables, folds.fold_of(tables.train)


def folds_file_record(ws: Layout, folds: FoldsFile) -> dict:
    """What an experiment records of the folds file it trains on: its path (in the workspace) and fingerprint."""
    return {"path": str(folds.path.relative_to(ws.root)), "fingerprint": folds.record["fingerprint"],
            "k": folds.record["k"], "seed": folds.record["seed"], "group_col": folds.record["group_col"],
            "stratify": folds.record["stratify"]}


def finished_results(cfg: Config, ws: Layout, exp: str, tables: Tables | None = None) -> dict[int, FoldResult]:
    """The result of every fold of the experiment that finished with this config (with train.seeds: every fold with
    a finished seed, its seeds' probabilities averaged and scored on `tables`)."""
    return {f: r for f, r in seed_results(cfg, ws, exp, tables)[0].items()}


def seed_results(cfg: Config, ws: Layout, exp: str, tables: Tables | None = None,
                 fresh: dict[Path, FoldResult] | None = None
                 ) -> tuple[dict[int, FoldResult], dict[int, dict[int, FoldResult]]]:
    """({fold: result}, {seed: {fold: that seed's result}}); the second is empty without train.seeds.

    fresh: results this process just trained, by run folder (fit_fold's return), used instead of reading them back.
    """
    results, per_seed = {}, {}
    for fold in range(cfg.folds.k):
        runs = {}
        for run_cfg, out_dir, seed in fold_runs(cfg, ws, exp, fold):
            done = (fresh or {}).get(out_dir) or finished_result(out_dir, run_cfg, fold)
            if done is not None:
                runs[seed] = done
        if not runs:
            continue
        if None in runs:
            results[fold] = runs[None]
            continue
        for seed, res in runs.items():
            per_seed.setdefault(seed, {})[fold] = res
        if tables is None:
            raise CompError("seed-averaged fold results need the training table")
        metric = get_metric(cfg.metric, tables.task)
        results[fold] = mean_result(fold, runs, lambda ids, probs: metric(targets_by_id(tables, ids), probs))
    return results, per_seed


def aggregate_folds(cfg: Config, ws: Layout, exp: str, tables: Tables, fold_of: np.ndarray, *,
                    fresh: dict[Path, FoldResult] | None = None, recipes: Recipes | None = None,
                    asked: tuple[Config, dict[str, str]] | None = None) -> dict:
    """oof.csv, scores.json and the report from the finished folds' best.pt, under the experiment's lock.

    fresh: results of the runs this process just trained (see seed_results). recipes: as fold_train's. asked: the
    config as the user resolved it and where each value came from: the report's config and environment sections.
    """
    require_recipes(cfg, recipes)
    with short_lock(ws.exp_lock(exp), f"aggregating {exp}"):
        return _aggregate(cfg, ws, exp, tables, fold_of, fresh=fresh, recipes=recipes, asked=asked)


def _aggregate(cfg: Config, ws: Layout, exp: str, tables: Tables, fold_of: np.ndarray, *,
               fresh: dict[Path, FoldResult] | None, recipes: Recipes | None,
               asked: tuple[Config, dict[str, str]] | None) -> dict:
    results, per_seed = seed_results(cfg, ws, exp, tables, fresh)
    if cfg.train.checkpoint == "nested" and results:
        metric = get_metric(cfg.metric, tables.task)
        keep_nested_epochs(results, {f: [d for _, d, _ in fold_runs(cfg, ws, exp, f)] for f in results}, metric=metric,
                           score=lambda ids, probs: metric(targets_by_id(tables, ids), probs))
        results, per_seed = seed_results(cfg, ws, exp, tables)  # read back: the checkpoints that predict
    oof = oof_frame(tables, fold_of, results)
    scores = {**summarise(cfg, tables, oof, results), **lr_chosen(ws, exp, cfg)}
    scores.update(seed_scores(cfg, tables, per_seed, scores))
    if recipes is not None:
        scores.update(recipes.record())
    section = report_section(ws, exp, tables, oof, results, scores)
    write_csv(ws.oof_csv(exp), oof)
    write_json(ws.scores_json(exp), scores)
    add_section(ws, exp, "fold-train", "Fold training", section, order=20)
    if asked is not None:
        config_section(ws, exp, *asked)
        environment_section(ws, exp, scores.get("environment") or {})
    return scores


def oof_frame(tables: Tables, fold_of: np.ndarray, results: dict[int, FoldResult]) -> pd.DataFrame:
    """id, fold, label, p_<class>: one row per training image of the finished folds, in train.csv order."""
    train = tables.train
    probs = np.full((len(train), tables.n_classes), np.nan, dtype=np.float64)
    row_of = {i: r for r, i in enumerate(train["id"].astype(str))}
    for res in results.values():
        rows = [row_of[i] for i in res.val_ids]
        if np.any(fold_of[rows] != res.fold):
            raise CompError(f"fold {res.fold}'s checkpoint validated rows of another fold; the folds file changed: "
                            "rerun with --force")
        probs[rows] = res.val_probs
    have = ~np.isnan(probs).any(axis=1)
    frame = pd.DataFrame({"id": train["id"].astype(str), "fold": fold_of, "label": train["label"]})
    for c, cls in enumerate(tables.classes):
        frame[f"p_{cls}"] = probs[:, c]
    return frame[have].reset_index(drop=True)


def summarise(cfg: Config, tables: Tables, oof: pd.DataFrame, results: dict[int, FoldResult]) -> dict:
    """scores.json: the metric per fold, their mean and std, and the OOF score over the rows that exist."""
    metric = get_metric(cfg.metric, tables.task)
    fold_scores = {int(f): float(r.score) for f, r in sorted(results.items())}
    values = np.array(list(fold_scores.values()), dtype=np.float64)
    prob_cols = [f"p_{c}" for c in tables.classes]
    y = targets_by_id(tables, oof["id"])
    oof_score = metric(y, oof[prob_cols].to_numpy()) if len(oof) else None
    missing = [f for f in range(cfg.folds.k) if f not in results]
    return {
        "metric": metric.name,
        "greater_is_better": metric.greater_is_better,
        "folds": fold_scores,
        "mean": float(values.mean()) if len(values) else None,
        "std": float(values.std()) if len(values) else None,
        "oof": oof_score,
        "k": cfg.folds.k,
        "best_epochs": {int(f): int(r.best_epoch) + 1 for f, r in sorted(results.items())},  # from 1, as history.csv
        "val_losses": {int(f): float(r.val_loss) for f, r in sorted(results.items())},
        "minutes": {int(f): round(float(r.minutes), 3) for f, r in sorted(results.items())},
        "train_hash": cfg.train_hash(),
        "complete": not missing,
        "missing_folds": missing,
        "oof_rows": len(oof),
        "train_rows": len(tables.train),
        "environment": environment(),
        **selection_scores(results, mode=cfg.train.checkpoint, epochs_planned=cfg.train.epochs, metric=metric,
                           score=lambda ids, probs: metric(targets_by_id(tables, ids), probs),
                           kept_mean=float(values.mean()) if len(values) else None, kept_oof=oof_score),
    }


# ---------------------------------------------------------------- report


def report_section(ws: Layout, exp: str, tables: Tables, oof: pd.DataFrame,
                   results: dict[int, FoldResult], scores: dict) -> str:
    """The body of report.html's fold-train section (scores, learning curves, OOF diagnostics); its figures are
    written beside the report (experiments/<exp>/report/) now, the section by the caller."""
    parts = [scores_html(scores)]
    multiclass = tables.task.kind == "multiclass"
    if len(oof) and multiclass:  # the first thing to look at after CV: which images the models get most wrong
        parts.append(error_analysis_html(ws, exp, tables.train, oof, tables.classes))
    if results:
        path, src = report_image(ws, exp, "train-curves.png")
        save_figure(curves_figure(results, scores["metric"]), path)
        parts.append(img_html(src, "learning curves per fold"))
    if len(oof) and not multiclass:
        from comp.report.task_figures import task_figures

        for name, fig, alt in task_figures(tables.task, targets_by_id(tables, oof["id"]),
                                           oof[[f"p_{c}" for c in tables.classes]].to_numpy(), prefix="train"):
            path, src = report_image(ws, exp, name)
            save_figure(fig, path)
            parts.append(img_html(src, alt))
    elif len(oof):
        y = targets_by_id(tables, oof["id"]).astype(np.int64)
        pred = oof[[f"p_{c}" for c in tables.classes]].to_numpy().argmax(axis=1)
        names = [str(c) for c in tables.classes]
        for name, fig, alt in (("train-confusion.png", confusion_figure(y, pred, names), "OOF confusion matrix"),
                               ("train-per-class.png", per_class_figure(y, pred, names), "per-class precision/recall/F1")):
            path, src = report_image(ws, exp, name)
            save_figure(fig, path)
            parts.append(img_html(src, alt))
    return "\n".join(parts)


def scores_html(scores: dict) -> str:
    """CV +- std, OOF and the honest estimate (with the optimistic best-on-fold figure when it differs), then the
    per-fold table; scores.json from before epoch selection was recorded falls back to the CV mean."""
    import html

    from comp.core.output import clock  # comp's one time format (58s, 1m02s), as the terminal prints it
    from comp.report.card import HONEST_SOURCE, direction, fmt, honest_figures

    selection = scores.get("selection") or {}
    epoch_label = "epoch kept" if scores.get("checkpoint") else "best epoch"
    rows = []
    for f, s in scores["folds"].items():
        row = {"fold": f, epoch_label: scores["best_epochs"][f], scores["metric"]: s}
        for name, key in (("nested epoch", "nested"), ("best epoch on fold", "best_on_fold")):
            epochs = (selection.get(key) or {}).get("epochs") or {}
            if epochs:
                row[name] = epochs.get(f, epochs.get(str(f)))
        rows.append({**row, "val loss": scores["val_losses"][f], "time": clock(60 * float(scores["minutes"][f]))})
    note = "" if scores["complete"] else f"<p class='note'>folds not trained yet: {scores['missing_folds']}</p>"
    summary = ""
    if scores["mean"] is not None:
        fig = honest_figures(scores)
        better = direction(scores)
        summary = (f"<p>CV {scores['metric']}{f' ({better})' if better else ''}: {scores['mean']:.4f} &plusmn; "
                   f"{scores['std']:.4f}; OOF {fmt(scores['oof'])} over {scores['oof_rows']} of {scores['train_rows']} "
                   f"images</p><p>honest estimate {fmt(fig['honest'])} (OOF {fmt(fig['honest_oof'])}): "
                   + html.escape(HONEST_SOURCE.get(fig["source"], "the CV mean (no epoch selection recorded)"))
                   + (f"; best epoch on each fold's own rows {fmt(fig['best_on_fold'])} (optimistic: chosen on the "
                      "rows that score it)" if fig["best_on_fold"] is not None else "") + "</p>")
    return summary + note + table_html(pd.DataFrame(rows))


def curves_figure(results: dict[int, FoldResult], metric: str) -> plt.Figure:
    """Train/val loss, validation metric and learning rate per epoch, one colour per fold."""
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for fold, res in sorted(results.items()):
        h, colour = res.history, f"C{fold % 10}"
        epoch, mark = h["epoch"], "o" if len(h) < 2 else ""  # a single epoch is a point, drawn as a marker
        axes[0].plot(epoch, h["train_loss"], "--" + mark, color=colour, label=f"fold {fold} train")
        axes[0].plot(epoch, h["val_loss"], "-" + mark, color=colour, label=f"fold {fold} val")
        axes[1].plot(epoch, h["metric"], "-o", color=colour, ms=3, label=f"fold {fold}")
        if "ema_metric" in h:
            axes[1].plot(epoch, h["ema_metric"], ":", color=colour, label=f"fold {fold} EMA")
        if "swa_metric" in h:
            axes[1].plot(epoch, h["swa_metric"], "-.", color=colour, label=f"fold {fold} SWA")
        axes[1].axvline(res.best_epoch + 1, color=colour, lw=0.6, alpha=0.5)
        axes[2].plot(epoch, h["lr"], "-" + mark, color=colour, label=f"fold {fold}")
    for ax, title in zip(axes, ("loss", f"validation {metric}", "learning rate (epoch start)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    return fig


def confusion_figure(y: np.ndarray, pred: np.ndarray, names: list[str]) -> plt.Figure:
    """Row-normalised confusion matrix (each true class sums to 1)."""
    matrix = confusion_rates(y, pred, len(names))
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("OOF confusion matrix (normalised by true class)")
    if len(names) <= 20:
        for i, j in np.ndindex(matrix.shape):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def per_class_figure(y: np.ndarray, pred: np.ndarray, names: list[str]) -> plt.Figure:
    """Per-class precision, recall and F1 of the OOF predictions."""
    p, r, f, support = per_class_scores(y, pred, len(names))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) + 2), 4))
    for offset, values, label in ((-0.27, p, "precision"), (0.0, r, "recall"), (0.27, f, "F1")):
        ax.bar(x + offset, values, width=0.27, label=label)
    ax.set_xticks(x, [f"{n}\n(n={s})" for n, s in zip(names, support)], fontsize=7)
    ax.set_ylim(0, 1.18)
    ax.set_title("OOF per-class precision / recall / F1")
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    return fig
