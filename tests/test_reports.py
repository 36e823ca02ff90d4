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
from comp.core.layout import Layout, write_json

runner = CliRunner()


@pytest.fixture
def two_members(tiny_ws: Path) -> Path:
    """Members `good` (skilled OOF) and `noise` (random OOF), with fold checkpoints (test_ensemble_cli's)."""
    from test_ensemble_cli import fake_experiment

    fake_experiment(tiny_ws, "good", skill=4.0, seed=1)
    fake_experiment(tiny_ws, "noise", skill=0.0, seed=2, tta="none")
    return tiny_ws


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
    [table] = tables_of(section(Layout.at(ws).report_html(exp).read_text(), "config"))
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
    """fold_train returns fake_scores instead of training, and writes them and (given the config's origins, as every
    caller must hand them down) the report's config section, as the real one's aggregation does."""
    import comp.train.fold_train
    from comp.report.sections import config_section

    def fake(cfg, ws, exp, **kwargs):
        scores = fake_scores(cfg.folds.k)
        write_json(ws.scores_json(exp), scores)
        if kwargs.get("origins") is not None:
            config_section(ws, exp, cfg, kwargs["origins"])
        return scores

    monkeypatch.setattr(comp.train.fold_train, "fold_train", fake)


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

    from comp.api.workflows import run_demo_stages
    from comp.core.progress import SILENT

    class Stop(Exception):
        pass

    def show(kind, value):
        if kind == "scores":  # the first experiment has trained: its report is written
            raise Stop

    monkeypatch.setattr("comp.eda.run_eda", lambda *a, **k: None)
    with pytest.raises(Stop):
        run_demo_stages(Layout.at(tiny_ws), tiny_ws / "solution.csv", force=False, epochs=1, show=show,
                        progress=lambda: nullcontext(SILENT))
    shown = report_sources(tiny_ws, "baseline")
    assert shown == cli_sources(tiny_ws, "baseline", "train.epochs=1")
    assert list(shown.values()).count("default") < len(shown) - 5


# ---------------------------------------------------------------- the summary card (item 8)


def trained_report(ws_root: Path, scores: dict, exp: str = "baseline") -> Layout:
    """An experiment folder with config.yaml, scores.json and the config and fold-train sections (no training)."""
    from comp.core.config import resolve_config
    from comp.report.page import add_section
    from comp.report.sections import config_section
    from comp.train.fold_train import scores_html

    ws = Layout.at(ws_root)
    cfg, origins = resolve_config(ws.root, exp)
    ws.write_config(exp, cfg)
    write_json(ws.scores_json(exp), scores)
    add_section(ws, exp, "fold-train", "Fold training", scores_html(scores), order=20)
    config_section(ws, exp, cfg, origins)
    return ws


def test_report_opens_with_the_summary_card_and_ends_with_the_config_collapsed(tiny_ws):
    selection = {"kept": {"mean": 0.55, "oof": 0.54, "epochs": {0: 2, 1: 2}},
                 "best_on_fold": {"mean": 0.61, "oof": 0.6, "epochs": {0: 1, 1: 2}},
                 "nested": {"mean": 0.52, "oof": 0.51, "epochs": {0: 2, 1: 1}}}
    ws = trained_report(tiny_ws, fake_scores(checkpoint="best", honest=0.52, honest_oof=0.51, honest_source="nested",
                                             selection=selection))
    write_json(ws.predict_json("baseline"), {"tta": "none", "merge": "mean", "tta_auto": {
        "chosen": "none", "metric": "macro_f1", "scores": {"none": 0.55, "hflip": 0.5}, "nested": 0.53}})
    write_json(ws.submission_json("blend1"), {"members": ["other", "baseline"], "weights": [0.25, 0.75],
                                              "method": "mean", "oof": 0.58, "nested": 0.56})
    write_json(ws.submission_json("solo"), {"members": ["other"], "weights": [1.0], "method": "mean", "oof": 0.4,
                                            "nested": 0.4})
    write_json(ws.leaderboard_json, {"blend1": {"lb": 0.57}})
    from comp.report.page import render_report

    text = render_report(ws, "baseline").read_text()
    card = section(text, "summary")
    assert text.index("id='summary'") < text.index("id='fold-train'") < text.index("id='config'")
    assert "<table" not in text[:text.index("id='summary'")]  # nothing before the card
    for shown in ("0.5500 ± 0.0500", "0.5200", "0.6100 (optimistic)", "0.5400", "TTA chosen", "nested 0.5300",
                  "checkpoint: best", ">30s<"):  # CV, honest, best-on-fold, OOF, TTA, time (2 x 0.25 minutes)
        assert shown in card, shown
    assert "training time" in card and "minutes" not in card
    fold_table = tables_of(section(text, "fold-train"))[0]
    assert "time" in fold_table[0] and "minutes" not in fold_table[0]
    assert [row[fold_table[0].index("time")] for row in fold_table[1:]] == ["15s", "15s"]
    [subs] = tables_of(card)
    assert subs[1][:3] == ["blend1", "other, baseline", "0.750"] and subs[1][-1] == "0.5700" and len(subs) == 2
    config = section(text, "config")
    assert config.index("<details>") < config.index("<table") < config.index("</details>")
    assert "by comp.yaml" in config and "by experiments/baseline.yaml" in config
    assert "honest estimate 0.5200" in section(text, "fold-train")


