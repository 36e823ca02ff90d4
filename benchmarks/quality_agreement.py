"""Where one system's average of fold models wins: the hidden-set probabilities `quality.py --probs` kept, compared.

    .venv/bin/python benchmarks/quality.py --cases fashion-pt --repeats 3 --probs probs/
    .venv/bin/python benchmarks/quality_agreement.py probs/

For each case and split that both systems ran on, one row (comp - loop, the loop being quality.py's `hand`):
  hidden        the submitted averages scored in accuracy and in macro-F1, whatever the case's metric
  ensemble gain the average's accuracy minus its fold models' mean accuracy alone, per system
  disagreement  how often two fold models of a system predict different classes (mean over the pairs)
  any right     the share of rows that at least one fold model gets right
  class         the class whose predicted share differs most between the two averages: its true share, each
                average's predicted share and each average's recall of it
then the means over the splits, with the standard error of each paired comp - loop difference.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import Kept, mean_se  # noqa: E402

NAME = re.compile(r"^(?P<case>.+)-split(?P<split>\d+)-(?P<system>comp|hand)\.npz$")


def load(folders: list[Path]) -> dict[tuple[str, int], dict[str, Kept]]:
    """{(case, split): {system: Kept}} for the splits both systems ran on."""
    found: dict[tuple[str, int], dict[str, Kept]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.npz")):
            m = NAME.match(path.name)
            if m:
                found.setdefault((m["case"], int(m["split"])), {})[m["system"]] = Kept.load(path)
    return {key: pair for key, pair in sorted(found.items()) if set(pair) == {"comp", "hand"}}


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def figures(k: Kept) -> dict:
    """One system's average and fold models on the hidden rows."""
    pred, alone = k.ensemble.argmax(1), k.folds.argmax(2)
    n = len(k.classes)
    pairs = list(itertools.combinations(range(len(alone)), 2))
    return {
        "accuracy": float(np.mean(pred == k.y)),
        "macro_f1": macro_f1(k.y, pred, n),
        "single": float(np.mean(alone == k.y[None])),
        "single_f1": float(np.mean([macro_f1(k.y, a, n) for a in alone])),
        "disagreement": float(np.mean([np.mean(alone[i] != alone[j]) for i, j in pairs])) if pairs else 0.0,
        "any_right": float(np.mean((alone == k.y[None]).any(0))),
        "share": np.bincount(pred, minlength=n) / len(pred),
        "recall": np.array([np.mean(pred[k.y == c] == c) if np.any(k.y == c) else np.nan for c in range(n)]),
    }


def compare(comp: Kept, hand: Kept) -> dict:
    """One split: both systems' figures, and the class whose predicted share differs most between them."""
    if comp.classes != hand.classes or sorted(comp.ids) != sorted(hand.ids):
        raise ValueError("the two systems' files are not of the same hidden rows and classes; were they written by "
                         "the same quality.py run (one case, one --first-repeat)?")
    order = {i: n for n, i in enumerate(hand.ids)}
    at = np.array([order[i] for i in comp.ids])
    hand = Kept(comp.ids, hand.classes, hand.y[at], hand.ensemble[at], hand.folds[:, at], hand.metric)
    c, h = figures(comp), figures(hand)
    cls = int(np.argmax(np.abs(c["share"] - h["share"])))
    return {"comp": c, "hand": h, "class": comp.classes[cls], "true_share": float(np.mean(comp.y == cls)),
            "comp_share": float(c["share"][cls]), "hand_share": float(h["share"][cls]),
            "comp_recall": float(c["recall"][cls]), "hand_recall": float(h["recall"][cls])}


def shown(values: list[float]) -> str:
    mean, se = mean_se(values)
    return f"{mean:+.3f} +- {float('nan') if se is None else se:.3f}"


def table(rows: dict[tuple[str, int], dict]) -> list[str]:
    out = ["| case | split | comp - loop accuracy | comp - loop macro-F1 | ensemble gain comp / loop | "
           "disagreement comp / loop | any right comp / loop | class: true share / comp / loop share | "
           "its recall comp / loop |", "| --- " * 9 + "|"]
    for (case, split), r in rows.items():
        c, h = r["comp"], r["hand"]
        out.append(f"| {case} | {split} | {c['accuracy'] - h['accuracy']:+.3f} | {c['macro_f1'] - h['macro_f1']:+.3f} | "
                   f"{c['accuracy'] - c['single']:+.3f} / {h['accuracy'] - h['single']:+.3f} | "
                   f"{c['disagreement']:.3f} / {h['disagreement']:.3f} | {c['any_right']:.3f} / {h['any_right']:.3f} | "
                   f"{r['class']}: {r['true_share']:.3f} / {r['comp_share']:.3f} / {r['hand_share']:.3f} | "
                   f"{r['comp_recall']:.2f} / {r['hand_recall']:.2f} |")
    for case in sorted({case for case, _ in rows}):
        rs = [r for (c, _), r in rows.items() if c == case]

        def diff(key: str, rs: list[dict] = rs) -> str:
            return shown([r["comp"][key] - r["hand"][key] for r in rs])

        gain = shown([(r["comp"]["accuracy"] - r["comp"]["single"]) - (r["hand"]["accuracy"] - r["hand"]["single"])
                        for r in rs])
        out.append(f"\n{case}, {len(rs)} splits, comp - loop: accuracy {diff('accuracy')}, macro-F1 {diff('macro_f1')}, "
                   f"fold models alone {diff('single')} (macro-F1 {diff('single_f1')}), ensemble gain {gain}, "
                   f"disagreement {diff('disagreement')}, any right {diff('any_right')}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="folders of quality.py --probs files")
    args = ap.parse_args(argv)
    pairs = load(args.folders)
    if not pairs:
        ap.error(f"no split with both systems' files (CASE-splitR-comp.npz and CASE-splitR-hand.npz) in "
                 f"{', '.join(map(str, args.folders))}; write them with quality.py --probs FOLDER")
    print("\n".join(table({key: compare(p["comp"], p["hand"]) for key, p in pairs.items()})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
