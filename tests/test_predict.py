"""TTA wrapper on a tiny timm model: views, merge modes, shapes, probabilities, one forward per view."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from comp.core.errors import CompError
from comp.infer.predict import TTA_NAMES, build_tta, predict_tta

VIEWS = {"none": 1, "hflip": 2, "vflip": 2, "flip": 4, "d4": 8, "multiscale": 3, "five_crop": 5, "ten_crop": 10}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()


@pytest.fixture(scope="module")
def loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(10, 3, 32, 32, generator=g)
    return [(images[:4], torch.zeros(4)), (images[4:8], torch.zeros(4)), (images[8:], torch.zeros(2))]


def test_every_name_is_known_and_counted():
    assert set(VIEWS) == set(TTA_NAMES)
    for name, n in VIEWS.items():
        assert len(build_tta(name, size=(32, 32))) == n


def test_unknown_tta_is_an_error():
    with pytest.raises(CompError, match="unknown TTA 'hflp'; did you mean hflip"):
        build_tta("hflp", size=(32, 32))


@pytest.mark.parametrize("name", TTA_NAMES)
@pytest.mark.parametrize("merge", ["mean", "gmean"])
def test_shapes_and_probabilities(model, loader, name, merge):
    probs = predict_tta(model, loader, tta=name, merge=merge)
    assert probs.shape == (10, 5)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-9)


def test_none_is_the_plain_softmax(model, loader):
    images = torch.cat([b[0] for b in loader])
    with torch.no_grad():
        plain = torch.softmax(model(images), 1).double().numpy()
    assert np.allclose(predict_tta(model, loader, tta="none"), plain, atol=1e-6)


def test_hflip_means_probabilities_not_logits(model, loader):
    images = torch.cat([b[0] for b in loader])
    with torch.no_grad():
        a = torch.softmax(model(images), 1)
        b = torch.softmax(model(images.flip(-1)), 1)
    mean = ((a + b) / 2).double().numpy()
    gmean = torch.softmax((a.log() + b.log()) / 2, 1).double().numpy()
    assert np.allclose(predict_tta(model, loader, tta="hflip", merge="mean"), mean, atol=1e-6)
    assert np.allclose(predict_tta(model, loader, tta="hflip", merge="gmean"), gmean, atol=1e-6)


class Loud(nn.Module):
    """Huge logits of both signs: a geometric mean of raw logits would give NaN here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(1, 2, 3), keepdim=False)[:, None]
        return torch.cat([s * 1e4, -s * 1e4, torch.zeros_like(s)], dim=1)


def test_gmean_is_finite_on_extreme_logits(loader):
    probs = predict_tta(Loud(), loader, tta="d4", merge="gmean")
    assert np.all(np.isfinite(probs)) and np.allclose(probs.sum(1), 1.0)


def test_one_batched_forward_per_view(model, loader):
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        predict_tta(model, loader, tta="flip")
    finally:
        handle.remove()
    assert calls == [4] * 4 + [4] * 4 + [2] * 4  # 3 batches x 4 views, each a whole batch


def test_bad_merge_and_empty_loader(model):
    with pytest.raises(CompError, match="unknown TTA merge 'max'"):
        predict_tta(model, [], merge="max")
    with pytest.raises(CompError, match="no batches"):
        predict_tta(model, [])


def _reference_per_model(model, loader, tta_name, merge):
    """The pre-issue-16 algorithm: one pass over the loader per model, views merged in order."""
    views, out = list(build_tta(tta_name, size=(32, 32))), []
    with torch.inference_mode():
        for images, _ in loader:
            acc = None
            for view in views:
                probs = torch.softmax(model(view.augment_image(images).contiguous()).float(), dim=1)
                term = probs if merge == "mean" else torch.log(probs.clamp_min(1e-7))
                acc = term if acc is None else acc + term
            acc = acc / len(views)
            out.append(acc if merge == "mean" else torch.softmax(acc, dim=1))
    probs = torch.cat(out).double().numpy()
    return probs / probs.sum(axis=1, keepdims=True)


class CountingLoader:
    """A loader that counts how often it is iterated."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


@pytest.mark.parametrize("tta_name,merge", [("hflip", "mean"), ("d4", "gmean"), ("five_crop", "mean")])
def test_all_fold_models_in_one_pass_match_the_per_model_loop_bytewise(loader, tta_name, merge):
    from comp.infer.predict import predict_tta_models

    models = {}
    for fold in (0, 2, 3):
        torch.manual_seed(fold)
        models[fold] = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    counting = CountingLoader(loader)
    got = predict_tta_models(models, counting, tta=tta_name, merge=merge)
    assert counting.passes == 1  # the test images are read once for every fold model
    assert list(got) == [0, 2, 3]
    for fold, model in models.items():
        want = _reference_per_model(model, loader, tta_name, merge)
        assert got[fold].dtype == want.dtype and got[fold].tobytes() == want.tobytes(), fold
    assert not np.array_equal(got[0], got[2])  # the models really differ


def test_views_out_holds_each_single_view(model, loader):
    """The per-view probabilities a TTA collects: the identity view is the plain forward, the merge is their mean."""
    from comp.infer.predict import predict_tta_models, view_names

    views: dict = {}
    merged = predict_tta_models({"m": model}, loader, tta="hflip", device="cpu", views_out=views)["m"]
    plain = predict_tta(model, loader, tta="none", device="cpu")
    assert view_names("hflip") == ["HorizontalFlip=False", "HorizontalFlip=True"] and len(views["m"]) == 2
    np.testing.assert_allclose(views["m"][0], plain, atol=1e-6)
    assert not np.allclose(views["m"][1], plain, atol=1e-4)  # the flipped view sees other pixels
    np.testing.assert_allclose(merged, (views["m"][0] + views["m"][1]) / 2, atol=1e-6)


def test_predict_oof_scores_each_view_and_the_report_shows_them(tiny_ws, one_torch_thread):
    """--oof records each view's OOF score; the no-flip view alone scores what training's oof.csv scores."""
    import pandas as pd
    from sklearn.metrics import f1_score
    from typer.testing import CliRunner

    from comp.cli import app
    from comp.core.layout import Layout, read_json

    runner = CliRunner()
    assert runner.invoke(app, ["fold-train", "--k", "2", "-w", str(tiny_ws)]).exit_code == 0
    result = runner.invoke(app, ["predict", "--oof", "--tta", "hflip", "-w", str(tiny_ws)])
    assert result.exit_code == 0, result.output
    ws = Layout.at(tiny_ws)
    scores = read_json(ws.predict_json("baseline"))["oof_view_scores"]
    assert list(scores) == ["HorizontalFlip=False", "HorizontalFlip=True"]
    oof = pd.read_csv(ws.oof_csv("baseline"), dtype={"id": str, "label": str})
    cols = [c for c in oof.columns if c.startswith("p_")]
    pred = np.array([c[2:] for c in cols])[oof[cols].to_numpy().argmax(axis=1)]
    assert scores["HorizontalFlip=False"] == pytest.approx(f1_score(oof["label"], pred, average="macro"))
    report = ws.report_html("baseline").read_text()
    assert "view HorizontalFlip=True alone" in report and "gain over no TTA" in report
