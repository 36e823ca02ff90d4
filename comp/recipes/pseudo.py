"""`comp pseudo`: confident test predictions of a submission as extra training rows of a new experiment.

Fold-safe by construction: the rows student fold f trains on carry labels blended from the members'
fold-f models only (experiments/<member>/fold{f}/test.csv, with the submission's weights, method and
bias), and those models never trained on fold f's rows; the members must have trained on the new
experiment's folds file. Pseudo rows are added to a fold's training rows only (fold_of -1), never to
a validation fold, so oof.csv and the fold scores are measured on labelled rows alone.

experiments/<new>/pseudo.csv: id, path, fold (the student fold the row serves), label, confidence
(its top probability) [, p_<class>... with --soft]; pseudo.json: where it came from and what was kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from comp.core.config import Config, load_config, read_yaml
from comp.core.errors import CompError
from comp.infer.predictions import prob_columns, sha256
from comp.core.layout import Layout, read_json, write_csv, write_json, write_yaml

if TYPE_CHECKING:
    from comp.data.tables import Tables

log = logging.getLogger("comp.pseudo")


def fold_probabilities(ws: Layout, manifest: dict, classes: tuple, k: int) -> tuple[list[str], dict[int, np.ndarray]]:
    """(test ids, {fold: the blend of the members' fold models' test probabilities}) with the manifest's blend."""
    from comp.blend.ensemble import align_members, apply_bias, blend
    from comp.blend.submission import read_member_table

    members = list(manifest["members"])
    weights = manifest.get("weights_full") or manifest["weights"]
    bias = None if manifest.get("bias") is None else np.asarray(manifest["bias"], dtype=np.float64)
    ids, out = None, {}
    for fold in range(k):
        frames = [read_member_table(ws.test_probs_csv(m, fold), m, f"fold {fold} test predictions",
                                    f"run `comp predict -e {m}` (every fold of every member is needed)") for m in members]
        fold_ids, probs = align_members(frames, classes, names=members)
        if ids is not None and list(fold_ids) != ids:
            probs = [pd.DataFrame(p, index=fold_ids).loc[ids].to_numpy() for p in probs]
        ids = ids or list(fold_ids)
        out[fold] = apply_bias(blend(probs, weights, method=manifest["method"]), bias)
    return [str(i) for i in ids], out


def check_members(ws: Layout, manifest: dict, folds_record: dict, name: str) -> None:
    """Every member's predictions current (predict.json), made by the models the submission used, on our folds."""
    from comp.infer.predictions import prediction_record

    for m in manifest["members"]:
        record = prediction_record(ws, m)
        if record is None:
            raise CompError(f"member {m!r} of submission {name!r} has no complete test predictions; run "
                            f"`comp predict -e {m}`")
        if (manifest.get("tta") or {}).get(m) not in (None, record.get("tta")):
            raise CompError(f"member {m!r} was predicted with TTA {record.get('tta')} since submission {name!r} used "
                            f"{manifest['tta'][m]}; rerun `comp ensemble --name {name}` (or predict it with that TTA)")
        recorded = (manifest.get("config_hashes") or {}).get(m, {}).get("train_hash")
        if recorded and record.get("train_hash") != recorded:
            raise CompError(f"member {m!r} was retrained since submission {name!r} was made; rerun `comp ensemble "
                            f"--name {name}` first")
        doc = read_yaml(ws.config_yaml(m)) if ws.config_yaml(m).is_file() else {}
        theirs = (doc.get("folds_file") or {}).get("fingerprint")
        if theirs != folds_record["fingerprint"] or (doc.get("folds_file") or {}).get("path") != folds_record["path"]:
            raise CompError(f"member {m!r} trained on {(doc.get('folds_file') or {}).get('path')}, not on "
                            f"{folds_record['path']}: its fold models would label rows for folds they trained on; "
                            f"pseudo-label from members trained on the new experiment's folds (folds.k, folds.seed)")


