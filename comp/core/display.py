"""Which progress display fits where comp runs: widgets in a watched notebook, Rich bars on a terminal, timed
plain lines elsewhere (pipes, files, notebooks run headless). The displays live in comp.core.output (lines),
comp.core._bars (Rich) and comp.core._widgets (ipywidgets); Rich and ipywidgets load only when used.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from comp.core.output import LineProgress, in_notebook, is_terminal
from comp.core.progress import Progress

WIDGETS_HINT = "progress shows as plain lines here: pip install 'comp[notebook]' (ipywidgets) for progress widgets"


def live_frontend() -> bool:
    """False where a notebook runs with nobody watching (Kaggle's "Save & Run All" / a batch commit, or
    COMP_PROGRESS=lines for papermill and nbconvert runs): widgets would be stored, dead, in the saved notebook."""
    return os.environ.get("KAGGLE_KERNEL_RUN_TYPE", "").lower() != "batch" and \
        os.environ.get("COMP_PROGRESS", "").lower() != "lines"


def quiet_tqdm() -> None:
    """tqdm.auto (imported by optuna and huggingface_hub) warns 'IProgress not found' in a notebook without
    ipywidgets; comp shows its own hint (WIDGETS_HINT) once instead."""
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")


def auto_progress() -> Progress:
    """Widgets in a watched Jupyter notebook, bars on a terminal, timed plain lines elsewhere."""
    if in_notebook():
        if not live_frontend():
            return LineProgress(stream=sys.stdout)
        if importlib.util.find_spec("ipywidgets") is None:
            quiet_tqdm()
            return LineProgress(stream=sys.stdout, hint=WIDGETS_HINT)
        from comp.core._widgets import WidgetProgress

        return WidgetProgress()
    if is_terminal():
        from comp.core._bars import BarProgress

        return BarProgress()
    return LineProgress()


def __getattr__(name: str) -> Any:
    """BarProgress and WidgetProgress, from the modules that hold them (Rich and ipywidgets load on use)."""
    if name == "BarProgress":
        from comp.core._bars import BarProgress

        return BarProgress
    if name == "WidgetProgress":
        from comp.core._widgets import WidgetProgress

        return WidgetProgress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
