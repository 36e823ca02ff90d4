"""The entry point of a `comp fold-train --devices` child: `python -m comp.api._child JOB_FILE`.

comp.train.devices (the parent) writes the job file (ChildJob: workspace, experiment, folds, --set overrides,
device) and starts one child per fold with it; the child's stdout is the fold's train.log. No options are parsed
here: the job file is the whole interface, read and validated by comp.train.devices.read_job.
"""

from __future__ import annotations

import json
import logging
import sys

from comp.core.config import load_config
from comp.core.errors import CompError
from comp.core.layout import Layout
from comp.core.output import LineProgress
from comp.recipes.inputs import experiment_recipes
from comp.train.devices import read_job
from comp.train.fold_train import fold_train

log = logging.getLogger("comp.api._child")


def child_main(argv: list[str] | None = None) -> int:
    """Train the job's fold(s) of the experiment, with its recipes, writing only their folders; 0, or 2 after one
    `error:` line when the job file or the run is wrong (a CompError)."""
    args = sys.argv[1:] if argv is None else argv
    # the child's stdout is its fold's train.log: every line carries its time
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    try:
        if len(args) != 1:
            raise CompError(f"a fold-train child takes one job file (python -m comp.api._child JOB_FILE); "
                            f"got {len(args)} arguments")
        job = read_job(args[0])
        log.info("job %s: %s", args[0], json.dumps(job.record()))
        ws = Layout.at(job.workspace)
        cfg = load_config(ws.root, job.experiment, job.overrides)
        fold_train(cfg, ws, job.experiment, folds=list(job.folds), progress=LineProgress(stream=sys.stdout, stamp=True),
                   aggregate=False, recipes=experiment_recipes(cfg, ws, job.experiment))
    except CompError as exc:
        log.error("error: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
