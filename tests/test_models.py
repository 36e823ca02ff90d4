"""comp.models: timm names, local pretrained weights (same / other head), dropout, normalisation."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from comp.config import ModelConfig
from comp.errors import CompError
from comp.models import IMAGENET_MEAN, build_model, load_weights, resolve_norm


def tiny(**kwargs) -> ModelConfig:
    return ModelConfig(name="test_resnet", pretrained=False, **kwargs)


def saved_model(tmp_path, n_classes: int, suffix: str, *, wrap: str | None = None, prefix: str = ""):
    """A test_resnet with random weights saved to tmp_path, and the model itself."""
    torch.manual_seed(123)
    model = build_model(tiny(), n_classes)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path, model


def backbone_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("fc."))


def test_unknown_name_lists_closest_timm_models():
    with pytest.raises(CompError, match=r"'resnet181' is not a timm model; closest timm models: .*resnet18"):
        build_model(ModelConfig(name="resnet181", pretrained=False), 3)
    with pytest.raises(CompError, match="efficientnet_b0"):
        build_model(ModelConfig(name="efficentnet_b0", pretrained=False), 3)


@pytest.mark.parametrize("n_classes", [2, 7])
def test_head_size_comes_from_data(n_classes):
    model = build_model(tiny(), n_classes).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, n_classes)


def test_zero_classes_rejected():
    with pytest.raises(CompError, match="n_classes=0"):
        build_model(tiny(), 0)


def test_drop_rates_reach_the_model():
    model = build_model(tiny(drop_rate=0.3, drop_path_rate=0.1), 3)
    assert model.drop_rate == pytest.approx(0.3)
    drop_paths = [m for m in model.modules() if type(m).__name__ == "DropPath"]
    assert drop_paths and max(m.drop_prob for m in drop_paths) == pytest.approx(0.1)


@pytest.mark.parametrize("suffix,wrap,prefix", [
    (".pth", None, ""), (".safetensors", None, ""), (".pt", "model", "module."),
    (".pt", "state_dict", "_orig_mod."), (".pth", "model_state_dict", ""),
])
def test_pretrained_path_same_head_loads_every_weight(tmp_path, suffix, wrap, prefix):
    path, source = saved_model(tmp_path, 5, suffix, wrap=wrap, prefix=prefix)
    torch.manual_seed(999)  # a different random init, so equality proves loading
    model = build_model(tiny(pretrained_path=str(path)), 5)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_path_other_head_keeps_backbone_and_reinitialises_head(tmp_path, suffix, caplog):
    path, source = saved_model(tmp_path, 5, suffix)
    torch.manual_seed(999)
    with caplog.at_level(logging.INFO, logger="comp.models"):
        model = build_model(tiny(pretrained_path=str(path)), 3)
    assert backbone_equal(model, source)
    assert model.fc.weight.shape == (3, source.fc.weight.shape[1])
    assert "re-initialised the head (its size differs from the file's): fc.weight, fc.bias" in caplog.text
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_pretrained_path_wins_over_hub(tmp_path):
    """pretrained: true with a local file must not touch the network (none here)."""
    path, source = saved_model(tmp_path, 4, ".pth")
    model = build_model(ModelConfig(name="test_resnet", pretrained=True, pretrained_path=str(path)), 4)
    assert backbone_equal(model, source)


def test_missing_weights_file(tmp_path):
    with pytest.raises(CompError, match=r"pretrained_path .*nope.pth' does not exist"):
        build_model(tiny(pretrained_path=str(tmp_path / "nope.pth")), 3)


def test_weights_of_another_architecture_rejected(tmp_path):
    other = build_model(ModelConfig(name="test_efficientnet", pretrained=False), 3)
    path = tmp_path / "eff.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CompError, match="check model.name matches"):
        build_model(tiny(pretrained_path=str(path)), 3)


def test_checkpoint_without_state_dict_rejected(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"epoch": 3, "notes": {"a": 1}}, path)
    with pytest.raises(CompError, match="holds no state dict: top-level keys are"):
        load_weights(build_model(tiny(), 3), path)


def test_pickled_objects_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": build_model(tiny(), 3)}, path)  # a whole module: not weights_only-safe
    with pytest.raises(CompError, match="could not read weights"):
        load_weights(build_model(tiny(), 3), path)


def test_resolve_norm_order_of_precedence():
    assert resolve_norm(tiny()) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # test_resnet's pretrained cfg
    assert resolve_norm(ModelConfig(name="resnet18")) == (IMAGENET_MEAN, (0.229, 0.224, 0.225))
    explicit = tiny(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert resolve_norm(explicit) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_hub_failure_says_how_to_work_offline(monkeypatch):
    import timm

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(CompError, match=r"could not fetch pretrained weights for 'test_resnet'.*pretrained_path"):
        build_model(ModelConfig(name="test_resnet", pretrained=True), 3)


def test_hub_and_local_dir_names_pass_the_name_check():
    from comp.models import check_name

    check_name("hf-hub:timm/resnet18.a1_in1k")
    check_name("resnet18.a1_in1k")  # a pretrained tag
    with pytest.raises(CompError, match="closest timm models"):
        check_name("resnt18.a1_in1k")
