"""The Typer app every verb registers on (`comp/cli/<verb>.py` imports it from here); verbs listed in workflow order."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks the network on import

import typer
from typer.core import TyperGroup, TyperOption

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
        from comp.core import __version__

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
