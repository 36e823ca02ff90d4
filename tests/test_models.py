"""comp.model.factory: timm names, local pretrained weights (file or timm folder, same / other head), the load report,
reachability of the configured weights, dropout, normalisation."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comp.core.config import ModelConfig
from comp.core.errors import CompError
from comp.model.factory import (IMAGENET_MEAN, build_model, build_model_with_report, check_pretrained, load_weights,
                         pretrained_status, resolve_norm)


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
    with caplog.at_level(logging.INFO, logger="comp.model.factory"):
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
    from comp.model.factory import check_name

    check_name("hf-hub:timm/resnet18.a1_in1k")
    check_name("resnet18.a1_in1k")  # a pretrained tag
    with pytest.raises(CompError, match="closest timm models"):
        check_name("resnt18.a1_in1k")


# --- model.pretrained_path as a timm / Hugging Face folder, the load report, reachability ---------------------------

FOLDER_MEAN, FOLDER_STD = (0.1, 0.2, 0.3), (0.6, 0.5, 0.4)


def timm_folder(tmp_path, *, arch: str = "test_resnet", weights: str = "model.safetensors", n_classes: int = 5,
                config: dict | None = None):
    """A folder as timm's hub layout has it: the weights file + config.json; and the model it was saved from."""
    path, source = saved_model(tmp_path, n_classes, Path(weights).suffix)
    folder = tmp_path / "timm-folder"
    folder.mkdir(exist_ok=True)
    path.rename(folder / weights)
    pretrained_cfg = {"mean": list(FOLDER_MEAN), "std": list(FOLDER_STD), "input_size": [3, 160, 128],
                      "num_classes": n_classes, "classifier": "fc"}
    doc = config if config is not None else {"architecture": arch, "num_classes": n_classes,
                                             "pretrained_cfg": pretrained_cfg}
    (folder / "config.json").write_text(json.dumps(doc))
    return folder, source


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"])
def test_timm_folder_loads_backbone_norm_and_input_size(tmp_path, weights, caplog):
    folder, source = timm_folder(tmp_path, weights=weights)
    torch.manual_seed(999)
    with caplog.at_level(logging.INFO, logger="comp.model.factory"):
        model, report = build_model_with_report(tiny(pretrained_path=str(folder)), 3)
    assert backbone_equal(model, source)
    assert report.file == str(folder / weights) and report.architecture == "test_resnet"
    assert report.n_loaded == report.n_model - 2 and report.reinitialised == ("fc.weight", "fc.bias")
    assert report.skipped == () and report.input_hw == (160, 128)
    assert resolve_norm(tiny(pretrained_path=str(folder))) == (FOLDER_MEAN, FOLDER_STD)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "comp.model.factory"]  # one line, not one per key
    assert line == f"pretrained weights: {report.summary()}"
    assert f"loaded {report.n_loaded} of {report.n_model} tensors from {folder / weights}" in line
    assert "(test_resnet, trained at 160x128)" in line and "re-initialised the head" in line


def test_timm_folder_as_timm_itself_saves_it(tmp_path):
    from timm.models import save_for_hf

    source = build_model(tiny(), 4)
    save_for_hf(source, str(tmp_path / "hf"), safe_serialization=True)
    model, report = build_model_with_report(tiny(pretrained_path=str(tmp_path / "hf")), 4)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())
    assert report.reinitialised == () and report.architecture == "test_resnet" and report.input_hw == (160, 160)


def test_timm_folder_prefers_safetensors(tmp_path):
    folder, source = timm_folder(tmp_path)
    torch.save(build_model(tiny(), 5).state_dict(), folder / "pytorch_model.bin")  # other weights: must be ignored
    model = build_model(tiny(pretrained_path=str(folder)), 5)
    assert backbone_equal(model, source)


