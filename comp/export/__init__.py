"""`comp export`: a folder that reproduces a submission (or an experiment's predictions) offline, without comp.

The folder is flat, so `kaggle datasets create -p DIR` uploads all of it:

    bundle.json                    classes, submission format, test CSV columns, blend (method, weights, bias),
                                   and per member: folds, model, pre-processing, TTA, amp; versions; source hashes
    predict.py                     self-contained inference (comp/export/bundle_predict.py, copied)
    <member>.fold<k>.safetensors   fold weights (and <member>.fold<k>.onnx with --onnx)
    <member>.config.yaml           the resolved config each member was trained with
    dataset-metadata.json, notebook.ipynb

Before the folder appears, export proves what it can: the blend computed by predict.py's own code from
the members' test predictions must give submissions/<name>.csv, and predict.py's image pipeline
must give the members' test probabilities on the first `check` test images.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from comp.core.config import Config
from comp.core.errors import CompError, did_you_mean
from comp.core.layout import Layout, read_json, write_bytes, write_json, write_text

log = logging.getLogger("comp.export")

BUNDLE_FORMAT = 1
TEMPLATE = Path(__file__).with_name("bundle_predict.py")
CHECK_TOLERANCE = 1e-4  # test.csv holds 6 decimals; full-precision predictions on the same device agree to ~1e-6
AMP_CHECK_TOLERANCE = 5e-2  # bf16/fp16 autocast is not bit-stable across batch compositions
PACKAGES = ("torch", "timm", "numpy", "pandas", "Pillow", "opencv-python-headless", "opencv-python", "safetensors",
            "albumentations", "onnx", "onnxruntime")


@dataclass(frozen=True)
class ExportOptions:
    onnx: bool = False
    force: bool = False
    check: int = 8  # test images predicted by the bundle at export and compared with test.csv (0: skip)
    dataset_id: str | None = None  # OWNER/SLUG for dataset-metadata.json
    notebook_images: str | None = None
    notebook_csv: str | None = None


def export_submission(cfg: Config, ws: Layout, name: str, out: Path, options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """Bundle submissions/<name>: its members' folds, TTA and blend exactly as the manifest records them."""
    manifest = read_manifest(ws, name)
    if manifest["method"] == "stack":
        raise CompError(f"submission {name!r} is a stack ({manifest.get('stacker')}): a bundle reproduces weighted blends "
                        "only; export a blend (`comp ensemble --method mean ...`) or one experiment")
    members = list(manifest["members"])
    blend = {"method": manifest["method"], "weights": manifest.get("weights_full") or manifest["weights"],
             "bias": manifest.get("bias"), "thresholds": manifest.get("thresholds")}
    source = {"kind": "submission", "name": name, "manifest_sha256": sha256(ws.submission_json(name)),
              "csv_sha256": manifest.get("sha256"), "comp_version": manifest.get("comp_version")}
    for member in members:
        recorded = (manifest.get("config_hashes") or {}).get(member, {}).get("train_hash")
        current = read_train_hash(ws, member)
        if recorded and current != recorded:
            raise CompError(f"member {member!r} was retrained since submission {name!r} was made (config {recorded} -> "
                            f"{current}); rerun `comp ensemble` for {name!r}, then export")
    return build_bundle(cfg, ws, name, members, blend, source, out, options, expected=ws.submission_csv(name))


def export_experiment(cfg: Config, ws: Layout, exp: str, out: Path, options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """Bundle one experiment: its fold mean with its TTA, as `comp ensemble -e EXP --weights equal` would submit it."""
    if not ws.config_yaml(exp).is_file():
        known = sorted(p.parent.name for p in ws.experiments_dir.glob("*/config.yaml"))
        subs = sorted(p.stem for p in ws.submissions_dir.glob("*.json"))
        raise CompError(f"{exp!r} is neither a submission nor a trained experiment{did_you_mean(exp, known + subs)} "
                        f"(submissions: {', '.join(subs) or 'none'}; experiments: {', '.join(known) or 'none'})")
    blend = {"method": "mean", "weights": [1.0], "bias": None}
    source = {"kind": "experiment", "name": exp, "test_csv_sha256": sha256(ws.test_probs_csv(exp))
              if ws.test_probs_csv(exp).is_file() else None}
    return build_bundle(cfg, ws, exp, [exp], blend, source, out, options, expected=None)


def export(cfg: Config, ws: Layout, name: str, out: Path, options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """A submission's bundle when submissions/<name>.json exists, else an experiment's."""
    if ws.submission_json(name).is_file():
        return export_submission(cfg, ws, name, out, options)
    return export_experiment(cfg, ws, name, out, options)


def read_manifest(ws: Layout, name: str) -> dict[str, Any]:
    path = ws.submission_json(name)
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise CompError(f"{path} is not valid JSON ({exc}); rerun `comp ensemble --name {name}`") from None
    missing = [k for k in ("members", "weights", "method") if k not in doc]
    if missing:
        raise CompError(f"{path} lacks {', '.join(missing)}: it is not a comp ensemble manifest; "
                        f"rerun `comp ensemble --name {name}`")
    return doc


def read_train_hash(ws: Layout, exp: str) -> str | None:
    from comp.core.config import read_yaml

    path = ws.config_yaml(exp)
    return read_yaml(path).get("train_hash") if path.is_file() else None


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_bundle(cfg: Config, ws: Layout, name: str, members: list[str], blend: dict[str, Any], source: dict[str, Any],
                 out: Path, options: ExportOptions, *, expected: Path | None) -> dict[str, Any]:
    """Write every member and the bundle's files into a staging folder, prove them, then move it to `out`."""
    from comp.data.tables import load_tables
    from comp.export.members import member_spec

    if options.onnx:
        from comp.export.onnx import require_onnx

        require_onnx()
    tables = load_tables(cfg, ws, check_images=False)
    with staging(Path(out), force=options.force) as folder:
        specs = [member_spec(cfg, ws, m, tables.classes, folder, onnx=options.onnx) for m in members]
        bundle = bundle_doc(cfg, ws, tables, specs, blend, source)
        write_json(folder / "bundle.json", bundle)
        write_bytes(folder / "predict.py", TEMPLATE.read_bytes())
        write_kaggle_files(cfg, name, folder, options)
        summary = {"name": name, "out": str(Path(out).resolve()), "members": members, "kind": source["kind"],
                   "files": sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))}
        summary["blend_check"] = verify_blend(cfg, ws, bundle, members, expected)
        summary["image_check"] = verify_images(cfg, ws, bundle, folder, tables, options.check)
        summary["onnx_max_abs_diff"] = max((d for s in specs for d in s.get("onnx_max_abs_diff", {}).values()), default=None)
    return summary