def make_pseudo(ws: Layout, source: str, new: str, *, threshold: float, soft: bool, base: str | None = None,
                force: bool = False) -> dict[str, Any]:
    """Write experiments/<new>.yaml (the base experiment plus `pseudo:`) and experiments/<new>/pseudo.{csv,json}."""
    from comp.data.tables import load_tables
    from comp.data.folds import ensure_folds
    from comp.train.fold_train import folds_file_record

    if not 0.0 <= threshold < 1.0:
        raise CompError(f"--threshold is a probability in [0, 1), got {threshold}")
    exp_yaml = ws.experiment_yaml(new)
    if exp_yaml.is_file() and not force:
        raise CompError(f"{exp_yaml} exists; pick another -e name, or --force to replace it")
    if source.endswith(".csv") or "/" in source:  # a file, not a submission name
        return external_csv(ws, Path(source), new, threshold=threshold, soft=soft, base=base)
    manifest_path = ws.submission_json(source)
    if not manifest_path.is_file():
        subs = sorted(p.stem for p in ws.submissions_dir.glob("*.json"))
        raise CompError(f"--from {source}: no submission of that name (submissions: {', '.join(subs) or 'none'}); "
                        "run `comp ensemble --name NAME`, or pass a CSV file")
    manifest = read_json(manifest_path)
    if "members" not in manifest:
        raise CompError(f"{manifest_path} is not a comp ensemble manifest; rerun `comp ensemble --name {source}`")
    from comp.blend.ensemble import METHODS

    if manifest.get("method") not in METHODS or "weights" not in manifest:
        raise CompError(f"submission {source!r} was made with --method {manifest.get('method')}: pseudo labels are "
                        f"blended per fold with a weighted blend ({', '.join(METHODS)}); use such a submission")
    base = base or str(manifest["members"][0])
    if base == new:
        raise CompError(f"-e {new} would overwrite its own base experiment; pick a new name")
    cfg = load_config(ws.root, base)
    tables = load_tables(cfg, ws, check_images=False)
    require_kind(tables)
    record = folds_file_record(ws, ensure_folds(ws, tables, cfg))
    check_members(ws, manifest, record, source)
    csv_path = ws.submission_csv(source)
    if not csv_path.is_file() or sha256(csv_path) != manifest.get("sha256"):
        raise CompError(f"{csv_path} is missing or differs from its manifest; rerun `comp ensemble --name {source}`")
    ids, per_fold = fold_probabilities(ws, manifest, tables.classes, cfg.folds.k)
    table = pseudo_table(tables, ids, per_fold, threshold=threshold, soft=soft)
    info = {"source": source, "kind": "submission", "members": list(manifest["members"]),
            "sha256": manifest["sha256"], "manifest_sha256": sha256(manifest_path)}
    return write_experiment(ws, cfg, base, new, table, tables, info, threshold=threshold, soft=soft)


def require_kind(tables: "Tables") -> None:
    from comp.recipes._tables import require_multiclass

    require_multiclass(tables, "comp pseudo")


def pseudo_table(tables: "Tables", ids: list[str], per_fold: dict[int, np.ndarray], *, threshold: float,
                 soft: bool) -> pd.DataFrame:
    """The kept rows of every fold: id, path, fold, label, confidence [, p_<class>]."""
    path_of = dict(zip(tables.test["id"].astype(str), tables.test["path"].astype(str)))
    missing = [i for i in ids if i not in path_of]
    if missing:
        raise CompError(f"{len(missing)} predicted ids are not in data.test_csv (e.g. {missing[:3]}); rerun predict")
    classes = np.asarray([str(c) for c in tables.classes], dtype=object)
    frames = []
    for fold, probs in sorted(per_fold.items()):
        conf = probs.max(axis=1)
        keep = conf >= threshold
        frame = pd.DataFrame({"id": np.asarray(ids, dtype=object)[keep], "fold": fold,
                              "label": classes[probs[keep].argmax(axis=1)], "confidence": conf[keep]})
        frame.insert(1, "path", [path_of[i] for i in frame["id"]])
        if soft:
            frame[prob_columns(tables.classes)] = probs[keep]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        raise CompError(f"no test row reaches --threshold {threshold} in any fold; lower it")
    return table


def write_experiment(ws: Layout, cfg: Config, base: str, new: str, table: pd.DataFrame, tables: "Tables",
                     info: dict, *, threshold: float, soft: bool) -> dict[str, Any]:
    """pseudo.csv, pseudo.json, then experiments/<new>.yaml (the base experiment's file plus `pseudo:`)."""
    write_csv(ws.pseudo_csv(new), table)
    table_sha = sha256(ws.pseudo_csv(new))
    kept = {str(f): {str(c): int(n) for c, n in g["label"].value_counts().sort_index().items()}
            for f, g in table.groupby("fold")}
    summary = {**info, "threshold": threshold, "soft": soft, "table": ws.pseudo_csv(new).name,
               "table_sha256": table_sha, "test_rows": int(len(tables.test)),
               "rows_per_fold": {f: int(sum(v.values())) for f, v in kept.items()}, "kept_per_class": kept}
    write_json(ws.pseudo_json(new), summary)
    layer = read_yaml(ws.experiment_yaml(base)) if ws.experiment_yaml(base).is_file() else {}
    layer = {k: v for k, v in layer.items() if k != "pseudo"}
    layer["pseudo"] = {"source": info["source"], "sha256": info["sha256"], "threshold": threshold, "soft": soft,
                       "table_sha256": table_sha}
    write_yaml(ws.experiment_yaml(new), layer)
    load_config(ws.root, new)  # the file it wrote resolves
    return {**summary, "experiment": new, "base": base, "yaml": str(ws.experiment_yaml(new))}