def test_folder_of_another_architecture_refused_naming_both(tmp_path):
    folder, _ = timm_folder(tmp_path, arch="test_efficientnet")
    with pytest.raises(CompError, match=r"holds 'test_efficientnet' weights \(its config.json\) but model.name is "
                                         r"'test_resnet'; set model.name: test_efficientnet"):
        build_model(tiny(pretrained_path=str(folder)), 3)
    tagged = ModelConfig(name="test_resnet.r160_in1k", pretrained=False)  # a pretrained tag is the same architecture
    assert pretrained_status(tagged.model_copy(update={"pretrained_path": str(timm_folder(tmp_path)[0])}))[0]


def test_folder_without_config_json_loads_like_a_file(tmp_path):
    folder, source = timm_folder(tmp_path)
    (folder / "config.json").unlink()
    model, report = build_model_with_report(tiny(pretrained_path=str(folder)), 5)
    assert backbone_equal(model, source) and report.architecture is None and report.input_hw is None
    assert resolve_norm(tiny(pretrained_path=str(folder))) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's cfg


def test_folder_problems_say_what_to_do(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("weights")
    with pytest.raises(CompError, match=r"holds no weights file \(it has: README.md\); expected model.safetensors"):
        build_model(tiny(pretrained_path=str(empty)), 3)
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.pth", "b.pth"):
        torch.save(build_model(tiny(), 3).state_dict(), two / name)
    with pytest.raises(CompError, match=r"several weights files \(a.pth, b.pth\); point model.pretrained_path at one"):
        build_model(tiny(pretrained_path=str(two)), 3)
    folder, _ = timm_folder(tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CompError, match=r"could not read .*config.json \(JSONDecodeError"):
        build_model(tiny(pretrained_path=str(folder)), 3)


def test_explicit_norm_wins_over_the_folder_and_a_gone_folder_is_an_error(tmp_path):
    folder, _ = timm_folder(tmp_path)
    explicit = tiny(pretrained_path=str(folder), mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    assert resolve_norm(explicit) == ((0.4, 0.4, 0.4), (0.2, 0.2, 0.2))
    with pytest.raises(CompError, match=r"'.*gone' does not exist; the normalisation of a weights folder comes from"):
        resolve_norm(tiny(pretrained_path=str(tmp_path / "gone")))
    assert resolve_norm(tiny(pretrained_path=str(tmp_path / "gone.pth"))) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_bare_file_report_and_skipped_tensors(tmp_path):
    torch.manual_seed(1)
    state = build_model(tiny(), 5).state_dict()
    state["aux_head.weight"] = torch.zeros(2, 2)  # a tensor this model does not have
    torch.save(state, tmp_path / "extra.pth")
    model = build_model(tiny(), 5)
    report = load_weights(model, tmp_path / "extra.pth")
    assert (report.n_loaded, report.n_model, report.reinitialised) == (len(state) - 1, len(state) - 1, ())
    assert report.skipped == ("aux_head.weight",) and report.architecture is None
    assert "kept the file's head; skipped 1 tensors the model lacks (aux_head.weight)" in report.summary()


def test_file_without_head_or_batchnorm_counters_loads(tmp_path):
    torch.manual_seed(2)
    source = build_model(tiny(), 5)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.") and "num_batches" not in k}
    torch.save(state, tmp_path / "features.pth")
    report = load_weights(build_model(tiny(), 3), tmp_path / "features.pth")
    assert report.reinitialised == ("fc.weight", "fc.bias") and "(the file has none)" in report.summary()


def test_wrapper_prefix_is_stripped(tmp_path):
    torch.manual_seed(3)
    source = build_model(tiny(), 5)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()} | {"neck.proj.weight": torch.zeros(2, 2)}
    torch.save(state, tmp_path / "wrapped.pth")
    model, report = build_model_with_report(tiny(pretrained_path=str(tmp_path / "wrapped.pth")), 5)
    assert backbone_equal(model, source) and report.stripped_prefix == "backbone."
    assert report.skipped == ("neck.proj.weight",)  # the wrapper's own tensors are reported, not dropped silently
    assert "keys without 'backbone.'" in report.summary()


def mangled(tmp_path, change):
    """A test_resnet weights file changed by `change(state)`."""
    state = build_model(tiny(), 3).state_dict()
    change(state)
    path = tmp_path / "mangled.pth"
    torch.save(state, path)
    return path


def test_backbone_shape_mismatch_refused_with_counts_and_examples(tmp_path):
    path = mangled(tmp_path, lambda s: s.update({"conv1.0.weight": torch.zeros(3, 3, 3, 3)}))
    with pytest.raises(CompError, match=r"1 tensors differ in shape, e.g. conv1.0.weight: file \(3, 3, 3, 3\) vs "
                                        r"model .*; check model.name matches"):
        build_model(tiny(pretrained_path=str(path)), 3)


def test_missing_backbone_tensor_refused(tmp_path):
    path = mangled(tmp_path, lambda s: s.pop("layer1.0.conv1.weight"))
    with pytest.raises(CompError, match=r"lack 1 tensors this model needs, e.g. \['layer1.0.conv1.weight'\]; check "
                                        "model.name"):
        build_model(tiny(pretrained_path=str(path)), 3)


def test_less_than_half_the_backbone_refused(tmp_path):
    def keep_a_third(state):
        for i, key in enumerate(list(state)):
            if i % 3:
                del state[key]

    path = mangled(tmp_path, keep_a_third)
    with pytest.raises(CompError, match=r"hold only \d+ of this model's \d+ backbone tensors .*check model.name"):
        build_model(tiny(pretrained_path=str(path)), 3)


def test_status_of_scratch_file_and_folder(tmp_path):
    assert pretrained_status(tiny()) == (True, "test_resnet: training from scratch (model.pretrained: false)")
    path, _ = saved_model(tmp_path, 3, ".safetensors")
    ok, line = pretrained_status(tiny(pretrained_path=str(path)))
    assert ok and line == f"test_resnet: pretrained weights from {path} ({len(build_model(tiny(), 3).state_dict())} tensors)"
    folder, _ = timm_folder(tmp_path)
    ok, line = pretrained_status(tiny(pretrained_path=str(folder)))
    assert ok and line.endswith("tensors; config.json: test_resnet, trained at 160x128)")
    torch_file, _ = saved_model(tmp_path, 3, ".pth")
    ok, line = pretrained_status(tiny(pretrained_path=str(torch_file)))
    assert ok and re.search(r"weights.pth \(\d+\.\d MB\)$", line)


def test_status_refuses_what_build_model_would(tmp_path):
    ok, line = pretrained_status(tiny(pretrained_path=str(tmp_path / "nope")))
    assert not ok and "'nope' does not exist; point it at a weights file" in line.replace(str(tmp_path) + "/", "")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{oops")
    ok, line = pretrained_status(tiny(pretrained_path=str(tmp_path / "broken.safetensors")))
    assert not ok and "is not a readable safetensors file" in line
    (tmp_path / "empty.pth").write_bytes(b"")
    assert pretrained_status(tiny(pretrained_path=str(tmp_path / "empty.pth"))) == (
        False, f"model.pretrained_path file {tmp_path / 'empty.pth'} is empty; download or save it again")
    folder, _ = timm_folder(tmp_path, arch="test_vit")
    ok, line = pretrained_status(tiny(pretrained_path=str(folder)))
    assert not ok and "holds 'test_vit' weights" in line


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches, online; put(repo, filename) caches a file as huggingface_hub does."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TIMM_USE_OLD_CACHE"):
        monkeypatch.delenv(var, raising=False)

    def put(repo: str, filename: str):
        repo_dir = tmp_path / "hf" / f"models--{repo.replace('/', '--')}"
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text("abc123")
        snapshot = repo_dir / "snapshots" / "abc123"
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / filename).write_bytes(b"weights")
        return snapshot / filename

    return put


