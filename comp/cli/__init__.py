"""The `comp` command: one short command per stage (load config, call the stage, report)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks the network on import

import typer  # noqa: E402

app = typer.Typer(
    name="comp",
    help="Kaggle-style image classification: folds, training, tuning, TTA, ensembles, submissions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def _root() -> None:
    """comp: from a folder of labelled images to a leaderboard submission.

    Every command takes --workspace DIR (default: here), and where it acts on an experiment
    -e/--experiment NAME and repeatable --set dotted.key=value overrides.
    """


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


def main() -> None:
    app()
