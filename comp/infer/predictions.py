"""Probability tables and the record that makes an experiment's predictions one unit.

Never imports torch. A probability table is `id, p_<class>...` (OOF tables add `fold, label`),
joined by id everywhere. `comp predict` writes test.csv, fold{i}/test.csv and (with --oof)
oof_tta.csv, then predict.json LAST: it records the TTA, the checkpoints used and the sha256 of
every file it covers. A reader trusts predictions only through `prediction_record`, which
returns the record when every covered file is on disk with its recorded hash: a run killed
between two writes leaves files that do not match the record, so they count as stale (to be
predicted again), never as fresh predictions under old metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.core.errors import CompError
from comp.core.layout import Layout, read_json_record, write_csv, write_json

OOF_SOURCES = ("plain", "tta")


def prob_columns(classes: Sequence[object]) -> list[str]:
    """Column names of a probability table: p_<class> in model-output order."""
    return [f"p_{c}" for c in classes]


def probs_frame(ids: Sequence[str], probs: np.ndarray, classes: Sequence[object]) -> pd.DataFrame:
    """id, p_<class>... (the schema of every probability table)."""
    frame = pd.DataFrame(np.asarray(probs), columns=prob_columns(classes))
    frame.insert(0, "id", list(ids))
    return frame


def oof_path(ws: Layout, exp: str, source: str = "plain") -> Path:
    """A member's OOF table: oof.csv (from fold-train) or oof_tta.csv (re-predicted with the test TTA)."""
    if source not in OOF_SOURCES:
        raise CompError(f"OOF source must be plain or tta, got {source!r}")
    return ws.oof_csv(exp) if source == "plain" else ws.oof_tta_csv(exp)


def oof_source_for(tta_name: str, oof_source: str, exp: str) -> str:
    """plain OOF (from training) fits a blend only of predictions made without TTA; otherwise OOF re-predicted with it."""
    if oof_source == "plain" and tta_name != "none":
        raise CompError(f"--oof-source plain would fit and score the blend on OOF made without TTA while {exp}'s test "
                        f"predictions use TTA {tta_name}: the reported CV would not be the CV of the submission; "
                        "drop --oof-source (OOF is then re-predicted with the same TTA) or pass --tta none")
    if oof_source not in ("auto", "plain", "tta"):
        raise CompError(f"--oof-source must be auto, plain or tta, got {oof_source!r}")
    return "tta" if oof_source == "tta" or tta_name != "none" else "plain"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_stamps(ckpts: dict[int, Path]) -> dict[str, list[int | str]]:
    """{fold: [size, mtime_ns, sha256]} of each best.pt: which checkpoints predictions were made from."""
    return {str(f): [p.stat().st_size, p.stat().st_mtime_ns, sha256(p)] for f, p in sorted(ckpts.items())}


def checkpoints_changed(recorded: dict | None, ckpts: dict[int, Path]) -> bool:
    """Are these checkpoints other than those `recorded` (checkpoint_stamps)? Judged by size and mtime, and where
    only the mtime differs (a workspace copied with `cp -r`, a restore) by the recorded content hash."""
    recorded = recorded or {}
    if set(recorded) != {str(k) for k in ckpts}:
        return True
    for key, path in ckpts.items():
        stamp, stat = recorded[str(key)], path.stat()
        if not isinstance(stamp, list) or len(stamp) < 2 or stamp[0] != stat.st_size:
            return True
        if stamp[1] != stat.st_mtime_ns and (len(stamp) < 3 or stamp[2] != sha256(path)):
            return True  # a record from before content hashes can only go by the mtime
    return False


def commit_predictions(ws: Layout, exp: str, tables: dict[Path, pd.DataFrame], summary: dict[str, Any]) -> dict:
    """Write the tables, then predict.json recording each one's sha256 (the commit point); returns the record."""
    files = {}
    for path, frame in tables.items():
        write_csv(path, frame)
        files[str(path.relative_to(ws.exp_dir(exp)))] = sha256(path)
    record = {**summary, "files": files}
    write_json(ws.predict_json(exp), record)
    return record


def prediction_record(ws: Layout, exp: str) -> dict | None:
    """predict.json when every file it covers is on disk with its recorded hash; else None (stale or interrupted)."""
    record = read_json_record(ws.predict_json(exp))
    files = record.get("files") if record is not None else None
    if not files:
        return None
    for rel, digest in files.items():
        target = ws.exp_dir(exp) / rel
        if not target.is_file() or sha256(target) != digest:
            return None
    return record


def stale_reason(record: dict | None, *, tta: str, merge: str, oof: bool, ckpts: dict[int, Path]) -> str | None:
    """Why an experiment's predictions cannot be used for (tta, merge, [OOF]) with these checkpoints; None if current."""
    if not ckpts:
        return "it has no fold checkpoints"
    if record is None:
        return "it has no complete predictions (none yet, or an interrupted predict)"
    if checkpoints_changed(record.get("checkpoints"), ckpts):
        return "its checkpoints changed since the last predict"
    if (record.get("tta"), record.get("merge")) != (tta, merge):
        return f"its predictions used TTA {record.get('tta')} ({record.get('merge')}), not {tta} ({merge})"
    if oof and not record.get("oof_tta"):
        return f"its OOF rows were not re-predicted with TTA {tta}"
    return None
