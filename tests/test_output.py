"""Where output goes and how it reads: bars that fit, ETAs from the first batch, one time format, log lines with the
results, notebook progress that ends as text."""

from __future__ import annotations

import io
import re
import sys
import warnings

import pytest

from comp.core.display import auto_progress
from comp.core.output import LineProgress, clock


def terminal(width: int) -> "object":
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)


def batches(n: int, size: int = 8) -> list:
    import numpy as np

    return [(np.zeros((size, 3)), None)] * n


def rendered_rows(progress) -> list[str]:
    bars = progress.bars
    table = bars.make_tasks_table(bars.tasks)
    return ["".join(seg.text for seg in line).rstrip() for line in bars.console.render_lines(table, bars.console.options)]


def test_one_time_format() -> None:
    assert [clock(s) for s in (0.42, 9.96, 58.4, 62, 3599.6, 3675)] == ["0.4s", "10s", "58s", "1m02s", "1h00m", "1h01m"]
    assert clock(None) == clock(float("nan")) == clock(float("inf")) == "-"


@pytest.mark.parametrize("width", [80, 60])
def test_bars_drop_columns_instead_of_wrapping(width: int) -> None:
    from comp.core.display import BarProgress

    progress = BarProgress(terminal(width))
    with progress:
        for _ in progress.track(range(2), description="folds"):
            for _ in progress.track(range(3), description="fold 0"):
                for i, _ in enumerate(progress.track(batches(5), description="fold 0 epoch 1/3")):
                    progress.note(loss=0.412345, lr=0.000312, extra="a long field that does not fit")
                    if i == 2:
                        rows = rendered_rows(progress)
                break
            break
    assert len(rows) == 3 and all(len(r) <= width for r in rows)  # one line per bar, none wrapped
    assert "━" in rows[2] and "eta" in rows[0] and "2/5" in rows[2]  # the bar, the ETA and the count stay


def test_wide_terminal_keeps_every_column() -> None:
    from comp.core.display import BarProgress

    progress = BarProgress(terminal(200))
    with progress:
        for _ in progress.track(range(2), description="fold 0"):
            for i, _ in enumerate(progress.track(batches(4), description="fold 0 epoch 1/2")):
                progress.note(loss=0.5)
                if i == 1:
                    rows = rendered_rows(progress)
            break
    assert "loss=0.5" in rows[1] and "img/s" in rows[1]


def test_outer_bar_has_an_eta_before_its_first_item_ends() -> None:
    from comp.core.display import BarProgress

    progress = BarProgress(terminal(120))
    with progress:
        for _ in progress.track(range(5), description="folds"):
            for _ in progress.track(range(3), description="fold 0"):
                for i, _ in enumerate(progress.track(batches(4), description="fold 0 epoch 1/3")):
                    if i == 1:
                        folds = progress.bars.tasks[0]
                        assert folds.completed == 0 and folds.fields["eta"] != "-"
                        assert re.fullmatch(r"\d+\.\ds|\d+s|\d+m\d\ds|\d+h\d\dm", folds.fields["eta"])
                break
            break


def test_log_lines_go_to_the_log_console_and_stdout_is_not_captured() -> None:
    from comp.core.display import BarProgress

    screen, results = terminal(100), io.StringIO()
    from rich.console import Console

    progress = BarProgress(screen, log_console=Console(file=results, width=10_000, no_color=True))
    before = sys.stdout
    with progress:
        assert sys.stdout is before  # stdout is a file: it stays one (not redirected into the bars)
        for _ in progress.track(range(1), description="fold 0"):
            progress.log("fold 0 epoch 1/1: train loss 0.5")
    assert "fold 0 epoch 1/1: train loss 0.5" in results.getvalue()
    assert "train loss" not in screen.file.getvalue()


def test_piped_cli_puts_progress_and_results_on_stdout(monkeypatch) -> None:
    from comp.cli import common

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    progress = common.RichProgress()
    assert isinstance(progress, LineProgress) and progress._out() is out
    assert common.log_console() is common.console


def test_line_progress_stamps_each_line() -> None:
    out = io.StringIO()
    with LineProgress(stream=out, every=0, stamp=True) as progress:
        progress.log("fold 0 epoch 1/1: done")
        for _ in progress.track(range(2), description="fold 0"):
            pass
    lines = out.getvalue().splitlines()
    assert lines and all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)


def test_first_line_names_what_loads() -> None:
    from comp.cli import first_line

    assert first_line(["fold-train", "--k", "5"]) == "comp fold-train: loading torch, timm, albumentations ..."
    assert first_line(["--log-every", "10", "tune"]).startswith("comp tune: loading torch")
    assert first_line(["fold-train", "--help"]) is None and first_line(["--version"]) is None
    assert first_line(["leaderboard"]) is None and first_line([]) is None


def test_first_line_is_printed_before_torch_is_imported(tiny_ws, tmp_path) -> None:
    """`python -m comp fold-train` says what it loads before it imports torch. A stand-in torch package first on
    the path marks the moment torch is imported (and stops the run there, so the test costs no real import)."""
    import os
    import subprocess

    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import sys\nsys.stderr.write('TORCH IMPORTED\\n')\nsys.stderr.flush()\n"
                                      "raise SystemExit(3)\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-m", "comp", "fold-train", "--workspace", str(tiny_ws)], env=env,
                          capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    assert "TORCH IMPORTED" in done.stderr, done.stderr  # the verb does import torch: the order below means something
    err = done.stderr.splitlines()
    assert err[0] == "comp fold-train: loading torch, timm, albumentations ..." and err[1] == "TORCH IMPORTED", lines


