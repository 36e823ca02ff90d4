import pandas as pd
import pytest
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.init.demo import build_demo
from comp.core.errors import CompError
from comp.core.layout import Layout

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    build_demo(root, max_per_class=12, photos=3)
    return root


def test_demo_shaped_like_the_reference_task(demo_ws):
    cfg = load_config(demo_ws)
    t = load_tables(cfg, Layout.at(demo_ws))
    assert cfg.data.group_col == "subject" and cfg.metric == "macro_f1"
    assert t.classes == tuple(str(d) for d in range(10))  # digit names as written, numeric order
    per_subject = t.train.groupby("group").size()
    assert (per_subject == 3).all()  # several photos per subject
    counts = t.train["label"].value_counts()
    assert counts.max() / counts.min() >= 1.8  # imbalanced
    assert not set(t.train["group"]) & set(pd.read_csv(demo_ws / "data/test.csv")["path"].str[:5])  # split by subject


def test_demo_hidden_solution_outside_data(demo_ws):
    solution = pd.read_csv(demo_ws / "hidden" / "solution.csv")
    sample = pd.read_csv(demo_ws / "data" / "sample_submission.csv")
    assert list(sample.columns) == ["ImageID", "ans"] and list(solution["ImageID"]) == list(sample["ImageID"])
    assert not (demo_ws / "data" / "solution.csv").exists()


def test_demo_is_reproducible(tmp_path):
    a = build_demo(tmp_path / "a", max_per_class=8, photos=2, seed=3)
    b = build_demo(tmp_path / "b", max_per_class=8, photos=2, seed=3)
    assert (a.root / "data/train.csv").read_bytes() == (b.root / "data/train.csv").read_bytes()
    pngs = sorted(p.name for p in (a.root / "data/images").glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (b.root / "data/images").glob("*.png"))
    assert all((a.root / "data/images" / n).read_bytes() == (b.root / "data/images" / n).read_bytes() for n in pngs)
    other = build_demo(tmp_path / "c", max_per_class=8, photos=2, seed=4)
    assert (other.root / "data/train.csv").read_bytes() != (a.root / "data/train.csv").read_bytes()  # the seed matters


def test_demo_refuses_to_overwrite(demo_ws):
    with pytest.raises(CompError, match=r"comp\.yaml exists; pass --force"):
        build_demo(demo_ws)


def test_demo_cli_data_and_folds(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "d"), "--only-data"])
    assert result.exit_code == 0, result.output
    folds = pd.read_csv(tmp_path / "d" / "folds" / "k5-s42.csv")
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    """`comp demo` from nothing to a scored submission (one epoch per fold to stay quick)."""
    result = runner.invoke(app, ["demo", str(tmp_path / "d"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "d"
    for exp in ("baseline", "effnet"):
        assert (root / "experiments" / exp / "oof.csv").is_file()
        assert (root / "experiments" / exp / "test.csv").is_file()
        assert (root / "experiments" / exp / "report.html").is_file()
    assert (root / "experiments" / "baseline-tuned.yaml").is_file()
    assert (root / "eda" / "report.html").is_file()
    sub = pd.read_csv(root / "submissions" / "demo-blend.csv")
    sample = pd.read_csv(root / "data" / "sample_submission.csv")
    assert list(sub.columns) == ["ImageID", "ans"] and list(sub["ImageID"]) == list(sample["ImageID"])
    assert "blend on the hidden test set" in result.output


def test_comp_demo_stays_the_function_after_the_data_module_is_imported(tmp_path):
    import comp
    import comp.init.demo  # noqa: F401 - importing a submodule must not replace the API function

    assert callable(comp.demo)
    assert comp.demo.__module__ == "comp.api"
