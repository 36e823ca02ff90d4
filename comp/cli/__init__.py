"""The `comp` command: one short command per stage (load config, call the stage, report)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks the network on import

import typer  # noqa: E402
from typer.core import TyperGroup, TyperOption  # noqa: E402

# The verbs in the order a competition uses them (`comp --help` lists them so); others follow.
WORKFLOW = ("init", "doctor", "eda", "folds", "lr-find", "fold-train", "tune", "predict", "ensemble", "pseudo",
            "leaderboard", "evaluate", "export", "submit", "config", "demo")


class WorkflowGroup(TyperGroup):
    """Lists the verbs in workflow order."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW))


_type_of = TyperOption.display_type_rich


def _no_bool_metavar(self: TyperOption, ctx: typer.Context) -> str | None:
    """A flag (--force) is shown without a `<bool>` type."""
    return None if self.is_flag else _type_of(self, ctx)


TyperOption.display_type_rich = _no_bool_metavar  # type: ignore[method-assign]

app = typer.Typer(
    name="comp",
    cls=WorkflowGroup,
    help="Kaggle-style image classification: folds, training, tuning, TTA, ensembles, submissions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)



def _version(value: bool) -> None:
    if value:
        from comp import __version__

        typer.echo(f"comp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    log_every: float | None = typer.Option(None, "--log-every", help="Seconds between progress lines when output "
                                           "is not a terminal (pipe, file, notebook); default 30."),
) -> None:
    """comp: from a folder of labelled images to a leaderboard submission.

    Every command takes --workspace DIR (default: here), and where it acts on an experiment
    -e/--experiment NAME and repeatable --set dotted.key=value overrides.
    """
    from comp.core.output import set_log_every

    set_log_every(log_every)


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