def bundle_doc(cfg: Config, ws: Layout, tables: Any, specs: list[dict[str, Any]], blend: dict[str, Any],
               source: dict[str, Any]) -> dict[str, Any]:
    """bundle.json: everything predict.py needs, and where it came from."""
    from comp.report.sections import recorded_environment
    from comp.blend.submission import class_columns, expected_ids

    _, sample_columns = expected_ids(cfg, ws)
    sub = cfg.submission
    classes = [c.item() if hasattr(c, "item") else c for c in tables.classes]
    task = task_doc(tables.task.for_config(cfg), blend.get("thresholds"))
    names = task["labels"] if task["kind"] == "multitask" and task["combine"] else classes
    d = cfg.data
    suffixes = [Path(p).suffix for p in (tables.test["path"] if tables.test is not None else [])]
    return {
        "format": BUNDLE_FORMAT, "source": source, "classes": classes, "task": task,
        "submission": {"id_col": sub.id_col, "target_col": sub.target_col, "kind": cfg.submission_kind,
                       "columns": class_columns(names, sample_columns, sub.id_col)},
        "test": {"id_col": d.id_col, "image_col": d.image_col, "bbox_cols": list(d.bbox_cols) if d.bbox_cols else None,
                 "extension": max(set(suffixes), key=suffixes.count) if suffixes else None},
        "blend": {"method": blend["method"], "weights": [float(w) for w in blend["weights"]],
                  "bias": None if blend["bias"] is None else [float(b) for b in blend["bias"]]},
        "members": specs, "versions": versions(),
        "trained_with": {spec["name"]: recorded_environment(ws, spec["name"]) for spec in specs},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "competition": cfg.competition,
    }


def task_doc(task: Any, thresholds: list[float] | None) -> dict[str, Any]:
    """bundle.json's task: what predict.py needs to turn logits into the submission (as comp.core.tasks.Task does)."""
    return {"kind": task.kind, "outputs": [str(o) for o in task.outputs], "labels": [str(v) for v in task.labels],
            "heads": [{"name": h.name, "column": h.column, "classes": list(h.classes)} for h in task.heads],
            "combine": task.combine is not None, "combos": list(task.combos),
            "scale": list(task.scale) if task.scale else None, "squash": task.squash, "tag_sep": task.tag_sep,
            "thresholds": thresholds}


def versions() -> dict[str, str]:
    """Versions of the packages in the exporting environment (python included); `trained_with` in bundle.json holds
    what each member's scores.json recorded at training time."""
    import platform
    from importlib import metadata

    from comp.core import __version__

    found = {"python": platform.python_version(), "comp": __version__}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_kaggle_files(cfg: Config, name: str, folder: Path, options: ExportOptions) -> None:
    """dataset-metadata.json and notebook.ipynb (paths on Kaggle default to the competition's input folder)."""
    from comp.export.kaggle_files import dataset_metadata, notebook_text

    meta = dataset_metadata(name, options.dataset_id)
    write_json(folder / "dataset-metadata.json", meta)
    comp_dir = f"/kaggle/input/{cfg.competition or 'COMPETITION'}"
    sample = Path(cfg.submission.sample_csv).name if cfg.submission.sample_csv else "sample_submission.csv"
    write_text(folder / "notebook.ipynb", notebook_text(
        bundle_dir=f"/kaggle/input/{meta['id'].split('/')[1]}", images=options.notebook_images or f"{comp_dir}/test",
        csv=options.notebook_csv or f"{comp_dir}/{sample}"))


