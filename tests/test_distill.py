"""train.distill: teacher targets from models that held out the row and the student's validation fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

import comp.train.fold_train as train
from comp.core.config import load_config
from comp.core.errors import CompError
from comp.infer.predict import predict_experiment
from comp.recipes.pseudo import make_pseudo
from comp.train.targets import RowTargets
from comp.recipes.inputs import experiment_recipes
from comp.train.fold_train import fold_train as fold_train_only
from comp.core.layout import Layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 3


def fold_train(cfg, ws, exp, **kwargs):
    """fold_train with the experiment's recipes handed in, as comp.api.workflows does."""
    return fold_train_only(cfg, ws, exp, recipes=experiment_recipes(cfg, ws, exp), **kwargs)


def write_student(root: Path, **distill) -> None:
    base = yaml.safe_load((root / "experiments" / "baseline.yaml").read_text())
    base["train"]["distill"] = {"teacher": "baseline", "alpha": 0.5, "temperature": 2.0, **distill}
    (root / "experiments" / "student.yaml").write_text(yaml.safe_dump(base))


def test_teacher_targets_never_come_from_a_model_trained_on_the_students_fold(tiny_ws: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Layout.at(tiny_ws)
    fast = [f"folds.k={K}", "train.epochs=1"]
    fold_train(load_config(tiny_ws, "baseline", fast), ws, "baseline")
    teacher_cfg = load_config(tiny_ws, "baseline", fast)
    predict_experiment(teacher_cfg.model_copy(update={"tta": teacher_cfg.tta.model_copy(update={"transforms": "none"})}),
                       ws, "baseline")
    # the student also trains on pseudo-labelled test rows (hard labels from a plain CSV, for every fold)
    labels = tiny_ws / "labels.csv"
    pd.read_csv(tiny_ws / "solution.csv").to_csv(labels, index=False)
    make_pseudo(ws, str(labels), "student", threshold=0.0, soft=False, base="baseline")
    doc = yaml.safe_load((tiny_ws / "experiments" / "student.yaml").read_text())
    doc["train"]["distill"] = {"teacher": "baseline", "alpha": 0.5, "temperature": 2.0}
    (tiny_ws / "experiments" / "student.yaml").write_text(yaml.safe_dump(doc))
    seen = {}
    real = train.fit_fold

    def fit_fold(job, **kwargs):
        seen[job.fold] = (job.tables.train["id"].astype(str).to_numpy(), np.asarray(job.fold_of).copy(), job.targets)
        return real(job, **kwargs)

    monkeypatch.setattr(train, "fit_fold", fit_fold)
    scores = fold_train(load_config(tiny_ws, "student", fast), ws, "student")
    assert scores["complete"] and scores["distill"]["teacher"] == "baseline"
    pairs = tiny_ws / "experiments" / "baseline" / "pairs"
    for f, (ids, fold_of, targets) in seen.items():
        assert targets is not None and targets.alpha == 0.5 and targets.temperature == 2.0
        assert np.isnan(targets.teacher[fold_of == f]).all()  # validation rows get no teacher target
        # pseudo rows: the teacher's fold-f model's test probabilities (it never saw fold f)
        pseudo = np.flatnonzero(fold_of == -1)
        assert len(pseudo) == 9
        own_test = pd.read_csv(tiny_ws / "experiments" / "baseline" / f"fold{f}" / "test.csv", dtype={"id": str})
        own_test = own_test.set_index("id")
        want = own_test.loc[[i.removeprefix("pseudo:") for i in ids[pseudo]], ["p_c0", "p_c1", "p_c2"]].to_numpy()
        assert np.allclose(targets.teacher[pseudo], want, atol=1e-6)
        for g in sorted(set(range(K)) - {f}):
            pair = torch.load(pairs / f"fold{min(f, g)}-{max(f, g)}" / "best.pt", weights_only=True)
            held = set(pair["val_ids"])
            # the pair model held out both the row's fold and the student's fold: it trained on neither
            assert held == set(ids[np.isin(fold_of, [f, g])])
            prob_of = dict(zip(pair["val_ids"], pair["val_probs"].numpy()))
            rows = np.flatnonzero(fold_of == g)
            assert np.allclose(targets.teacher[rows], np.stack([prob_of[i] for i in ids[rows]]), atol=1e-6)
        # and no teacher model trained on fold f's rows made them: never the teacher's own fold models' OOF
        for g in sorted(set(range(K)) - {f}):
            own = torch.load(tiny_ws / "experiments" / "baseline" / f"fold{g}" / "best.pt", weights_only=True)
            rows = np.flatnonzero(fold_of == g)
            plain = dict(zip(own["val_ids"], own["val_probs"].numpy()))
            assert not np.allclose(targets.teacher[rows], np.stack([plain[i] for i in ids[rows]]), atol=1e-4)
    assert len(list(pairs.iterdir())) == K * (K - 1) // 2  # each pair trained once, shared by both its folds


def test_the_loss_mixes_labels_and_the_tempered_teacher() -> None:
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32)
    teacher = rng.dirichlet(np.ones(3), size=6)
    y = np.array([0, 1, 2, 1, 0, 2])
    rows = torch.tensor([5, 0, 3, 1])
    targets = RowTargets(y=y, teacher=teacher, alpha=0.3, temperature=2.0)
    got = targets.loss(torch.nn.CrossEntropyLoss(), logits, rows).item()
    t = teacher[rows.numpy()] ** 0.5
    t /= t.sum(axis=1, keepdims=True)
    s = torch.softmax(logits / 2.0, dim=1).numpy()
    kl = float(np.mean(np.sum(t * (np.log(t) - np.log(s)), axis=1)))
    ce = float(F.cross_entropy(logits, torch.tensor(y[rows.numpy()])))
    assert got == pytest.approx(0.7 * ce + 0.3 * 4.0 * kl, rel=1e-5)


def test_a_teacher_on_other_folds_or_itself_is_refused(tiny_ws: Path) -> None:
    ws = Layout.at(tiny_ws)
    fold_train(load_config(tiny_ws, "baseline", ["folds.k=2", "train.epochs=1"]), ws, "baseline")
    write_student(tiny_ws)
    with pytest.raises(CompError, match="trained on folds/k2-s42.csv"):
        fold_train(load_config(tiny_ws, "student", [f"folds.k={K}", "train.epochs=1"]), ws, "student")
    with pytest.raises(CompError, match="is the experiment itself"):
        fold_train(load_config(tiny_ws, "baseline", ["folds.k=2", "train.epochs=1", "train.distill.teacher=baseline"]),
                   ws, "baseline", force=True)
    with pytest.raises(CompError, match="folds.k of 3 or more"):
        fold_train(load_config(tiny_ws, "student", ["folds.k=2", "train.epochs=1"]), ws, "student", force=True)
    with pytest.raises(CompError, match="train.distill.alpha"):
        load_config(tiny_ws, "student", ["train.distill.alpha=2"])
