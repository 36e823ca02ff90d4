"""Task kinds: targets from train.csv, combining heads, metrics against sklearn, losses, thresholds, submissions."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from comp.core.config import Config
from comp.blend.ensemble import apply_thresholds, blend, fit_blend, fit_thresholds
from comp.core.errors import CompError
from comp.model.losses import AsymmetricLoss, BCELoss, MultiHeadLoss, RegressionLoss, positive_weights
from comp.core.metrics import get_metric
from comp.blend.submission import build_submission, validate_submission
from comp.core.tasks import Combiner, Head, Task, combos_of, quantile_bins

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- combining heads


def test_combine_expression_rebuilds_the_face_mask_label():
    combine = Combiner.parse("mask*6 + gender*3 + age", ["mask", "gender", "age"])
    got = {combine((str(m), str(g), str(a))) for m, g, a in itertools.product(range(3), range(2), range(3))}
    assert got == {str(i) for i in range(18)}
    assert combine(("2", "1", "2")) == "17"


@pytest.mark.parametrize("spec, words", [
    ("__import__('os').system('true')", "Call"),
    ("mask.real", "Attribute"),
    ("mask + x", "'x'"),
    ("mask * 1.5", "1.5"),
    ("mask +", "not an arithmetic expression"),
])
def test_combine_refuses_anything_but_arithmetic_of_heads(spec, words):
    with pytest.raises(CompError, match="data.combine") as err:
        Combiner.parse(spec, ["mask", "gender"])
    assert words in str(err.value)


def test_combine_mapping_and_a_missing_entry():
    combine = Combiner.parse({"wear male": "a", "none male": "b"}, ["mask", "gender"])
    assert combine(("wear", "male")) == "a"
    with pytest.raises(CompError, match="no entry for head values 'none female'"):
        combine(("none", "female"))


def test_joint_probabilities_sum_over_the_combinations_of_each_label():
    heads = (Head("a", "a", ("0", "1", "2")), Head("b", "b", ("0", "1")))
    combine = Combiner.parse("a + b", ["a", "b"])
    labels, combos = combos_of(heads, combine, sorted)
    task = Task("multitask", tuple(f"{h.name}={c}" for h in heads for c in h.classes), labels=labels, heads=heads,
                combine=combine, combos=combos)
    pa, pb = RNG.dirichlet(np.ones(3), size=5), RNG.dirichlet(np.ones(2), size=5)
    got = task.class_probs(np.hstack([pa, pb]))
    want = np.zeros((5, 4))  # a + b in 0..3, each summed over its (a, b) pairs
    for i, j in itertools.product(range(3), range(2)):
        want[:, i + j] += pa[:, i] * pb[:, j]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_combinations_never_seen_in_training_are_not_labels():
    heads = (Head("a", "a", ("0", "1")), Head("b", "b", ("0", "1")))
    combine = Combiner.parse("a*2 + b", ["a", "b"])
    labels, combos = combos_of(heads, combine, sorted, seen=np.array([[0, 0], [1, 1], [1, 1]]))
    assert labels == ("0", "3")
    assert combos == (0, -1, -1, 1)
    task = Task("multitask", ("a=0", "a=1", "b=0", "b=1"), labels=labels, heads=heads, combine=combine, combos=combos)
    probs = task.class_probs(np.array([[0.9, 0.1, 0.2, 0.8]]))  # joint: (0,0) .18, (1,1) .08; the rest dropped
    np.testing.assert_allclose(probs, [[0.18 / 0.26, 0.08 / 0.26]])


def test_quantile_bins_are_balanced_and_monotone():
    values = RNG.normal(size=1000)
    codes = quantile_bins(values, 10)
    assert np.bincount(codes).min() >= 95
    assert np.all(np.diff(codes[np.argsort(values)]) >= 0)


# ---------------------------------------------------------------- metrics against sklearn


def test_multilabel_metrics_match_sklearn():
    y = (RNG.random((60, 4)) < 0.4).astype(float)
    p = np.clip(y * 0.6 + RNG.random((60, 4)) * 0.5, 0, 1)
    task = Task("multilabel", ("a", "b", "c", "d"), labels=("a", "b", "c", "d"))
    for name, average in (("micro_f1", "micro"), ("macro_f1", "macro"), ("samples_f1", "samples")):
        want = skm.f1_score(y.astype(int), (p >= 0.5).astype(int), average=average, zero_division=0)
        assert get_metric(name, task)(y, p) == pytest.approx(want)
    assert get_metric("map", task)(y, p) == pytest.approx(np.mean([skm.average_precision_score(y[:, j], p[:, j]) for j in range(4)]))
    assert get_metric("roc_auc", task)(y, p) == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert get_metric("log_loss", task)(y, p) == pytest.approx(np.mean([skm.log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(4)]))


def test_binary_and_regression_metrics_match_sklearn():
    y = (RNG.random(80) < 0.3).astype(float)
    p = np.clip(0.5 * y + 0.6 * RNG.random(80), 0, 1)[:, None]
    binary = Task("binary", ("1",), labels=("0", "1"))
    assert get_metric("roc_auc", binary)(y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 0]))
    assert get_metric("log_loss", binary)(y, p) == pytest.approx(skm.log_loss(y, p[:, 0]))
    assert get_metric("f1", binary)(y, p) == pytest.approx(skm.f1_score(y, p[:, 0] >= 0.5))
    assert get_metric("macro_f1", binary)(y, p) == pytest.approx(skm.f1_score(y, p[:, 0] >= 0.5, average="macro"))
    t = RNG.normal(size=50) * 3
    v = (t + RNG.normal(size=50))[:, None]
    reg = Task("regression", ("score",), scale=(-9.0, 9.0))
    assert get_metric("rmse", reg)(t, v) == pytest.approx(np.sqrt(skm.mean_squared_error(t, v[:, 0])))
    assert get_metric("mae", reg)(t, v) == pytest.approx(skm.mean_absolute_error(t, v[:, 0]))
    assert get_metric("r2", reg)(t, v) == pytest.approx(skm.r2_score(t, v[:, 0]))
    assert not get_metric("rmse", reg).greater_is_better


def test_multitask_metric_is_the_combined_label_or_the_mean_of_heads():
    heads = (Head("a", "a", ("0", "1", "2")), Head("b", "b", ("0", "1")))
    y = np.stack([RNG.integers(0, 3, 90), RNG.integers(0, 2, 90)], axis=1)
    out = np.hstack([RNG.dirichlet(np.ones(3), 90), RNG.dirichlet(np.ones(2), 90)])
    outputs = tuple(f"{h.name}={c}" for h in heads for c in h.classes)
    plain = Task("multitask", outputs, heads=heads)
    want = np.mean([skm.f1_score(y[:, 0], out[:, :3].argmax(1), average="macro"),
                    skm.f1_score(y[:, 1], out[:, 3:].argmax(1), average="macro")])
    assert get_metric("macro_f1", plain)(y, out) == pytest.approx(want)
    combine = Combiner.parse("a*2 + b", ["a", "b"])
    labels, combos = combos_of(heads, combine, lambda v: sorted(v, key=int))
    task = Task("multitask", outputs, labels=labels, heads=heads, combine=combine, combos=combos)
    truth = y[:, 0] * 2 + y[:, 1]
    # joint argmax = the pair of head argmaxes (independent heads); combined label = a*2 + b
    pred = out[:, :3].argmax(1) * 2 + out[:, 3:].argmax(1)
    assert get_metric("accuracy", task)(y, out) == pytest.approx(np.mean(truth == pred))
    assert get_metric("macro_f1", task)(y, out) == pytest.approx(
        skm.f1_score(truth, pred, labels=np.arange(6), average="macro", zero_division=0))


def test_a_metric_that_does_not_fit_the_task_is_refused_by_the_config():
    with pytest.raises(ValueError, match="metric 'macro_f1' does not fit task 'regression'; use one of: rmse, mae, r2"):
        Config(task="regression")
    with pytest.raises(ValueError, match="train.loss 'mse' does not fit task 'multilabel'"):
        Config(task="multilabel", metric="micro_f1", train={"loss": "mse"})
    with pytest.raises(ValueError, match="submission.kind 'tags' does not fit task 'binary'"):
        Config(task="binary", metric="roc_auc", submission={"kind": "tags"})
    with pytest.raises(ValueError, match="multitask needs data.targets"):
        Config(task="multitask")
    with pytest.raises(CompError, match="metric 'rmse' does not fit task 'multiclass'"):
        get_metric("rmse")


# ---------------------------------------------------------------- losses


def test_bce_and_asymmetric_losses():
    logits, target = torch.randn(16, 3), (torch.rand(16, 3) < 0.3).float()
    assert BCELoss()(logits, target) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, target)), rel=1e-5)
    # gamma 0, clip 0: the asymmetric loss is binary cross-entropy
    assert AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, target) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, target)), rel=1e-4)
    # focusing lowers the loss of easy negatives
    assert AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)(logits, target) < BCELoss()(logits, target)
    weights = positive_weights(np.array([[1, 0], [0, 0], [0, 0], [1, 1]]), "auto")
    np.testing.assert_allclose(weights.numpy(), [1.0, 3.0])  # negatives / positives per output
    assert BCELoss()(torch.randn(8, 1), torch.ones(8)).ndim == 0  # binary: (N,) targets against (N, 1) logits


def test_regression_loss_scales_the_target_and_multihead_sums_heads():
    loss = RegressionLoss("mse", (10.0, 20.0))
    assert float(loss(torch.tensor([[0.5]]), torch.tensor([15.0]))) == pytest.approx(0.0)
    assert float(loss(torch.tensor([[0.0]]), torch.tensor([20.0]))) == pytest.approx(1.0)
    logits, target = torch.randn(6, 5), torch.stack([torch.randint(0, 3, (6,)), torch.randint(0, 2, (6,))], 1)
    got = MultiHeadLoss([3, 2], [1.0, 0.5])(logits, target)
    want = F.cross_entropy(logits[:, :3], target[:, 0]) + 0.5 * F.cross_entropy(logits[:, 3:], target[:, 1])
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_regression_activation_returns_the_target_units():
    task = Task("regression", ("v",), scale=(10.0, 20.0))
    assert task.activate(torch.tensor([[0.25]])).item() == pytest.approx(12.5)
    squashed = Task("regression", ("v",), scale=(10.0, 20.0), squash=True)
    assert squashed.activate(torch.tensor([[0.0]])).item() == pytest.approx(15.0)


# ---------------------------------------------------------------- thresholds, nested like blend weights


def test_fitted_thresholds_beat_one_half_when_the_model_is_shy():
    y = (RNG.random((300, 3)) < 0.3).astype(float)
    p = np.clip(0.3 * y + 0.25 * RNG.random((300, 3)), 0, 1)  # positives around 0.3-0.55: 0.5 misses most
    task = Task("multilabel", ("a", "b", "c"), labels=("a", "b", "c"))
    metric = get_metric("macro_f1", task)
    t = fit_thresholds(p, y, metric)
    assert metric(y, apply_thresholds(p, t)) > metric(y, p) + 0.2
    assert np.all(t < 0.5)
    decided = task.decide(p, t)
    want = [" ".join(tag for tag, on in zip("abc", row) if on) for row in p >= t]
    assert decided == want


def test_nested_thresholds_never_see_the_scored_fold(monkeypatch):
    import comp.blend.ensemble as ens

    y = (RNG.random((120, 2)) < 0.4).astype(float)
    p = np.clip(0.4 * y + 0.5 * RNG.random((120, 2)), 0, 1)  # every row's values are unique
    folds = np.repeat(np.arange(4), 30)
    fold_of_row = {tuple(row): f for row, f in zip(p, folds)}
    seen: list[set[int]] = []
    real = ens.fit_thresholds

    def spy(probs, y_rows, metric, **kw):
        seen.append({fold_of_row[tuple(row)] for row in probs})
        return real(probs, y_rows, metric, **kw)

    monkeypatch.setattr(ens, "fit_thresholds", spy)
    task = Task("multilabel", ("a", "b"), labels=("a", "b"))
    fit = fit_blend([p], y, folds, get_metric("micro_f1", task), task=task, thresholds=True)
    # all rows once (the submission's thresholds), then once per scored fold without it
    assert seen == [{0, 1, 2, 3}, {1, 2, 3}, {0, 2, 3}, {0, 1, 3}, {0, 1, 2}]
    assert fit.thresholds is not None


def test_thresholds_fitted_on_other_folds_score_lower_than_in_sample_on_noise():
    y = (RNG.random((200, 5)) < 0.5).astype(float)
    p = RNG.random((200, 5))  # no signal: in-sample thresholds overfit, nested ones cannot
    task = Task("multilabel", tuple("abcde"), labels=tuple("abcde"))
    fit = fit_blend([p], y, np.repeat(np.arange(5), 40), get_metric("macro_f1", task), task=task, thresholds=True)
    assert fit.nested < fit.oof


def test_blends_of_tags_are_weighted_means_and_classes_only_methods_are_refused():
    task = Task("multilabel", ("a", "b"), labels=("a", "b"))
    a, b = RNG.random((4, 2)), RNG.random((4, 2))
    np.testing.assert_allclose(blend([a, b], [0.25, 0.75], task=task), 0.25 * a + 0.75 * b)
    with pytest.raises(CompError, match="blend method 'geometric' does not fit task 'multilabel'; use mean or rank"):
        blend([a, b], [0.5, 0.5], method="geometric", task=task)
    reg = Task("regression", ("v",), scale=(0, 1))
    with pytest.raises(CompError, match="use mean"):
        blend([a[:, :1]], [1.0], method="rank", task=reg)


# ---------------------------------------------------------------- submissions per kind


def test_submission_formats_per_kind():
    from comp.core.config import SubmissionConfig

    ids = ["x", "y"]
    tags = Task("multilabel", ("cloud", "water"), labels=("cloud", "water"))
    sub = SubmissionConfig(id_col="id", target_col="tags")
    frame = build_submission(ids, np.array([[0.9, 0.2], [0.6, 0.7]]), tags.outputs, sub, order=["y", "x"], task=tags)
    assert frame.to_csv(index=False) == "id,tags\ny,cloud water\nx,cloud\n"
    frame = build_submission(ids, np.array([[0.1, 0.2], [0.6, 0.7]]), tags.outputs, sub, order=ids, task=tags,
                             thresholds=np.array([0.05, 0.9]))
    assert frame["tags"].tolist() == ["cloud", "cloud"]
    binary = Task("binary", ("yes",), labels=("no", "yes"))
    frame = build_submission(ids, np.array([[0.25], [0.75]]), binary.outputs, SubmissionConfig(target_col="p"),
                             order=ids, task=binary)
    assert frame.to_csv(index=False) == "id,p\nx,0.25\ny,0.75\n"
    frame = build_submission(ids, np.array([[0.25], [0.75]]), binary.outputs,
                             SubmissionConfig(target_col="p", kind="label"), order=ids, task=binary)
    assert frame["p"].tolist() == ["no", "yes"]
    reg = Task("regression", ("price",), scale=(0, 1))
    frame = build_submission(ids, np.array([[3.5], [-1.0]]), reg.outputs, SubmissionConfig(target_col="price"),
                             order=ids, task=reg)
    assert frame.to_csv(index=False) == "id,price\nx,3.5\ny,-1.0\n"
    heads = (Head("mask", "mask", ("0", "1")), Head("age", "age_band", ("0", "1", "2")))
    multi = Task("multitask", ("mask=0", "mask=1", "age=0", "age=1", "age=2"), heads=heads)
    frame = build_submission(ids, np.array([[0.2, 0.8, 0.1, 0.1, 0.8], [0.9, 0.1, 0.6, 0.3, 0.1]]), multi.outputs,
                             SubmissionConfig(), order=ids, task=multi)
    assert frame.to_csv(index=False) == "id,mask,age_band\nx,1,2\ny,0,0\n"


def test_submissions_of_other_kinds_are_validated():
    from comp.core.config import SubmissionConfig

    tags = Task("multilabel", ("cloud", "water"), labels=("cloud", "water"))
    sub = SubmissionConfig(target_col="tags")
    ok = pd.DataFrame({"id": ["x", "y"], "tags": ["cloud", ""]})
    validate_submission(ok, sub, expected=["x", "y"], classes=tags.outputs, task=tags)  # no tag is a valid answer
    with pytest.raises(CompError, match=r"tags not among the tags of train.csv: \['fog'\]"):
        validate_submission(ok.assign(tags=["cloud fog", ""]), sub, expected=["x", "y"], classes=tags.outputs, task=tags)
    binary = Task("binary", ("yes",), labels=("no", "yes"))
    with pytest.raises(CompError, match=r"probabilities must lie in \[0, 1\]"):
        validate_submission(pd.DataFrame({"id": ["x"], "label": [1.5]}), SubmissionConfig(), expected=["x"],
                            classes=binary.outputs, task=binary)
    reg = Task("regression", ("v",), scale=(0, 1))
    with pytest.raises(CompError, match="non-numeric or infinite values in rows"):
        validate_submission(pd.DataFrame({"id": ["x"], "label": ["n/a"]}), SubmissionConfig(), expected=["x"],
                            classes=reg.outputs, task=reg)
