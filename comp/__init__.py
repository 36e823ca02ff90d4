"""comp: Kaggle-style image classification from folds to submissions.

The Python API mirrors the CLI and returns data: `ws = comp.Workspace("path")`, then `ws.folds(k=5)`,
`ws.fold_train("baseline", overrides={...})`, `ws.predict(...)`, `ws.ensemble([...], name=...)`,
`ws.leaderboard()`, `ws.config("baseline")` (see comp.api). Importing comp loads nothing heavy.
"""
from comp.core import __version__

__all__ = ["Workspace", "demo", "CompError", "__version__"]


def __getattr__(name: str):  # loaded on first use, so `import comp` and `comp --help` stay light
    if name in ("Workspace", "demo"):
        from comp import api

        return getattr(api, name)
    if name == "CompError":
        from comp.core.errors import CompError

        return CompError
    raise AttributeError(f"module 'comp' has no attribute {name!r}")
