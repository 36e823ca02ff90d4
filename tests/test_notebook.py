"""examples/quickstart.ipynb runs headless through the API (nbclient) and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow  # about 90 s: a demo workspace explored, lr-found and trained twice in a Jupyter kernel
@pytest.mark.timeout(600)
def test_quickstart_notebook_runs(tmp_path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("COMP_QUICKSTART_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("COMP_QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("COMP_QUICKSTART_K", "2")
    monkeypatch.setenv("COMP_QUICKSTART_SUBJECTS", "8")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.outputs) for c in code)
    text = "\n".join(_text(c) for c in code)
    assert "CV " in text and "OOF " in text and "nested" in text
    assert "baseline" in text and "effnet" in text  # the leaderboard
    # progress showed as widgets, each replaced by a plain line when it ended: a saved notebook holds no dead widget
    assert not [o for c in code for o in c.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert "IntProgress" not in text and "HBox(" not in text
    assert f"folds: {2}/{2} in " in text
    html = [str(o.get("data", {}).get("text/html", "")) for c in code for o in c.outputs]
    assert sum("<img" in h for h in html) >= 3  # ws.eda(), ws.lr_find() and ws.report() show their figures inline
    assert "--tta auto:" in text and "--apply writes the" in "".join(html)
    assert "TqdmWarning" not in text and not any(o.get("name") == "stderr" and "IProgress" in o.get("text", "")
                                                 for c in code for o in c.outputs)
    assert (tmp_path / "demo" / "submissions" / "quickstart-blend.csv").is_file()
    assert (tmp_path / "demo" / "experiments" / "baseline" / "report.html").is_file()


def test_api_eda_and_lr_find_show_their_figures_inline(tiny_ws, one_torch_thread) -> None:
    import comp

    ws = comp.Workspace(tiny_ws, progress=False)
    eda = ws.eda(samples=2)
    assert eda["summary"]["n_train"] == 36 and eda["report"].is_file()
    assert eda.figures and eda._repr_html_().count("<img") == len(eda.figures)
    found = ws.lr_find(overrides={"folds.k": 2}, steps=20)
    assert found["rule"] == "steepest" and found["suggestion"] > 0 and set(found["suggestions"]) == {"steepest", "min10"}
    html = found._repr_html_()
    assert "<img" in html and "--apply writes the steepest lr" in html
    report = ws.report()
    assert str(report).endswith("report.html") and report.read_text()  # still a path
    assert "loss vs learning rate" in report._repr_html_()  # the report's figures, inline


def test_api_tables_are_rounded() -> None:
    import pandas as pd

    from comp.api import scores_frame

    scores = {"metric": "macro_f1", "folds": {"0": 0.812345678}, "best_epochs": {"0": 2},
              "val_losses": {"0": 0.41234567}, "minutes": {"0": 0.0166666}, "mean": 0.812345678}
    frame = scores_frame(scores)
    assert frame["macro_f1"].tolist() == [0.8123] and frame["minutes"].tolist() == [0.0167]
    assert frame.attrs["mean"] == 0.812345678 and isinstance(frame, pd.DataFrame)  # the exact numbers stay in attrs


@pytest.mark.slow  # a few minutes: the README's snippet trains two models on 5 folds (on a smaller demo)
@pytest.mark.timeout(900)
def test_readme_python_snippet_runs_as_written(tmp_path, monkeypatch) -> None:
    import comp

    readme = (NOTEBOOK.parents[1] / "README.md").read_text()
    snippet = readme.split("**Python API**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    real = comp.demo
    monkeypatch.setattr(comp, "demo", lambda directory, **kw: real(tmp_path / directory, max_per_class=6, **kw))
    monkeypatch.setattr(comp.Workspace, "_progress", lambda self: __import__("contextlib").nullcontext(
        __import__("comp.core.progress", fromlist=["SILENT"]).SILENT))
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the README's own code
    assert (tmp_path / "demo-api" / "submissions" / "blend1.csv").is_file()
