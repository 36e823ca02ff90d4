"""What a competitor reads first: the experiment report's summary card, where each config value came from (on the
CLI, Python API and demo paths), the leaderboard and its submissions page, evaluate's recorded scores.

Training is replaced by a stub that returns scores (the report's config table and card are drawn from the config,
its origins and the artifacts, not from the weights), so each test takes well under a second.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comp.cli import app
from comp.workspace import Workspace, write_json

runner = CliRunner()


def invoke(ws: Path, *args: str):
    return runner.invoke(app, [*args, "--workspace", str(ws)])


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows (lists of cell texts), in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html_text: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(html_text)
    return parser.tables


def section(html_text: str, key: str) -> str:
    """The HTML of <section id='key'> (sections do not nest)."""
    match = re.search(rf"<section id='{re.escape(key)}'[^>]*>(.*?)</section>", html_text, re.S)
    assert match, f"no section {key!r} in the report"
    return match.group(1)


def report_sources(ws: Path, exp: str) -> dict[str, str]:
    """{key: source} of the config table in experiments/<exp>/report.html."""
    [table] = tables_of(section(Workspace.at(ws).report_html(exp).read_text(), "config"))
    header, *rows = table
    assert header == ["key", "value", "source"]
    return {key: source for key, _, source in rows}


def cli_sources(ws: Path, exp: str, *overrides: str) -> dict[str, str]:
    """{key: source} as `comp config -e EXP --json` prints them."""
    args = ["config", "--json", "-e", exp, *[a for o in overrides for a in ("--set", o)]]
    result = invoke(ws, *args)
    assert result.exit_code == 0, result.output
    return {key: row["source"] for key, row in json.loads(result.output).items()}


def fake_scores(k: int = 2, **extra) -> dict:
    """A scores.json as fold-train writes it (two folds, macro_f1)."""
    return {"metric": "macro_f1", "greater_is_better": True, "folds": {f: 0.5 + 0.1 * f for f in range(k)},
            "mean": 0.5 + 0.05 * (k - 1), "std": 0.05, "oof": 0.54, "k": k, "best_epochs": {f: 2 for f in range(k)},
            "val_losses": {f: 1.0 for f in range(k)}, "minutes": {f: 0.25 for f in range(k)}, "complete": True,
            "missing_folds": [], "oof_rows": 36, "train_rows": 36, "environment": {"python": "3.x"}, **extra}


@pytest.fixture
def no_training(monkeypatch):
    """fold_train returns fake_scores (and writes them, as the real one does) instead of training."""
    import comp.train

    def fake(cfg, ws, exp, **kwargs):
        scores = fake_scores(cfg.folds.k)
        write_json(ws.scores_json(exp), scores)
        return scores

    monkeypatch.setattr(comp.train, "fold_train", fake)
    monkeypatch.setattr("comp.prefetch.start", lambda *a, **k: None)


# ---------------------------------------------------------------- provenance (issue 28, item 9)


def test_report_config_sources_match_comp_config_on_the_cli_path(tiny_ws, no_training):
    result = invoke(tiny_ws, "fold-train", "--k", "2", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    shown = report_sources(tiny_ws, "baseline")
    assert shown == cli_sources(tiny_ws, "baseline", "folds.k=2", "train.epochs=1")
    assert shown["train.epochs"] == "--set" and shown["model.name"] == "experiments/baseline.yaml"
    assert shown["metric"] == "comp.yaml"


def test_report_config_sources_match_comp_config_on_the_api_path(tiny_ws, no_training):
    import comp

    comp.Workspace(tiny_ws, progress=False).fold_train("baseline", overrides={"train.epochs": 1})
    assert report_sources(tiny_ws, "baseline") == cli_sources(tiny_ws, "baseline", "train.epochs=1")


def test_report_config_sources_match_comp_config_on_the_demo_path(tiny_ws, no_training, monkeypatch):
    """The demo's stages trained without the config's origins: every row of its report said `default`."""
    from contextlib import nullcontext

    from comp.pipeline import run_demo_stages
    from comp.progress import SILENT

    class Stop(Exception):
        pass

    def show(kind, value):
        if kind == "scores":  # the first experiment has trained: its report is written
            raise Stop

    monkeypatch.setattr("comp.eda.run_eda", lambda *a, **k: None)
    with pytest.raises(Stop):
        run_demo_stages(Workspace.at(tiny_ws), tiny_ws / "solution.csv", force=False, epochs=1, show=show,
                        progress=lambda: nullcontext(SILENT))
    shown = report_sources(tiny_ws, "baseline")
    assert shown == cli_sources(tiny_ws, "baseline", "train.epochs=1")
    assert list(shown.values()).count("default") < len(shown) - 5