def test_hub_status_says_whether_the_weights_are_cached(hub_cache, monkeypatch):
    hub = ModelConfig(name="test_resnet", pretrained=True)
    ok, line = pretrained_status(hub)
    assert not ok and line == ("test_resnet: pretrained weights (timm/test_resnet.r160_in1k) are not cached: this "
                               "machine may have no internet; set model.pretrained_path to a local weights file or "
                               "folder, or model.pretrained=false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "are not cached: HF_HUB_OFFLINE is set; set model.pretrained_path" in pretrained_status(hub)[1]
    cached = hub_cache("timm/test_resnet.r160_in1k", "model.safetensors")
    assert pretrained_status(hub) == (True, f"test_resnet: pretrained weights cached at {cached}")


def test_hub_status_of_hf_hub_names_needs_config_and_weights(hub_cache):
    hub = ModelConfig(name="hf-hub:someone/tiny-net", pretrained=True)
    hub_cache("someone/tiny-net", "pytorch_model.bin")
    assert not pretrained_status(hub)[0]  # timm reads config.json first
    hub_cache("someone/tiny-net", "config.json")
    assert pretrained_status(hub)[0]


def test_torch_hub_cache_found_for_url_weights(hub_cache, tmp_path):
    from comp.model._hub_cache import cached_url_file

    url = "https://example.invalid/weights/resnet_x-123abc.pth"
    assert cached_url_file(url) is None
    target = tmp_path / "torch" / "hub" / "checkpoints" / "resnet_x-123abc.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"w")
    assert cached_url_file(url) == str(target)


def test_check_pretrained_refuses_before_any_model_is_trained(tmp_path, hub_cache, monkeypatch):
    with pytest.raises(CompError, match="does not exist; point it at a weights file"):
        check_pretrained(tiny(pretrained_path=str(tmp_path / "missing.safetensors")))
    other = build_model(ModelConfig(name="test_efficientnet", pretrained=False), 3)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "eff.safetensors"))
    with pytest.raises(CompError, match="check model.name matches"):  # the header alone shows the other backbone
        check_pretrained(tiny(pretrained_path=str(tmp_path / "eff.safetensors")))
    path, _ = saved_model(tmp_path, 7, ".safetensors")
    assert check_pretrained(tiny(pretrained_path=str(path))).startswith("test_resnet: pretrained weights from")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CompError, match="HF_HUB_OFFLINE is set"):
        check_pretrained(ModelConfig(name="test_resnet", pretrained=True))


