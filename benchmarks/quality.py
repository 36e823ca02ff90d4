"""Out-of-the-box quality: comp with its defaults vs a plain hand-written timm loop, on real grouped image sets.

Each case is a comp workspace built from real images (benchmarks/quality_cases.py) with a hidden test split of
~22% of the groups, drawn at random within each class, whose solution only this script reads:

  fashion  Fashion-MNIST (Debian dataset-fashion-mnist): 260 per class from its train set, grouped into
           look-alike clusters of ~7 (k-means on 14x14 pixels within a class; the docstring of
           quality_cases.build_fashion says why); 2,006 train / 594 hidden, 290 train groups; accuracy
  icons    freedesktop icon themes (Tango, GNOME, MATE, nuoveXT2, Oxygen): the icon's context from its 32 px
           colour image, at most 320 per context, grouped by icon name; 1,202 train / 312 hidden; macro-F1
  emoji    Google + Twitter emoji (npm emoji-datasource-*@16.0.0, npm-packed once into ~/.cache/comp-bench/emoji
           or $COMP_BENCH_CACHE): the 16 subcategories with the most emoji, <= 6 images per emoji and 150 per
           subcategory, grouped by the base emoji (skin tones and vendors); 1,458 train / 408 hidden; macro-F1
  digits   (not in the default run) comp's demo digits per subject; `--quick` runs a tiny one

Each case runs in two variants: from scratch (test_resnet; `fashion`, `icons`, `emoji`) and fine-tuned (`-pt`:
mobilenetv2_100 from $COMP_WEIGHTS_DIR/mobilenetv2_100_tv_in1k.safetensors, default: the weights folder in the
`shared` folder beside this repository; missing -> the -pt cases are skipped with a message).

For each case, in one run and on the same folds (comp's folds/k5-s42.csv; 5 group folds as the issue measures):
  comp     comp.Workspace: folds, fold_train, predict with the experiment's defaults; only model (name, pretrained,
           pretrained_path), image.size and train.epochs are set (plus --set): comp picks lr and batch size itself
  hand     in-memory uint8 tensors normalised with the weights' mean/std, per-sample flip + small affine on the
           batch, AdamW + OneCycle, the last epoch's weights, soft voting over the fold models; -pt: the same
           weights file loaded without its classifier
and prints CV (mean fold score), hidden (score of the fold-mean test prediction), CV - hidden, seconds, and per
case the goals: comp hidden >= hand hidden + 0.02; comp (CV - hidden) <= hand (CV - hidden) + 0.01.
`--json PATH` writes every figure (and comp's honest CV estimate and checkpoint rule from scores.json). Each system's
`hidden_single` is the mean hidden score of its fold models one at a time: hidden - hidden_single is what averaging
the folds gains, a part of the hidden score that no fold's CV can see.

Sizes: images seen per system = 5 folds x 4/5 of train x epochs: fashion 80k, icons 58k, emoji 58k (48 px),
fashion-pt 32k, icons-pt 19k, emoji-pt 23k. At the quiet 2-core rates they were sized for (test_resnet ~1,500
img/s at 32 px; mobilenetv2_100 ~150-300 img/s at 64 px) one scratch case (both systems) takes ~3-5 min and a
-pt case ~4-7 min; on shared cores under load it is several times that (`--threads 1` helps there).

    .venv/bin/python benchmarks/quality.py --json quality.json            # the six real cases
    .venv/bin/python benchmarks/quality.py --quick                       # one tiny case (~1-2 min): the CI smoke
    .venv/bin/python benchmarks/quality.py --cases icons --systems comp --set augment.preset=none
    .venv/bin/python benchmarks/quality.py --cases emoji-pt --folds 1 --epochs 1   # does a case work at all

More repeats of a case on a second core, then judged with the first ones as one run (--merge trains nothing):

    .venv/bin/python benchmarks/quality.py --cases fashion-pt --repeats 3 --json a.json
    .venv/bin/python benchmarks/quality.py --cases fashion-pt --repeats 3 --first-repeat 3 --json b.json
    .venv/bin/python benchmarks/quality.py --merge a.json b.json --json all.json

Where one system's average wins (the probabilities kept, then compared split by split):

    .venv/bin/python benchmarks/quality.py --cases fashion-pt --repeats 3 --probs probs/
    .venv/bin/python benchmarks/quality_agreement.py probs/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from quality_cases import BUILDERS, Missing

REPO = Path(__file__).resolve().parents[1]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
WEIGHTS = {"mobilenetv2_100": ("mobilenetv2_100_tv_in1k.safetensors", IMAGENET)}  # file, (mean, std)
GOAL_HIDDEN, GOAL_GAP = 0.02, 0.01


@dataclass(frozen=True)
class Case:
    name: str
    data: str  # a key of quality_cases.BUILDERS
    model: str
    size: int
    epochs: int
    lr: float  # the hand loop's lr and batch (the settings); comp chooses its own (train.lr, batch_size auto)
    batch: int
    pretrained: bool = False  # fine-tune from WEIGHTS[model] in weights_dir()
    k: int = 5
    train_folds: int | None = None  # the first N folds only (None: all k)


@dataclass
class Result:
    cv: float
    hidden: float
    seconds: float
    notes: dict = field(default_factory=dict)
    # the hidden-set probabilities behind `hidden` (see Kept); written by --probs, never to --json
    kept: "Kept | None" = field(default=None, repr=False, compare=False)

    @property
    def gap(self) -> float:
        return self.cv - self.hidden


def scratch(name: str, size: int, epochs: int) -> Case:
    return Case(name, name, "test_resnet", size, epochs, 3e-3, 64)


def finetune(data: str, size: int, epochs: int) -> Case:
    return Case(f"{data}-pt", data, "mobilenetv2_100", size, epochs, 1e-3, 32, pretrained=True)


CASES = {c.name: c for c in (scratch("fashion", 32, 10), finetune("fashion", 64, 4),
                             scratch("icons", 32, 12), finetune("icons", 64, 4),
                             scratch("emoji", 48, 10), finetune("emoji", 64, 4),
                             Case("digits", "digits", "test_resnet", 32, 12, 3e-3, 64))}
DEFAULT_CASES = [n for n in CASES if n != "digits"]
QUICK = Case("digits", "digits", "test_resnet", 32, 4, 3e-3, 32)


def weights_dir() -> Path:
    """$COMP_WEIGHTS_DIR, else the weights folder of the `shared` folder beside the repository."""
    return Path(os.environ.get("COMP_WEIGHTS_DIR") or REPO.parent / "shared" / "weights").expanduser()


def weights_file(case: Case) -> Path:
    return weights_dir() / WEIGHTS[case.model][0]


# ---------------------------------------------------------------- comp


def hidden_labels(root: Path, ids: list[str], classes: list[str]) -> np.ndarray:
    """The hidden solution of `ids` as indices into `classes`."""
    solution = pd.read_csv(root / "hidden" / "solution.csv", dtype=str).set_index("id")["label"]
    return np.array([classes.index(v) for v in solution.loc[ids]])


def hidden_score(root: Path, ids: list[str], probs: np.ndarray, classes: list[str], metric: str) -> float:
    from comp.core.metrics import get_metric

    return get_metric(metric)(hidden_labels(root, ids, classes), probs)


def scored(ids: list[str], classes: list[str], y: np.ndarray, ensemble: np.ndarray, folds: list[np.ndarray],
           metric: str) -> tuple[float, list[float], "Kept"]:
    """(the average's hidden score, each fold model's alone, the Kept of them): the solution read once."""
    from comp.core.metrics import get_metric

    score = get_metric(metric)
    return score(y, ensemble), [score(y, f) for f in folds], Kept.of(ids, classes, y, ensemble, folds, metric)


@dataclass
class Kept:
    """One system's hidden-set probabilities in one repeat: the submitted average and each fold model alone,
    columns in sorted class-name order so both systems' files line up (benchmarks/quality_agreement.py reads them)."""
    ids: list[str]
    classes: list[str]
    y: np.ndarray  # (n,) the hidden solution, indices into classes
    ensemble: np.ndarray  # (n, C) the prediction the system's hidden score is of
    folds: np.ndarray  # (k, n, C) each fold model's own prediction of the same rows
    metric: str

    @classmethod
    def of(cls, ids: list[str], classes: list[str], y: np.ndarray, ensemble: np.ndarray, folds: list[np.ndarray],
           metric: str) -> "Kept":
        """From a system's own class order (y indexes `classes`), re-ordered by class name."""
        order = np.argsort(classes, kind="stable")
        rank = np.argsort(order)  # old column -> new column
        return cls(list(ids), [classes[i] for i in order], rank[np.asarray(y)], np.asarray(ensemble)[:, order],
                   np.stack([np.asarray(f)[:, order] for f in folds]), metric)

    def save(self, path: Path) -> Path:
        """An .npz written atomically."""
        import io

        from comp.core.layout import write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, ids=np.array(self.ids), classes=np.array(self.classes), y=self.y,
                            ensemble=self.ensemble, folds=self.folds, metric=np.array(self.metric))
        return write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "Kept":
        with np.load(path, allow_pickle=False) as z:
            return cls([str(v) for v in z["ids"]], [str(v) for v in z["classes"]], z["y"], z["ensemble"], z["folds"],
                       str(z["metric"]))