def test_card_of_older_scores_falls_back_to_the_cv_mean_and_flags_missing_folds(tiny_ws):
    scores = fake_scores(complete=False, missing_folds=[1], folds={0: 0.5}, mean=0.5, std=0.0, k=2)
    ws = trained_report(tiny_ws, scores)
    card = section(ws.report_html("baseline").read_text(), "summary")
    assert "partial: 1 of 2 folds trained" in card and "honest estimate" in card
    assert "no epoch selection" in card and "optimistic" not in card
    assert "not predicted yet" in card and "no submission lists baseline" in card


def test_card_reads_config_yaml_through_comps_one_yaml_reader(tiny_ws, monkeypatch):
    """The card's config.yaml goes through comp.core.config.read_yaml (size and alias caps): nested anchors are refused
    there, not expanded, and the card still renders."""
    import comp.core.config
    from comp.report.card import summary_card

    ws = trained_report(tiny_ws, fake_scores())
    real, read = comp.core.config.read_yaml, []
    monkeypatch.setattr(comp.core.config, "read_yaml", lambda path: (read.append(path), real(path))[1])
    assert "of 2 planned" in summary_card(ws, "baseline") and read == [ws.config_yaml("baseline")]
    bomb = "\n".join([f"l0: &l0 [{', '.join(['1'] * 9)}]"] +
                     [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])
    ws.config_yaml("baseline").write_text(bomb + "\ntrain: {epochs: 7}\n")
    card = summary_card(ws, "baseline")
    assert "of ? planned" in card and "of 7 planned" not in card  # refused, not read (yaml.safe_load read 7)


def test_a_section_moved_to_another_place_is_not_shown_twice(tiny_ws):
    """Reports written before the config moved to the end hold 05-config.html: re-adding it replaces that file."""
    ws = trained_report(tiny_ws, fake_scores())
    from comp.report.page import add_section

    add_section(ws, "baseline", "config", "Resolved config", "<p>old place</p>", order=5)
    ws = trained_report(tiny_ws, fake_scores())
    text = ws.report_html("baseline").read_text()
    assert text.count("id='config'") == 1 and "old place" not in text
    assert [p.name for p in ws.report_dir("baseline").glob("*config.html")] == ["95-config.html"]


# ---------------------------------------------------------------- paths that travel (item 10)


def test_what_tune_writes_names_workspace_paths_relative_to_it(tiny_ws):
    """The journal (a failed trial's reason), the tuned YAML and the report's tune section: no absolute path."""
    from types import SimpleNamespace

    from comp.core.config import load_config
    from comp.tune import tune_experiment

    ws = Layout.at(tiny_ws)
    image = ws.root / "data" / "images" / "p000_0.png"

    def fit(job, *, progress, on_epoch):
        cfg, out_dir = job.cfg, job.out_dir
        if not any(p.name == "failed-once" for p in ws.root.iterdir()):
            (ws.root / "failed-once").write_text("")
            raise ValueError(f"could not decode {image}")
        on_epoch(0, {"score": 0.5, "val_loss": 1.0})
        return SimpleNamespace(score=0.5)

    cfg = load_config(tiny_ws, "baseline", ["tune.space={train.lr: {float: [1.0e-5, 1.0e-1], log: true}}",
                                            "tune.epochs=1", "folds.k=2"])
    result = tune_experiment(ws, cfg, exp="baseline", trials=2, folds="0", fit=fit)
    assert result.counts["complete"] == 1 and result.counts["failed"] == 1
    journal = ws.tune_journal("baseline").read_text()
    assert "could not decode data/images/p000_0.png" in journal
    for text in (journal, ws.tuned_yaml("baseline").read_text(), ws.report_html("baseline").read_text()):
        assert str(ws.root) not in text
    tune_section = section(ws.report_html("baseline").read_text(), "tune")
    assert "experiments/baseline/tune.journal" in tune_section and "experiments/baseline-tuned.yaml" in tune_section


# ---------------------------------------------------------------- leaderboard, submissions page, evaluate (12, 16)


def board_workspace(ws_root: Path) -> Layout:
    """Experiment a (5 folds... here 2, complete; an honest figure below its CV), b (1 of 2 folds), submission s1."""
    from comp.core.layout import write_yaml

    ws = Layout.at(ws_root)
    for exp in ("a", "b"):
        write_yaml(ws.config_yaml(exp), {"model": {"name": "m"}, "image": {"size": 32}, "train": {"epochs": 3},
                                         "folds": {"k": 2}})
    selection = {"best_on_fold": {"mean": 0.9, "oof": 0.9, "epochs": {0: 1, 1: 2}}}
    write_json(ws.scores_json("a"), fake_scores(mean=0.8, honest=0.7, honest_source="nested", selection=selection))
    write_json(ws.scores_json("b"), fake_scores(k=2, folds={0: 0.6}, mean=0.6, complete=False, missing_folds=[1]))
    write_json(ws.submission_json("s1"), {"members": ["a", "b"], "weights": [0.25, 0.75], "method": "mean",
                                          "oof": 0.8, "nested": 0.75, "time": "t"})
    write_json(ws.leaderboard_json, {"s1": {"lb": 0.7}})
    return ws