def test_epoch_line_shows_the_last_steps_lr_speed_and_best() -> None:
    import torch

    from comp.train.engine import epoch_line, step_lr

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    stepped = step_lr(optimizer)
    assert step_lr(optimizer) is stepped  # one hook per optimizer
    for _ in range(3):
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        schedule.step()
    assert stepped.value == pytest.approx(1 / 3)  # the lr the last step used, not the next one (1/4)
    row = {"train_loss": 0.5, "val_loss": 0.4, "metric": 0.7, "lr": 1.0, "seconds": 62.0}
    line = epoch_line(0, 2, 5, row, "macro_f1", False, lr=stepped.value, best=(0.8, 1), images=6200)
    assert "best 0.8000 @ epoch 2" in line and "lr 0.333" in line and "100 img/s" in line and "1m02s" in line


def test_one_fold_reads_cv_of_k_folds() -> None:
    from comp.cli.train import cv_text

    one = {"metric": "macro_f1", "folds": {"0": 0.8}, "k": 5, "mean": 0.8, "std": 0.0}
    assert cv_text(one) == "CV macro_f1: 0.8000 (1 of 5 folds)" and "+-" not in cv_text(one)
    two = {**one, "folds": {"0": 0.8, "1": 0.6}, "mean": 0.7, "std": 0.1}
    assert cv_text(two) == "CV macro_f1: 0.7000 +- 0.1000"


class FakeHandle:
    def __init__(self, box) -> None:
        self.box, self.updates = box, []

    def update(self, obj, raw=False) -> None:
        self.updates.append(obj)


@pytest.fixture
def displays(monkeypatch) -> list[FakeHandle]:
    pytest.importorskip("ipywidgets")
    import IPython.display

    shown: list[FakeHandle] = []

    def display(obj, display_id=None):
        shown.append(FakeHandle(obj))
        return shown[-1]

    monkeypatch.setattr(IPython.display, "display", display)
    return shown


def test_widgets_end_as_text_with_full_labels(displays) -> None:
    from comp.core._widgets import WidgetProgress

    progress = WidgetProgress()
    label = "fold 0 epoch 10/10 (a description longer than twenty characters)"
    for _ in progress.track(range(2), description="folds"):
        for i, _ in enumerate(progress.track(batches(208), description=label)):
            if i == 206:
                break  # ends early: its bar still ends full
    outer, inner = displays[0], displays[1]
    title, bar, _ = inner.box.children
    assert title.value.startswith("fold 0 epoch 10/10 (a description longer")  # not cut to 20 characters
    assert bar.value == bar.max
    assert inner.updates == [{"text/plain": ""}]  # an inner bar leaves nothing behind
    assert re.fullmatch(r"folds: 2/2 in \d+\.\ds", outer.updates[0]["text/plain"])  # the outer one a plain line
    assert not any("IntProgress" in str(u) for h in displays for u in h.updates)


def test_notebook_without_widgets_or_front_end_prints_lines(monkeypatch) -> None:
    import importlib.util

    import comp.core.display as output

    monkeypatch.setattr(output, "in_notebook", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with auto_progress() as progress:
        assert isinstance(progress, LineProgress)
    assert "pip install 'comp[notebook]'" in out.getvalue()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        output.quiet_tqdm()
        warnings.warn("IProgress not found. Please update jupyter and ipywidgets.")
    assert not caught
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # "Save & Run All": nobody watches the widgets
    assert isinstance(auto_progress(), LineProgress)


class Logged:
    """A Progress that keeps the epoch lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def track(self, iterable, total=None, description=""):
        yield from iterable

    def note(self, **fields) -> None:
        pass

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.mark.usefixtures("one_torch_thread")
def test_epoch_line_best_is_the_best_so_far_under_checkpoint_last(tiny_ws, monkeypatch) -> None:
    """Under train.checkpoint=last the kept epoch is the latest; "best X @ epoch N" is still the best so far, also
    after resuming from last.pt."""
    import comp.train.engine as engine
    from comp.core.config import load_config
    from comp.data.checked import load_checked_tables
    from comp.data.folds import ensure_folds
    from comp.core.layout import Layout

    scores = [0.5, 0.9, 0.6, 0.7]  # up, then down: the best is epoch 2
    real = engine.validate

    def validate(*args, epoch, **kwargs):
        return [engine.Candidate(c.weights, c.module, c.probs, c.val_loss, scores[epoch])
                for c in real(*args, epoch=epoch, **kwargs)]

    monkeypatch.setattr(engine, "validate", validate)
    cfg = load_config(tiny_ws, "baseline", ["folds.k=2", "train.epochs=4", "train.checkpoint=last"])
    ws = Layout.at(tiny_ws)
    tables = load_checked_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)

    class Stop(Exception):
        pass

    def stop_after_third(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Stop

    first = Logged()
    with pytest.raises(Stop):
        engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "run", ws=ws), progress=first, on_epoch=stop_after_third)
    epoch_lines = [line for line in first.lines if "train loss" in line]
    assert "best 0.5000 @ epoch 1" in epoch_lines[0] and "best 0.9000 @ epoch 2" in epoch_lines[1]
    assert "best 0.9000 @ epoch 2" in epoch_lines[2]  # epoch 3 (0.6) is kept, but not the best
    resumed = Logged()
    engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "run", ws=ws), progress=resumed)  # epoch 4 from last.pt
    last_line = [line for line in resumed.lines if "train loss" in line][-1]
    assert last_line.startswith("fold 0 epoch 4/4") and "best 0.9000 @ epoch 2" in last_line
