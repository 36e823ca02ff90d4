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


@pytest.mark.slow  # about 50 s: a demo workspace trained twice in a Jupyter kernel
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
    widgets = [o for c in code for o in c.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets  # progress shows as widgets in Jupyter
    assert (tmp_path / "demo" / "submissions" / "quickstart-blend.csv").is_file()
    assert (tmp_path / "demo" / "experiments" / "baseline" / "report.html").is_file()