def test_leaderboard_rows_show_honest_partial_and_gaps(tiny_ws):
    from comp.blend.leaderboard import experiment_rows, submission_rows

    ws = board_workspace(tiny_ws)
    exps = experiment_rows(ws).set_index("experiment")
    assert exps.loc["a", "honest"] == 0.7 and exps.loc["a", "best_on_fold"] == 0.9
    assert exps.loc["a", "cv_minus_honest"] == pytest.approx(0.1) and not exps.loc["a", "partial"]
    assert exps.loc["b", "partial"] and exps.loc["b", "honest"] == 0.6  # older scores.json: the CV mean
    sub = submission_rows(ws).iloc[0]
    assert sub["weights"] == "0.250,0.750" and sub["members_cv"] == "0.7000,0.6000"
    assert sub["oof_minus_nested"] == pytest.approx(0.05) and sub["lb_minus_nested"] == pytest.approx(-0.05)


def test_leaderboard_cli_names_the_metric_and_writes_the_submissions_page(tiny_ws):
    ws = board_workspace(tiny_ws)
    result = invoke(tiny_ws, "leaderboard", "--html")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "macro_f1, higher is better" in out and "partial" in out
    page = (ws.submissions_dir / "index.html").read_text()
    [table] = tables_of(page)
    header = table[0]
    row = dict(zip(header, table[1]))
    assert row["submission"] == "s1" and row["weights"] == "0.250,0.750" and row["nested"] == "0.7500"
    assert row["lb"] == "0.7000" and row["lb-nested"] == "-0.0500" and row["oof-nested"] == "+0.0500"
    assert "src=\"data:image/png;base64," in page and 'alt="CV vs leaderboard"' in page
    assert "macro_f1, higher is better" in page and str(ws.root) not in page


def test_evaluate_shows_the_recorded_scores_and_records_on_request(tiny_ws):
    import hashlib
    import shutil

    ws = Layout.at(tiny_ws)
    ws.submissions_dir.mkdir(exist_ok=True)
    csv = shutil.copy(tiny_ws / "solution.csv", ws.submission_csv("s1"))
    write_json(ws.submission_json("s1"), {"members": ["a"], "oof": 0.8, "nested": 0.75,
                                          "sha256": hashlib.sha256(Path(csv).read_bytes()).hexdigest()})
    solution = str(tiny_ws / "solution.csv")
    shown = invoke(tiny_ws, "evaluate", str(csv), "--solution", solution)
    assert shown.exit_code == 0, shown.output
    out = " ".join(shown.output.split())
    assert "macro_f1 = 1.00000 (higher is better)" in out and "OOF 0.80000 (in-sample), nested 0.75000" in out
    assert "+0.25000" in out and "--record" in out and not ws.leaderboard_json.exists()
    recorded = invoke(tiny_ws, "evaluate", str(csv), "--solution", solution, "--record")
    assert recorded.exit_code == 0, recorded.output
    entry = json.loads(ws.leaderboard_json.read_text())["s1"]
    assert entry["lb"] == 1.0 and entry["source"] == "comp evaluate --solution solution.csv"
    loose = shutil.copy(tiny_ws / "solution.csv", tiny_ws / "mine.csv")
    refused = invoke(tiny_ws, "evaluate", str(loose), "--solution", solution, "--record")
    assert refused.exit_code == 2 and "--record needs a submission made by `comp ensemble`" in refused.output


def test_zero_weights_are_named(caplog):
    import logging

    from comp.blend.ensemble import warn_zero_weights

    with caplog.at_level(logging.WARNING, logger="comp.blend.ensemble"):
        assert warn_zero_weights(["a", "b", "c"], [0.6, 0.0, 0.4], name="blend1") == ["b"]
    assert "ensemble blend1: member 'b' got weight 0" in caplog.text and "'a'" not in caplog.text


@pytest.mark.slow  # predicts both members (~10 s on a shared machine)
def test_ensemble_warns_when_a_member_gets_weight_zero(two_members, caplog):
    """`noise` predicts nothing of the labels: the fitted blend gives it weight 0, and says so."""
    import logging

    with caplog.at_level(logging.WARNING, logger="comp.blend.ensemble"):
        result = invoke(two_members, "ensemble", "-e", "good", "-e", "noise", "--name", "blend")
    assert result.exit_code == 0, result.output
    weights = json.loads(Layout.at(two_members).submission_json("blend").read_text())["weights"]
    assert weights[1] == 0
    assert "member 'noise' got weight 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comp.blend.ensemble"):
        assert invoke(two_members, "ensemble", "-e", "good", "-e", "noise", "--weights", "1,0").exit_code == 0
    assert "weight 0" not in caplog.text  # weights the user gave are not warned about