def test_check_pretrained_fetches_uncached_hub_weights_once(hub_cache, monkeypatch):
    import timm

    calls = []

    def offline(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(CompError, match=r"could not fetch pretrained weights for 'test_resnet'.*pretrained_path"):
        check_pretrained(ModelConfig(name="test_resnet", pretrained=True))
    assert calls == [("test_resnet", True)]
    with pytest.raises(CompError, match="are not cached"):
        check_pretrained(ModelConfig(name="test_resnet", pretrained=True), fetch=False)
    assert len(calls) == 1
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: calls.append((name, pretrained)))
    assert check_pretrained(ModelConfig(name="test_resnet", pretrained=True)) == (
        "test_resnet: pretrained weights fetched into the local cache")


def real_weights_dir() -> Path:
    """The offline ImageNet weights: the folder COMP_WEIGHTS_DIR names, else shared/weights beside the repository."""
    return Path(os.environ.get("COMP_WEIGHTS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "weights")


@pytest.mark.slow
def test_real_mobilenetv2_weights_load_every_backbone_tensor():
    file = real_weights_dir() / "mobilenetv2_100_tv_in1k.safetensors"
    if not file.is_file():
        pytest.skip(f"no offline ImageNet weights at {file} (set COMP_WEIGHTS_DIR to the folder holding them)")
    cfg = ModelConfig(name="mobilenetv2_100", pretrained=True, pretrained_path=str(file))
    assert check_pretrained(cfg).endswith("(314 tensors)")
    model, report = build_model_with_report(cfg, 18)
    assert (report.n_loaded, report.n_model) == (312, 314)
    assert report.reinitialised == ("classifier.weight", "classifier.bias") and report.skipped == ()
    from safetensors.torch import load_file

    state = load_file(str(file))
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state if not k.startswith("classifier."))
    assert resolve_norm(cfg) == (IMAGENET_MEAN, (0.229, 0.224, 0.225))
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 3, 96, 96))
    assert out.shape == (2, 18) and torch.isfinite(out).all()
