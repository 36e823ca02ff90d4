"""The small core every stage imports, and which imports no stage: config, errors, the workspace"s file
layout (paths, atomic writes, locks, set-aside outputs), task kinds, metrics, logging and progress.

Modules: config (typed, validated config and its one YAML reader), errors (CompError), layout (where each
artifact lives, atomic writes), locks, replace (--force"s set-aside outputs), tasks, metrics, output and
progress (log lines, bars); modules starting with _ are private.
"""

__version__ = "0.1.0"  # pyproject.toml's version

__all__ = ["__version__", "config", "errors", "layout", "locks", "metrics", "output", "progress", "replace", "tasks"]
