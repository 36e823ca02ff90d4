"""benchmarks/quality.py: the cases' hidden splits keep groups whole, and --quick trains and scores both systems."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCORE = r"CV (\d\.\d{4})  hidden (\d\.\d{4})  gap ([+-]\d\.\d{4})\s+(\d+\.\d) s"


@pytest.fixture
def quality(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import quality
    import quality_cases

    return quality, quality_cases


def test_hidden_split_keeps_groups_whole_and_draws_each_class(quality):
    _, cases = quality
    rng = np.random.default_rng(1)
    groups = pd.Series([f"g{i // 3}" for i in range(300)])  # 100 groups of 3
    labels = pd.Series([f"c{(i // 3) % 4}" for i in range(300)])
    hidden = cases.draw_hidden(labels, groups, share=0.22, seed=int(rng.integers(100)))
    per_group = pd.Series(hidden).groupby(groups).nunique()
    assert (per_group == 1).all()  # a group is all hidden or all train
    share = pd.Series(hidden).groupby(labels).mean()
    assert ((share > 0.15) & (share < 0.3)).all(), share  # about 22% of every class's groups
    assert cases.draw_hidden(labels, groups, seed=3).tolist() == cases.draw_hidden(labels, groups, seed=3).tolist()


def test_lookalike_groups_cluster_near_identical_images(quality):
    _, cases = quality
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (6, 28, 28))
    images = np.concatenate([np.clip(p + rng.normal(0, 4, (7, 28, 28)), 0, 255) for p in protos]).astype(np.uint8)
    groups = cases.lookalike_groups(images, per_group=7)
    assert len(set(groups)) == 6
    assert all(len(set(groups[i * 7:(i + 1) * 7])) == 1 for i in range(6))  # each prototype's copies in one group


def test_pick_emoji_caps_groups_and_classes_and_keeps_groups_whole(quality):
    _, cases = quality
    rows = pd.DataFrame([{"subcategory": f"s{c}", "group": f"s{c}-{g}", "vendor": v, "variant": f"s{c}-{g}-{t}",
                          "file": "x.png"}
                         for c in range(3) for g in range(10 + 5 * c) for t in range(6 if g % 2 else 1)
                         for v in ("google", "twitter")])
    picked = cases.pick_emoji(rows, n_classes=2, per_group=6, per_class=30)
    assert set(picked["subcategory"]) == {"s2", "s1"}  # the subcategories with the most emoji
    assert picked.groupby("group").size().max() <= 6
    assert picked.groupby("subcategory").size().max() <= 30
    for g, part in picked.groupby("group"):  # every drawn skin tone in both vendors
        assert (part.groupby("variant")["vendor"].nunique() == 2).all(), g


def test_pretrained_cases_are_skipped_without_weights(quality, tmp_path, monkeypatch, capsys):
    q, _ = quality
    monkeypatch.setenv("COMP_WEIGHTS_DIR", str(tmp_path / "none"))
    args, cases = q.parse_args(["--cases", "icons-pt"])
    assert q.run_case(cases[0], tmp_path / "ws", args) is None
    assert "COMP_WEIGHTS_DIR" in capsys.readouterr().out
    assert not (tmp_path / "ws").exists()


def test_goals_are_the_issues_two_checks(quality):
    q, _ = quality
    hand = q.Result(cv=0.80, hidden=0.80, seconds=1)
    assert q.goals(q.Result(0.83, 0.82, 1), hand) == {"hidden": "met", "gap": "met"}
    assert q.goals(q.Result(0.85, 0.81, 1), hand) == {"hidden": "missed", "gap": "missed"}


def test_repeats_pair_the_systems_and_judge_the_goals_on_the_mean(quality):
    q, _ = quality
    hand = [q.Result(0.70, 0.75, 1), q.Result(0.72, 0.70, 1), q.Result(0.71, 0.80, 1)]
    # comp beats the loop by 0.05 on every split's hidden set, whatever the split's own level
    comp = [q.Result(h.cv + 0.01, h.hidden + 0.05 + d, 1) for h, d in zip(hand, (-0.004, 0.0, 0.004))]
    p = q.paired(comp, hand)
    assert p["hidden"]["diffs"] == [0.046, 0.05, 0.054] and p["hidden"]["mean"] == 0.05
    assert p["hidden"]["se"] == pytest.approx(0.004 / np.sqrt(3), abs=1e-4)
    assert p["hidden"]["decided"] is True  # 0.05 is far beyond +0.02 at this spread
    # a spread as wide as the margin leaves the verdict undecided
    noisy = [q.Result(h.cv, h.hidden + 0.03 + d, 1) for h, d in zip(hand, (-0.05, 0.0, 0.05))]
    assert q.paired(noisy, hand)["hidden"]["decided"] is False
    assert q.paired(comp[:1], hand[:1])["hidden"]["se"] is None  # one repeat: no spread
    assert q.mean_result(comp).hidden == pytest.approx(np.mean([r.hidden for r in comp]))


def test_repeats_must_be_positive(quality, capsys):
    q, _ = quality
    with pytest.raises(SystemExit):
        q.parse_args(["--cases", "emoji", "--repeats", "0"])
    assert "--repeats must be 1 or more, got 0" in capsys.readouterr().err


def test_first_repeat_must_not_be_negative(quality, capsys):
    q, _ = quality
    with pytest.raises(SystemExit):
        q.parse_args(["--cases", "emoji", "--first-repeat", "-1"])
    assert "--first-repeat must be 0 or more, got -1" in capsys.readouterr().err


def quality_file(path, q, splits, overrides=(), case="emoji"):
    """A --json file of one case over `splits`, its figures drawn per split (the same split: the same figures)."""
    def figures(split, system):
        rng = np.random.default_rng([split, system == "comp"])
        cv, hidden = rng.uniform(0.6, 0.8, 2)
        return {"cv": cv, "hidden": hidden, "gap": cv - hidden, "seconds": 10.0 + split, "hidden_single": hidden - 0.01}

    runs = [{s: q.Result(**{k: v for k, v in figures(i, s).items() if k in ("cv", "hidden", "seconds")})
             for s in ("comp", "hand")} for i in splits]
    rec = {"case": case, "model": "m", "pretrained": False, "size": 32, "epochs": 2, "lr": 0.1, "batch": 8, "k": 5,
           "folds_trained": 5, "repeats": [{"split": i, "systems": {s: figures(i, s) for s in ("comp", "hand")}}
                                           for i in splits],
           "paired": q.paired([r["comp"] for r in runs], [r["hand"] for r in runs])}
    path.write_text(json.dumps({"run": {"overrides": list(overrides)}, "cases": [rec]}))
    return rec


def test_merged_runs_judge_the_goals_as_one_run_over_all_repeats(quality, tmp_path):
    q, _ = quality
    whole = quality_file(tmp_path / "all.json", q, [0, 1, 2, 3])
    quality_file(tmp_path / "b.json", q, [2, 3])
    quality_file(tmp_path / "a.json", q, [0, 1])
    sources = []
    [merged] = q.merge_files([tmp_path / "b.json", tmp_path / "a.json"], sources)
    assert [r["split"] for r in merged["repeats"]] == [0, 1, 2, 3]
    assert [s["file"] for s in sources] == ["b.json", "a.json"]  # where each repeat's run came from
    assert merged["paired"] == whole["paired"]
    assert merged["systems"]["comp"]["hidden"] == pytest.approx(np.mean([r["systems"]["comp"]["hidden"]
                                                                         for r in whole["repeats"]]))
    assert merged["systems"]["hand"]["hidden_single"] is not None  # notes ride along


def test_the_table_splits_cv_minus_hidden_by_the_fold_models_alone(quality, tmp_path, capsys):
    q, _ = quality
    rec = quality_file(tmp_path / "a.json", q, [0, 1])
    [merged] = q.merge_files([tmp_path / "a.json"])
    q.print_table([merged])
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| emoji | comp |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    single = np.mean([r["systems"]["comp"]["hidden_single"] for r in rec["repeats"]])
    hidden = np.mean([r["systems"]["comp"]["hidden"] for r in rec["repeats"]])
    assert float(cells[6]) == pytest.approx(single, abs=1e-4)
    assert float(cells[7]) == pytest.approx(hidden - single, abs=1e-4)  # the ensemble gain


def test_merge_refuses_a_split_twice_and_runs_that_differ(quality, tmp_path):
    q, _ = quality
    quality_file(tmp_path / "a.json", q, [0, 1])
    quality_file(tmp_path / "b.json", q, [1, 2])
    with pytest.raises(ValueError, match="split 1 is in more than one; run the extra repeats with --first-repeat"):
        q.merge_files([tmp_path / "a.json", tmp_path / "b.json"])
    quality_file(tmp_path / "c.json", q, [2, 3], overrides=["train.ema=true"])
    with pytest.raises(ValueError, match=r"differ in overrides: \[\[\]\] vs \[\['train.ema=true'\]\]"):
        q.merge_files([tmp_path / "a.json", tmp_path / "c.json"])


def kept_pair(q, root):
    """Both systems' kept probabilities on 4 hidden rows of 3 classes (given in an unsorted order), 2 fold models
    each: comp's folds disagree on r3 only; the loop's on r0 and r3, and its average never predicts "b"."""
    (root / "hidden").mkdir(parents=True)
    pd.DataFrame({"id": ["r0", "r1", "r2", "r3"], "label": ["a", "b", "c", "b"]}).to_csv(root / "hidden" / "solution.csv",
                                                                                        index=False)
    classes = ["c", "a", "b"]  # columns in this order below

    def onehot(*labels, p=0.8):
        out = np.full((len(labels), 3), (1 - p) / 2)
        out[np.arange(len(labels)), [classes.index(v) for v in labels]] = p
        return out

    ids = ["r0", "r1", "r2", "r3"]
    comp_folds = [onehot("a", "b", "c", "b"), onehot("a", "b", "c", "a", p=0.6)]  # the first wins row 3
    comp = q.Kept.of(ids, classes, q.hidden_labels(root, ids, classes), np.mean(comp_folds, 0), comp_folds,
                      "accuracy")
    rev = ids[::-1]  # the loop wrote its rows in another order
    hand_folds = [onehot("c", "c", "c", "a")[::-1], onehot("a", "c", "c", "c")[::-1]]  # ties go to "a"
    hand = q.Kept.of(rev, classes, q.hidden_labels(root, rev, classes), np.mean(hand_folds, 0), hand_folds,
                      "accuracy")
    return comp, hand


def test_kept_probabilities_round_trip_in_sorted_class_order(quality, tmp_path):
    q, _ = quality
    comp, _ = kept_pair(q, tmp_path / "ws")
    assert comp.classes == ["a", "b", "c"] and comp.y.tolist() == [0, 1, 2, 1]
    assert comp.ensemble.argmax(1).tolist() == [0, 1, 2, 1]  # the columns moved with their class names
    back = q.Kept.load(comp.save(tmp_path / "probs" / "emoji-split0-comp.npz"))
    assert back.ids == comp.ids and back.classes == comp.classes and back.metric == "accuracy"
    assert np.array_equal(back.folds, comp.folds) and np.array_equal(back.ensemble, comp.ensemble)


def test_agreement_compares_the_systems_row_by_row(quality, tmp_path, monkeypatch, capsys):
    q, _ = quality
    import quality_agreement as qa

    comp, hand = kept_pair(q, tmp_path / "ws")
    comp.save(tmp_path / "probs" / "emoji-split3-comp.npz")
    hand.save(tmp_path / "probs" / "emoji-split3-hand.npz")
    hand.save(tmp_path / "probs" / "emoji-split4-hand.npz")  # no comp file: not a pair
    pairs = qa.load([tmp_path / "probs"])
    assert list(pairs) == [("emoji", 3)]
    r = qa.compare(pairs["emoji", 3]["comp"], pairs["emoji", 3]["hand"])
    c, h = r["comp"], r["hand"]
    # comp: folds right on 4 and 3 of 4 rows, disagree on 1, the average right on all 4
    assert (c["accuracy"], c["single"], c["disagreement"], c["any_right"]) == (1.0, 0.875, 0.25, 1.0)
    # the loop (rows re-aligned to comp's order): folds right on 1 and 2 of 4, disagree on r0 and r3
    assert (h["single"], h["disagreement"], h["any_right"]) == (0.375, 0.5, 0.5)
    assert h["share"][1] == 0.0 and r["class"] == "b" and (r["true_share"], r["comp_share"], r["hand_share"]) == (0.5, 0.5, 0.0)
    assert (r["comp_recall"], r["hand_recall"]) == (1.0, 0.0)
    assert qa.main([str(tmp_path / "probs")]) == 0
    assert re.search(r"^\| emoji \| 3 \| \+0\.\d{3} \|", capsys.readouterr().out, re.M)
    with pytest.raises(SystemExit):
        qa.main([str(tmp_path / "ws")])
    assert "no split with both systems' files" in capsys.readouterr().err
    other = q.Kept(hand.ids, ["a", "b", "x"], hand.y, hand.ensemble, hand.folds, "accuracy")
    with pytest.raises(ValueError, match="not of the same hidden rows and classes"):
        qa.compare(comp, other)


@pytest.mark.slow
def test_quick_quality_run_scores_both_systems(tmp_path):
    out_json = tmp_path / "quality.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--keep", str(tmp_path),
                           "--json", str(out_json), "--probs", str(tmp_path / "probs")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    scores = {m.group(1): m.groups()[1:] for m in re.finditer(r"^  (comp|hand)\s+" + SCORE, out, re.M)}
    assert set(scores) == {"comp", "hand"}, out
    for system, (cv, hidden, gap, seconds) in scores.items():
        assert 0.0 <= float(cv) <= 1.0 and 0.0 <= float(hidden) <= 1.0 and float(seconds) > 0, (system, out)
        assert abs(float(cv) - float(hidden) - float(gap)) < 2e-4, (system, out)
    assert re.search(r"comp - hand: hidden [+-]\d\.\d{4} \((met|missed).*gap [+-]\d\.\d{4} \((met|missed)", out), out
    assert re.search(r"^\| digits \| comp \| .* \| (met|missed) \| (met|missed) \|$", out, re.M), out
    assert "| digits | hand |" in out
    # the run's augmentation decision was recorded in the folds' logs and reported
    assert re.search(r"augment .*flip (on|off)", out), out
    # the hidden solution stayed out of the data comp was given
    assert not list((tmp_path / "digits" / "data").glob("*solution*"))
    record = json.loads(out_json.read_text())["cases"][0]
    assert record["case"] == "digits" and set(record["systems"]) == {"comp", "hand"}
    assert set(record["goals"]) == {"hidden", "gap"} and record["systems"]["comp"]["checkpoint"]
    # the kept probabilities are of the submitted prediction: both systems submit the mean of their fold models
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality

    from comp.core.metrics import get_metric

    for system in ("comp", "hand"):
        kept = quality.Kept.load(tmp_path / "probs" / f"digits-split0-{system}.npz")
        assert kept.folds.shape == (5, len(kept.ids), len(kept.classes)) and len(kept.y) == len(kept.ids)
        assert np.allclose(kept.ensemble, kept.folds.mean(0), atol=2e-6), system
        assert get_metric(kept.metric)(kept.y, kept.ensemble) == pytest.approx(record["systems"][system]["hidden"]), system