def external_csv(ws: Layout, path: Path, new: str, *, threshold: float, soft: bool, base: str | None) -> dict:
    """--from a CSV that is not a comp submission: its probabilities (kind probabilities) or, when only hard labels
    are asked (no --soft, --threshold 0), its labels, for every fold alike (fold -1)."""
    from comp.data.tables import load_tables, read_csv

    path = ws.path(path)
    if not path.is_file():
        raise CompError(f"--from {path}: no such file; pass a submission name or an existing CSV")
    base = base or "baseline"
    cfg = load_config(ws.root, base)
    tables = load_tables(cfg, ws, check_images=False)
    require_kind(tables)
    sub = cfg.submission
    frame = read_csv(path, "pseudo-label source", text=(sub.id_col, sub.target_col))
    names = [str(c) for c in tables.classes]
    if set(names) <= set(map(str, frame.columns)):
        probs = frame[names].to_numpy(dtype=np.float64)
    elif sub.target_col in frame.columns:
        if soft or threshold > 0:
            raise CompError(f"{path} holds labels without probabilities (column {sub.target_col!r}), so neither "
                            "--soft nor a --threshold can be applied; pass --threshold 0 without --soft for hard labels, "
                            "or use a comp submission (its members' probabilities are used)")
        code = {c: i for i, c in enumerate(names)}
        bad = sorted(set(frame[sub.target_col].astype(str)) - set(code))
        if bad:
            raise CompError(f"{path} has labels that are not classes: {bad[:5]}")
        probs = np.eye(len(names))[frame[sub.target_col].astype(str).map(code).to_numpy()]
    else:
        raise CompError(f"{path} has neither a {sub.target_col!r} column nor one column per class; not a submission")
    log.warning("%s is not a comp submission: comp cannot show its labels were made without each fold's rows, so "
                "its rows serve every fold alike", path)
    table = pseudo_table(tables, frame[sub.id_col].astype(str).tolist(), {-1: probs}, threshold=threshold, soft=soft)
    info = {"source": str(path), "kind": "csv", "sha256": sha256(path)}
    return write_experiment(ws, cfg, base, new, table, tables, info, threshold=threshold, soft=soft)


# ---------------------------------------------------------------- at training


PREFIX = "pseudo:"  # pseudo rows' ids in the training table (a test id may equal a train id)


def read_table(cfg: Config, ws: Layout, exp: str) -> pd.DataFrame:
    """pseudo.csv, checked to be the table the experiment's config names."""
    from comp.data.tables import read_csv

    path = ws.pseudo_csv(exp)
    fix = f"rerun `comp pseudo --from {cfg.pseudo.source} -e {exp}`"
    if not path.is_file():
        raise CompError(f"{path} does not exist, and experiment {exp!r} trains on pseudo labels; {fix}")
    if cfg.pseudo.table_sha256 and sha256(path) != cfg.pseudo.table_sha256:
        raise CompError(f"{path} differs from the table experiments/{exp}.yaml names (pseudo.table_sha256); {fix}")
    return read_csv(path, "pseudo table", text=("id", "label"), fix=fix)


def extend(cfg: Config, ws: Layout, exp: str, tables: "Tables", fold_of: np.ndarray,
           fold: int) -> tuple["Tables", np.ndarray, np.ndarray | None]:
    """(tables with every pseudo id appended once, fold_of with -1 for the rows fold `fold` keeps and -2 for the
    rest, soft targets (N, C) or None). The appended rows are the same for every fold (one image cache)."""
    from comp.train.engine import TRAIN_ONLY, UNUSED
    from comp.recipes._tables import with_train

    table = read_table(cfg, ws, exp)
    if tables.test is None:
        raise CompError("pseudo labels need data.test_csv (the images they label)")
    ids = list(dict.fromkeys(table["id"].astype(str)))
    test = tables.test.assign(id=tables.test["id"].astype(str)).set_index("id")
    absent = [i for i in ids if i not in test.index]
    if absent:
        raise CompError(f"{ws.pseudo_csv(exp)} has ids not in data.test_csv (e.g. {absent[:3]}); rerun `comp pseudo`")
    rows = test.loc[ids].reset_index()
    mine = table[table["fold"].isin([fold, -1])].drop_duplicates("id", keep="first").set_index("id")
    code = {str(c): i for i, c in enumerate(tables.classes)}
    label = [mine.at[i, "label"] if i in mine.index else str(tables.classes[0]) for i in ids]
    extra = pd.DataFrame({"id": [PREFIX + i for i in ids], "path": rows["path"].to_numpy(), "label": label,
                          "y": [code[str(v)] for v in label]})
    for col in ("bx0", "by0", "bx1", "by1"):
        if col in rows.columns and col in tables.train.columns:
            extra[col] = rows[col].to_numpy()
    train = pd.concat([tables.train, extra], ignore_index=True)
    train["y"] = train["y"].astype(np.int64)
    kept = np.array([i in mine.index for i in ids])
    ext_fold_of = np.concatenate([np.asarray(fold_of), np.where(kept, TRAIN_ONLY, UNUSED)])
    soft = None
    if cfg.pseudo.soft:
        cols = prob_columns(tables.classes)
        n, c = len(tables.train), len(tables.classes)
        soft = np.zeros((len(train), c), dtype=np.float32)
        soft[np.arange(n), tables.train["y"].to_numpy()] = 1.0
        for j, i in enumerate(ids):
            if i in mine.index:
                soft[n + j] = mine.loc[i, cols].to_numpy(dtype=np.float32)
    return with_train(tables, train), ext_fold_of, soft
