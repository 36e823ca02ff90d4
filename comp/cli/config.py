"""`comp config`: the resolved config of an experiment and where each value came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import ExperimentOpt, SetOpt, WorkspaceOpt, console, handle_errors


@app.command("config")
@handle_errors
def config_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print {key: {value, source}} as JSON.")] = False,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Print the resolved config (defaults < comp.yaml < experiments/<exp>.yaml < --set) and the source of each value."""
    from comp.core.config import resolve_config, value_sources
    from comp.core.layout import Layout

    ws = Layout.at(workspace)
    cfg, origins = resolve_config(ws.root, experiment, tuple(set_ or ()))
    rows = value_sources(cfg, origins)
    if as_json:
        console.print_json(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}))
        return
    console.print(f"# experiment {experiment}: config hash {cfg.hash()}, train_hash {cfg.train_hash()}", highlight=False)
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        text = json.dumps(value) if not isinstance(value, str) else value
        console.print(f"{key.ljust(width)}  {text}  # {source}", highlight=False, markup=False)