def run_comp(root: Path, case: Case, extra: list[str], repeat: int = 0) -> Result:
    """comp with its defaults: only model, image size and epochs set (and `extra` overrides; the case's lr and batch
    are the loop's); repeat r trains with train.seed 42 + r (an override in `extra` wins)."""
    import comp
    from comp.core.layout import read_json

    model = {"name": case.model, "pretrained": case.pretrained}
    if case.pretrained:
        model["pretrained_path"] = str(weights_file(case))
    exp = {"model": model, "image": {"size": case.size}, "train": {"epochs": case.epochs}}
    (root / "experiments" / "baseline.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    extra = [f"folds.k={case.k}", *([f"train.seed={42 + repeat}"] if repeat else []), *extra]
    start = time.perf_counter()
    ws = comp.Workspace(root, progress=False)
    ws.folds(k=case.k)
    folds = None if case.train_folds is None else ",".join(str(f) for f in range(case.train_folds))
    scores = ws.fold_train("baseline", overrides=extra, force=True, folds=folds)
    test = ws.predict("baseline", overrides=extra)
    seconds = time.perf_counter() - start
    cfg = ws.config("baseline", extra)
    columns = [c for c in test.columns if c != "id"]  # p_<class>, in comp's class order
    classes = [c[2:] if c.startswith("p_") else c for c in columns]
    ids = test["id"].astype(str).tolist()
    # each fold model alone, read before the re-prediction below rewrites the folds' test.csv
    alone = [t.set_index("id").loc[ids, columns].to_numpy() for t in fold_tests(root)]
    hidden, single, kept = scored(ids, classes, hidden_labels(root, ids, classes), test[columns].to_numpy(), alone,
                                  cfg.metric)
    plain = ws.predict("baseline", tta="none", overrides=extra)  # the same models without test-time augmentation
    saved = read_json(root / "experiments" / "baseline" / "scores.json")
    notes = {"lr": cfg.train.lr, "batch": log_value(root, "train.batch_size auto: ") or cfg.train.batch_size,
             "tta": cfg.tta.transforms,
             "hidden_without_tta": round(hidden_score(root, plain["id"].astype(str).tolist(), plain[columns].to_numpy(),
                                                      classes, cfg.metric), 4),
             "hidden_single": round(float(np.mean(single)), 4), "cv_last_epoch": round(last_epoch_cv(root), 4),
             "best_epochs": scores["best_epoch"].tolist(), "augment": augment_note(root)}
    if saved.get("honest") is not None:
        notes["honest"] = round(float(saved["honest"]), 4)
        notes["honest_source"] = saved.get("honest_source")
    if saved.get("checkpoint") is not None:
        notes["checkpoint"] = saved["checkpoint"]
    return Result(float(scores.attrs["mean"]), hidden, seconds, notes, kept)


def fold_tests(root: Path) -> list[pd.DataFrame]:
    """Each fold model's own test prediction (fold{i}/test.csv), to score the models one at a time."""
    return [pd.read_csv(f, dtype={"id": str}) for f in sorted((root / "experiments" / "baseline").glob("fold*/test.csv"))]


def last_epoch_cv(root: Path) -> float:
    """The mean fold score of the last epoch (history.csv), beside CV of the kept checkpoints."""
    rows = [pd.read_csv(h).iloc[-1]["metric"] for h in sorted((root / "experiments" / "baseline").glob("fold*/history.csv"))]
    return float(np.mean(rows)) if rows else math.nan


def logged(root: Path, prefix: str) -> list[str]:
    """Per fold (fold{i}/train.log, in fold order), the text after `prefix` on the last line that has it."""
    found = []
    for log in sorted((root / "experiments" / "baseline").glob("fold*/train.log")):
        hits = [ln.split(prefix, 1)[1].strip() for ln in log.read_text().splitlines() if prefix in ln]
        found += hits[-1:]
    return found


def log_value(root: Path, prefix: str) -> str:
    """The word after `prefix` in the first fold's log (e.g. the batch size auto chose), or ''."""
    found = logged(root, prefix)
    return found[0].split()[0] if found else ""


def augment_note(root: Path) -> str:
    """The `augment auto` decisions the folds logged, when the preset is auto."""
    return "; ".join(sorted(set(logged(root, "augment auto: "))))


# ---------------------------------------------------------------- the hand-written loop


def random_affine(n: int, g: "object") -> "object":
    """(n, 2, 3) affine matrices: rotate +-10 degrees, scale 0.9-1.1, shift +-6% (torch's normalised coordinates)."""
    import torch

    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def hand_model(case: Case, n_classes: int) -> "object":
    """timm's model with an n_classes head; -pt: the weights file loaded without its classifier."""
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(case.model, pretrained=False, num_classes=n_classes)
    if case.pretrained:
        head = model.get_classifier()
        prefix = next(n for n, m in model.named_modules() if m is head) + "."
        state = {k: v for k, v in load_file(str(weights_file(case))).items() if not k.startswith(prefix)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(prefix) for k in missing):
            raise RuntimeError(f"{weights_file(case)} does not fit {case.model}: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
    return model


def run_hand(root: Path, case: Case, repeat: int = 0) -> Result:
    """A plain timm loop: in-memory tensors, flip + small affine on the batch, AdamW + OneCycle, last epoch, soft vote.
    Repeat r seeds its shuffling and augmentation with r and fold f's initial weights with f + 1000 r."""
    import torch
    import torch.nn.functional as F

    from comp.core.metrics import get_metric

    start = time.perf_counter()
    cfg = yaml.safe_load((root / "comp.yaml").read_text())
    metric = get_metric(cfg["metric"])
    train = pd.read_csv(root / "data" / "train.csv", dtype=str)
    test = pd.read_csv(root / "data" / "test.csv", dtype=str)
    folds = pd.read_csv(root / "folds" / f"k{case.k}-s42.csv", dtype=str).set_index("id").loc[train["id"], "fold"]
    fold_of = torch.tensor(folds.astype(int).to_numpy())
    labels = sorted(train["label"].unique(), key=lambda v: (float(v), v) if v.replace(".", "", 1).isdigit() else (math.inf, v))
    y = torch.tensor([labels.index(v) for v in train["label"]])

    def load(paths: pd.Series) -> torch.Tensor:
        arr = np.stack([np.asarray(Image.open(root / "data" / "images" / p).convert("RGB")
                                   .resize((case.size, case.size), Image.BILINEAR)) for p in paths])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    images, test_images = load(train["path"]), load(test["path"])
    mean_std = WEIGHTS[case.model][1] if case.pretrained else IMAGENET
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in mean_std)

    def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model((x[s: s + 256].float() - mean) / std).softmax(1) for s in range(0, len(x), 256)])

    g = torch.Generator().manual_seed(repeat)
    scores, test_probs, alone = [], torch.zeros(len(test), len(labels)), []
    n_folds = case.train_folds or case.k
    for fold in range(n_folds):
        tr, va = torch.nonzero(fold_of != fold).squeeze(1), torch.nonzero(fold_of == fold).squeeze(1)
        torch.manual_seed(fold + 1000 * repeat)
        model = hand_model(case, len(labels))
        opt = torch.optim.AdamW(model.parameters(), lr=case.lr, weight_decay=0.01)
        steps = len(tr) // case.batch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=case.lr, total_steps=case.epochs * steps)
        for _ in range(case.epochs):
            model.train()
            order = tr[torch.randperm(len(tr), generator=g)]
            for s in range(steps):
                idx = order[s * case.batch: (s + 1) * case.batch]
                x = (images[idx].float() - mean) / std
                flip = torch.rand(len(idx), generator=g) < 0.5
                x[flip] = x[flip].flip(-1)
                grid = F.affine_grid(random_affine(len(idx), g), list(x.shape), align_corners=False)
                x = F.grid_sample(x, grid, align_corners=False)
                loss = F.cross_entropy(model(x), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        probs = predict(model, images[va])
        scores.append(metric(y[va].numpy(), probs.numpy()))
        fold_probs = predict(model, test_images)
        alone.append(fold_probs.numpy())
        test_probs += fold_probs / n_folds
    seconds = time.perf_counter() - start
    ids = test["id"].tolist()
    hidden, single, kept = scored(ids, labels, hidden_labels(root, ids, labels), test_probs.numpy(), alone,
                                  cfg["metric"])
    return Result(float(np.mean(scores)), hidden, seconds, {"hidden_single": round(float(np.mean(single)), 4)}, kept)


# ---------------------------------------------------------------- goals, table, JSON


def goals(comp: Result, hand: Result) -> dict[str, str]:
    """The issue's two checks: comp's hidden >= hand's + 0.02; comp's CV - hidden <= hand's + 0.01."""
    return {"hidden": "met" if comp.hidden >= hand.hidden + GOAL_HIDDEN - 1e-12 else "missed",
            "gap": "met" if comp.gap <= hand.gap + GOAL_GAP + 1e-12 else "missed"}


def mean_result(results: list[Result]) -> Result:
    """The repeats' mean CV, hidden score and seconds (notes from the first repeat)."""
    return Result(float(np.mean([r.cv for r in results])), float(np.mean([r.hidden for r in results])),
                  float(np.mean([r.seconds for r in results])), results[0].notes)


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """The mean and its standard error (None for a single value: no spread to judge by)."""
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None


def paired(comp: list[Result], hand: list[Result]) -> dict:
    """comp - hand per repeat (the same split and folds), with its mean and standard error over the repeats.

    `decided` says whether each goal's verdict holds beyond two standard errors of the mean difference (None
    with one repeat: no spread to judge by)."""
    out: dict = {}
    for key, goal in (("hidden", GOAL_HIDDEN), ("gap", GOAL_GAP)):
        diffs = [getattr(c, key) - getattr(h, key) for c, h in zip(comp, hand)]
        mean, se = mean_se(diffs)
        decided = None if se is None else abs(mean - goal) > 2 * se
        out[key] = {"diffs": [round(d, 4) for d in diffs], "mean": round(mean, 4),
                    "se": None if se is None else round(se, 4), "decided": decided}
    return out


def figures(r: Result) -> dict:
    """A Result as --json writes it (notes beside the scores); from_figures reads it back."""
    return {"cv": r.cv, "hidden": r.hidden, "gap": r.gap, "seconds": round(r.seconds, 1), **r.notes}


def from_figures(fig: dict) -> Result:
    return Result(fig["cv"], fig["hidden"], fig["seconds"],
                  {k: v for k, v in fig.items() if k not in ("cv", "hidden", "gap", "seconds")})


def judged(runs: list[dict[str, Result]]) -> dict:
    """Over a case's repeats: each system's figures (the mean), and with both systems the goals judged on the means
    and the paired comp - hand differences."""
    systems = {s: mean_result([run[s] for run in runs]) for s in runs[0]}
    out: dict = {"systems": {s: figures(r) for s, r in systems.items()}}
    if "comp" in systems and "hand" in systems:
        out["goals"] = goals(systems["comp"], systems["hand"])
        out["paired"] = paired([run["comp"] for run in runs], [run["hand"] for run in runs])
    return out


def case_record(case: Case, root: Path, runs: list[dict[str, Result]], first: int = 0) -> dict:
    """One case's entry in --json: its data and settings, each repeat's figures (repeat i is split first + i), and
    what `judged` works out over them."""
    train = pd.read_csv(root / "data" / "train.csv", dtype=str)
    group = next((c for c in train.columns if c not in ("id", "path", "label")), None)
    return {"case": case.name, "data": case.data, "model": case.model, "pretrained": case.pretrained,
            "size": case.size, "epochs": case.epochs, "lr": case.lr, "batch": case.batch, "k": case.k,
            "folds_trained": case.train_folds or case.k, "n_train": len(train),
            "n_hidden": sum(1 for _ in open(root / "data" / "test.csv")) - 1,
            "n_groups": int(train[group].nunique()) if group else None, "n_classes": int(train["label"].nunique()),
            "repeats": [{"split": first + i, "systems": {s: figures(r) for s, r in run.items()}}
                        for i, run in enumerate(runs)],
            **judged(runs)}


def merge_records(records: list[dict]) -> dict:
    """One case's records from runs over different repeats (--first-repeat) as one record over all their repeats:
    the means, the paired differences and the goals worked out again. The runs must agree on the case's settings
    and comp's overrides (pass each record's run info under "overrides") and not repeat a split."""
    first = records[0]
    settings = ("case", "model", "pretrained", "size", "epochs", "lr", "batch", "k", "folds_trained", "overrides")
    for rec in records[1:]:
        differ = [k for k in settings if rec.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"cannot merge runs of {first['case']!r} that differ in {', '.join(differ)}: "
                             f"{[first.get(k) for k in differ]} vs {[rec.get(k) for k in differ]}")
    repeats = sorted((r for rec in records for r in rec["repeats"]), key=lambda r: r["split"])
    splits = [r["split"] for r in repeats]
    if len(set(splits)) != len(splits):
        raise ValueError(f"cannot merge runs of {first['case']!r}: split {max(splits, key=splits.count)} is in more "
                         "than one; run the extra repeats with --first-repeat past the others")
    return {**first, "repeats": repeats,
            **judged([{s: from_figures(f) for s, f in r["systems"].items()} for r in repeats])}


def merge_files(paths: list[Path], sources: list[dict] | None = None) -> list[dict]:
    """--merge: the cases of several --json files, each case's runs merged (merge_records), in first-seen order.
    `sources` gets each file's name and run record (its commit, start, arguments; a merged file's own sources)."""
    by_case: dict[str, list[dict]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if sources is not None:
            sources.extend(data["run"].get("merged") or [{"file": path.name, **data["run"]}])
        for rec in data["cases"]:
            overrides = rec.get("overrides", data["run"].get("overrides", []))  # a merged file's records keep theirs
            by_case.setdefault(rec["case"], []).append({**rec, "overrides": overrides})
    return [merge_records(recs) for recs in by_case.values()]


def run_info(args: argparse.Namespace) -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
            "overrides": args.overrides, "argv": sys.argv[1:], "goals": {"hidden": f"comp >= hand + {GOAL_HIDDEN}",
                                                                         "gap": f"comp <= hand + {GOAL_GAP}"}}


def print_table(records: list[dict]) -> None:
    """The markdown table: per case and system the mean over the repeats, with CV - hidden split in two by the fold
    models' mean hidden score alone (single): CV - single, what a fold's CV sees, and hidden - single, what averaging
    the folds adds (the ensemble gain); comp's row adds comp - hand on the hidden set (+- its standard error over the
    repeats) and the two goals."""
    print("\n| case | system | repeats | CV | hidden | CV-hidden | single | ensemble gain | seconds | comp - hand hidden "
          "| hidden goal | gap goal |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rec in records:
        for system, r in rec["systems"].items():
            met = rec.get("goals", {}) if system == "comp" else {}
            diff = rec.get("paired", {}).get("hidden") if system == "comp" else None
            diff_text = "" if diff is None else f"{diff['mean']:+.4f}" + (f" +- {diff['se']:.4f}" if diff["se"] else "")
            singles = [x["systems"][system].get("hidden_single") for x in rec.get("repeats", [])]
            single = float(np.mean(singles)) if singles and None not in singles else None
            split = ("| |" if single is None else f"| {single:.4f} | {r['hidden'] - single:+.4f} |")
            print(f"| {rec['case']} | {system} | {len(rec.get('repeats', [1]))} | {r['cv']:.4f} | {r['hidden']:.4f} | "
                  f"{r['gap']:+.4f} {split} {r['seconds']:.0f} | {diff_text} | {met.get('hidden', '')} | "
                  f"{met.get('gap', '')} |")


# ---------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Case]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one tiny case (digits, test_resnet, 4 epochs): the CI smoke")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--systems", default="comp,hand", help="comp,hand (default both)")
    ap.add_argument("--epochs", type=int, help="train.epochs for every case (default: each case's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a comp override for experiments (comp only; repeatable)")
    ap.add_argument("--folds", type=int, help="train only the first N of the k folds (quick experiments; CV and "
                    "hidden then come from those folds)")
    ap.add_argument("--repeats", type=int, default=1, help="train and score each case this many times, repeat r on "
                    "the hidden split drawn with seed r and with training seeds from r; the table shows the means and "
                    "the paired comp - hand difference +- its standard error (default 1)")
    ap.add_argument("--first-repeat", type=int, default=0, help="number the repeats from here (repeats are "
                    "deterministic, so --first-repeat 3 --repeats 3 runs repeats 3-5 of a --repeats 6 run: more "
                    "repeats on a second machine or core; default 0)")
    ap.add_argument("--keep", type=Path, help="build the workspaces under this folder and keep them")
    ap.add_argument("--json", type=Path, help="write every figure here (rewritten after each case)")
    ap.add_argument("--probs", type=Path, help="keep each system's hidden-set probabilities (the average and each "
                    "fold model) in this folder as CASE-splitR-SYSTEM.npz; benchmarks/quality_agreement.py compares them")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON", help="train nothing: merge earlier --json files "
                    "(the same cases run over different --first-repeat ranges) into one table, and into --json")
    ap.add_argument("--threads", type=int, help="torch threads for both systems (default: torch's; 1 is faster "
                    "on 2 cores that other jobs share)")
    args = ap.parse_args(argv)
    if args.quick:
        cases = [QUICK]
    else:
        names = args.cases.split(",")
        unknown = [c for c in names if c not in CASES]
        if unknown:
            ap.error(f"unknown case {unknown[0]!r}; known: {', '.join(CASES)}")
        cases = [CASES[c] for c in names]
    bad = [s for s in args.systems.split(",") if s not in ("comp", "hand")]
    if bad:
        ap.error(f"unknown system {bad[0]!r}; known: comp, hand")
    if args.repeats < 1:
        ap.error(f"--repeats must be 1 or more, got {args.repeats}")
    if args.first_repeat < 0:
        ap.error(f"--first-repeat must be 0 or more, got {args.first_repeat}")
    if args.epochs:
        cases = [replace(c, epochs=args.epochs) for c in cases]
    if args.folds:
        cases = [replace(c, train_folds=args.folds) for c in cases]
    return args, cases


def run_case(case: Case, root: Path, args: argparse.Namespace) -> dict | None:
    """Build, train and score one case with each system, once per repeat; its --json record (None when skipped).

    Repeat r draws the hidden split with seed r and trains comp with train.seed 42 + r and the loop with seed r,
    so the repeats sample both the hidden split's and the training's noise, and each repeat pairs the systems on
    the same split and folds."""
    if case.pretrained and not weights_file(case).is_file():
        print(f"{case.name}: skipped, no weights file {weights_file(case)}; set COMP_WEIGHTS_DIR to the folder "
              f"holding {WEIGHTS[case.model][0]}", flush=True)
        return None
    import comp

    runs: list[dict[str, Result]] = []
    last = args.first_repeat + args.repeats
    for repeat in range(args.first_repeat, last):
        shutil.rmtree(root, ignore_errors=True)
        try:
            BUILDERS[case.data](root, args.quick, split=repeat)
        except Missing as exc:
            print(f"{case.name}: skipped, its data is not installed; get it with: {exc}", flush=True)
            return None
        comp.Workspace(root, progress=False).folds(k=case.k)  # the hand loop trains on comp's folds
        n_train = sum(1 for _ in open(root / "data" / "train.csv")) - 1
        n_test = sum(1 for _ in open(root / "data" / "test.csv")) - 1
        print(f"== {case.name}{f' repeat {repeat + 1}/{last}' if last > 1 else ''}: {n_train} train / "
              f"{n_test} hidden images, {case.model} {case.size}px{' fine-tuned' if case.pretrained else ''}, "
              f"{case.epochs} epochs, the loop's lr {case.lr:g} and batch {case.batch}, {case.train_folds or case.k} of {case.k} "
              "folds", flush=True)
        results: dict[str, Result] = {}
        for system in args.systems.split(","):
            result = run_comp(root, case, args.overrides, repeat) if system == "comp" else run_hand(root, case, repeat)
            results[system] = result
            if args.probs and result.kept is not None:
                result.kept.save(args.probs / f"{case.name}-split{repeat}-{system}.npz")
            extra = "".join(f"  {k} {v}" for k, v in result.notes.items() if v not in (None, "", []))
            print(f"  {system:5s} CV {result.cv:.4f}  hidden {result.hidden:.4f}  gap {result.gap:+.4f}  "
                  f"{result.seconds:7.1f} s{extra}", flush=True)
        runs.append(results)
        if "comp" in results and "hand" in results:
            c, h = results["comp"], results["hand"]
            verdict = goals(c, h)
            print(f"  comp - hand: hidden {c.hidden - h.hidden:+.4f} ({verdict['hidden']}: >= +{GOAL_HIDDEN})  "
                  f"gap {c.gap - h.gap:+.4f} ({verdict['gap']}: <= +{GOAL_GAP})  seconds {c.seconds / h.seconds:.3f}",
                  flush=True)
    record = case_record(case, root, runs, first=args.first_repeat)
    if "paired" in record and args.repeats > 1:
        p = record["paired"]
        print(f"  over {args.repeats} repeats, comp - hand: hidden {p['hidden']['mean']:+.4f} +- {p['hidden']['se']:.4f} "
              f"({record['goals']['hidden']}{'' if p['hidden']['decided'] else ', within 2 SE of the goal'})  gap "
              f"{p['gap']['mean']:+.4f} +- {p['gap']['se']:.4f} ({record['goals']['gap']}"
              f"{'' if p['gap']['decided'] else ', within 2 SE of the goal'})", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    args, cases = parse_args(argv)
    import torch

    from comp.core.layout import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        sources: list[dict] = []
        records = merge_files(args.merge, sources)
        print_table(records)
        if args.json:
            write_json(args.json, {"run": {**run_info(args), "merged": sources}, "cases": records})
            print(f"wrote {args.json}")
        return 0
    info = run_info(args)
    print(f"torch threads {info['torch_threads']}; comp overrides: {args.overrides or 'none'}", flush=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for case in cases:
            record = run_case(case, base / case.name, args)
            if record is not None:
                records.append(record)
                if args.json:
                    write_json(args.json, {"run": info, "cases": records})
    print_table(records)
    if args.json:
        write_json(args.json, {"run": info, "cases": records})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