@contextmanager
def staging(out: Path, *, force: bool) -> Iterator[Path]:
    """A fresh sibling folder to write into; moved to `out` only when the block succeeds."""
    if out.exists() and not out.is_dir():
        raise CompError(f"{out} is a file; pass --to a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CompError(f"{out} is not empty; pass --force to replace it (only a previous bundle is replaced)")
        if not (out / "bundle.json").is_file():
            raise CompError(f"{out} is not empty and holds no bundle.json; refusing to replace it: pick an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify_blend(cfg: Config, ws: Layout, bundle: dict[str, Any], members: list[str], expected: Path | None) -> dict[str, Any]:
    """predict.py's blend over the members' test.csv must give submissions/<name>.csv (labels equal, probabilities 1e-6)."""
    import pandas as pd

    from comp.blend.ensemble import align_members
    from comp.export import bundle_predict as bp
    from comp.blend.submission import expected_ids, read_member_table

    frames = [read_member_table(ws.test_probs_csv(m), m, "test predictions", f"run `comp predict -e {m}`") for m in members]
    ids, probs = align_members(frames, bundle["classes"], names=members)
    order, sample_columns = expected_ids(cfg, ws)
    frame = bp.submission_from_members(bundle, list(ids), probs, order, sample_columns)
    if expected is None:
        return {"rows": len(frame)}
    sub = bundle["submission"]
    written = pd.read_csv(expected, dtype={sub["id_col"]: str, sub["target_col"]: str}, keep_default_na=False, na_values=[""])
    again = pd.read_csv(io.StringIO(bp.csv_text(frame)), dtype={sub["id_col"]: str, sub["target_col"]: str},
                        keep_default_na=False, na_values=[""])
    return compare_submissions(written, again, sub, expected)


def compare_submissions(written: Any, again: Any, sub: dict[str, Any], path: Path) -> dict[str, Any]:
    """Labels equal and probabilities within 1e-6, or a CompError saying the manifest no longer describes the file."""
    hint = (f"{path} is not what its members' current test predictions give (a member was re-predicted or retrained "
            f"since `comp ensemble`, or the file was edited); rerun `comp ensemble --name {path.stem}`, then export")
    if list(written.columns) != list(again.columns) or len(written) != len(again):
        raise CompError(f"{hint} (columns or rows differ)")
    if not (written[sub["id_col"]].astype(str).to_numpy() == again[sub["id_col"]].astype(str).to_numpy()).all():
        raise CompError(f"{hint} (row order differs)")
    if sub["kind"] in ("label", "tags"):  # text: every non-id column (one per head for a multitask without combine)
        cols = [c for c in written.columns if c != sub["id_col"]]
        differ = int((written[cols].fillna("").astype(str) != again[cols].fillna("").astype(str)).any(axis=1).sum())
        if differ:
            raise CompError(f"{hint} ({differ} labels differ)")
        return {"rows": len(written), "labels_differ": 0}
    cols = [c for c in written.columns if c != sub["id_col"]]
    diff = float(np.abs(written[cols].to_numpy(np.float64) - again[cols].to_numpy(np.float64)).max())
    if diff > 1e-6:
        raise CompError(f"{hint} (probabilities differ by up to {diff:.2g})")
    return {"rows": len(written), "max_abs_diff": diff}


def verify_images(cfg: Config, ws: Layout, bundle: dict[str, Any], folder: Path, tables: Any, n: int) -> dict[str, Any] | None:
    """predict.py's pipeline on the first `n` test images must give each member's test.csv probabilities."""
    if n <= 0 or tables.test is None or not len(tables.test):
        return None
    from comp.data.cache import fraction_boxes, frame_boxes
    from comp.export import bundle_predict as bp
    from comp.run.device import resolve_amp, resolve_device
    from comp.blend.submission import read_member_table

    device = resolve_device(cfg.train.device)
    boxes = frame_boxes(tables.test)
    rows = tables.test.iloc[:n]
    worst: dict[str, float] = {}
    for member in bundle["members"]:
        got = bp.predict_member(member, rows["path"].tolist(), None if boxes is None else boxes[:n], device=device,
                                folder=folder, fractional=fraction_boxes(boxes), log=log.debug, task=bp.task_of(bundle))
        stored = read_member_table(ws.test_probs_csv(member["name"]), member["name"], "test predictions", "")
        want = stored.set_index("id").loc[rows["id"].astype(str), [f"p_{c}" for c in bundle["classes"]]].to_numpy(np.float64)
        worst[member["name"]] = diff = float(np.abs(got - want).max())
        tol = CHECK_TOLERANCE if resolve_amp(member["amp"], device) is None else AMP_CHECK_TOLERANCE
        if diff > tol:
            raise CompError(f"member {member['name']!r}: the bundle's predict.py gives probabilities {diff:.2g} away from "
                            f"{ws.test_probs_csv(member['name'])} on the first {len(rows)} test images (> {tol}); "
                            "rerun `comp predict` on this machine, or pass --check 0 to skip this check")
    return {"images": len(rows), "device": str(device), "max_abs_diff": worst}
