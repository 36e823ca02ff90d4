"""The `comp` command: one short command per stage (load config, call the stage, report)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks the network on import

from comp.cli.app import app  # noqa: E402,F401 - the Typer app (`comp.cli.app`), re-exported

# Each verb lives in its own module and registers itself on `app` when imported.
from comp.cli import folds as _folds  # noqa: E402,F401
from comp.cli import train as _train  # noqa: E402,F401
from comp.cli import init as _init  # noqa: E402,F401
from comp.cli import doctor as _doctor  # noqa: E402,F401
from comp.cli import demo as _demo  # noqa: E402,F401
from comp.cli import tune as _tune  # noqa: E402,F401
from comp.cli import eda as _eda  # noqa: E402,F401
from comp.cli import predict as _predict, ensemble as _ensemble, evaluate as _evaluate, leaderboard as _leaderboard  # noqa: E402,F401
from comp.cli import export as _export, submit as _submit  # noqa: E402,F401
from comp.cli import config as _config  # noqa: E402,F401
from comp.cli import pseudo as _pseudo  # noqa: E402,F401
from comp.cli import lrfind as _lrfind  # noqa: E402,F401


# What a verb imports before its first output of its own (a few seconds on a small machine): said at once.
LOADING = {"fold-train": "torch, timm, albumentations", "tune": "torch, timm, optuna", "predict": "torch, timm, ttach",
           "lr-find": "torch, timm", "export": "torch, timm", "pseudo": "torch, timm", "doctor": "torch",
           "demo": "torch, timm, albumentations", "eda": "pandas, matplotlib", "ensemble": "pandas, scikit-learn"}


def first_line(argv: list[str]) -> str | None:
    """The line `comp VERB` prints before it imports anything heavy ('comp fold-train: loading torch, ...');
    None for help, --version and the quick verbs."""
    if any(a in ("--help", "-h", "--version") for a in argv):
        return None
    args = iter(argv)
    for arg in args:
        if arg == "--log-every":
            next(args, None)
        elif not arg.startswith("-"):
            return f"comp {arg}: loading {LOADING[arg]} ..." if arg in LOADING else None
    return None


def main() -> None:
    import sys

    line = first_line(sys.argv[1:])
    if line and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    app()
