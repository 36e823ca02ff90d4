from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from comp.core.config import Config, all_keys, load_config, parse_override
from comp.core.errors import CompError


def write(ws: Path, comp: dict, exp: dict | None = None, name: str = "baseline") -> Path:
    (ws / "experiments").mkdir(parents=True, exist_ok=True)
    (ws / "comp.yaml").write_text(yaml.safe_dump(comp))
    if exp is not None:
        (ws / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(exp))
    return ws


def test_precedence_defaults_comp_experiment_set(tmp_path):
    ws = write(tmp_path, {"train": {"lr": 0.1, "epochs": 3}, "metric": "accuracy"}, {"train": {"lr": 0.2}})
    cfg = load_config(ws, "baseline", ["train.epochs=7"])
    assert cfg.train.lr == 0.2  # experiment over comp.yaml
    assert cfg.train.epochs == 7  # --set over both
    assert cfg.metric == "accuracy"  # comp.yaml over defaults
    assert cfg.train.batch_size == Config().train.batch_size  # default kept


def test_set_values_are_yaml_scalars(tmp_path):
    ws = write(tmp_path, {})
    cfg = load_config(ws, overrides=["train.lr=1e-3", "model.pretrained=false", "image.size=[64, 48]",
                                     "train.sampler=null", "model.name=efficientnet_b0"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.pretrained is False
    assert cfg.image.hw == (64, 48)
    assert cfg.train.sampler is None
    assert cfg.model.name == "efficientnet_b0"


def test_unknown_key_names_nearest(tmp_path):
    ws = write(tmp_path, {"data": {"lable_col": "x"}})
    with pytest.raises(CompError, match=r"data\.lable_col is not a key; did you mean data\.label_col\?"):
        load_config(ws)


def test_unknown_key_in_set_and_experiment(tmp_path):
    ws = write(tmp_path, {}, {"trian": {"lr": 1}})
    with pytest.raises(CompError, match=r"experiments/baseline\.yaml: trian is not a key; did you mean train\?"):
        load_config(ws)
    ws = write(tmp_path, {}, {})
    with pytest.raises(CompError, match=r"--set train\.learning_rate is not a key"):
        load_config(ws, overrides=["train.learning_rate=1"])


def test_bad_value_names_key_and_value(tmp_path):
    ws = write(tmp_path, {})
    with pytest.raises(CompError, match=r"train\.lr: .*got 'abc'"):
        load_config(ws, overrides=["train.lr=abc"])
    with pytest.raises(CompError, match=r"unknown metric 'macro_f2'; did you mean macro_f1"):
        load_config(ws, overrides=["metric=macro_f2"])
    with pytest.raises(CompError, match=r"train\.optimizer"):
        load_config(ws, overrides=["train.optimizer=adam_w"])


def test_missing_comp_yaml_says_what_to_do(tmp_path):
    with pytest.raises(CompError, match=r"no comp\.yaml here .*run comp init"):
        load_config(tmp_path)


def test_missing_experiment_lists_known(tmp_path):
    ws = write(tmp_path, {}, {"train": {"lr": 0.1}}, name="effnet")
    with pytest.raises(CompError, match=r"experiment 'efnet' .*did you mean effnet"):
        load_config(ws, "efnet")
    assert load_config(ws, "baseline").train.lr == Config().train.lr  # baseline may be absent


def test_set_without_equals_is_an_error():
    with pytest.raises(CompError, match=r"--set expects dotted\.key=value, got 'train\.lr'"):
        parse_override("train.lr")


def test_config_is_frozen_and_hash_stable(tmp_path):
    ws = write(tmp_path, {})
    a, b = load_config(ws), load_config(ws)
    with pytest.raises(ValidationError):
        a.train.lr = 1.0  # type: ignore[misc]
    assert a.hash() == b.hash() and a.train_hash() == b.train_hash()
    c = load_config(ws, overrides=["train.lr=0.5"])
    d = load_config(ws, overrides=["tta.transforms=d4"])
    assert c.train_hash() != a.train_hash()
    assert d.train_hash() == a.train_hash() and d.hash() != a.hash()  # TTA does not change weights
    e = load_config(ws, overrides=["train.device=cpu", "train.num_workers=7"])
    assert e.train_hash() == a.train_hash()  # where a run happens is not what it trains


def test_k_below_two_rejected(tmp_path):
    ws = write(tmp_path, {})
    with pytest.raises(CompError, match=r"folds\.k must be 2 or more, got 1"):
        load_config(ws, overrides=["folds.k=1"])


def test_all_keys_cover_sections():
    keys = all_keys()
    assert "train.lr" in keys and "data.group_col" in keys and "tune.space" in keys


def test_default_lr_knows_whether_the_model_is_fine_tuned() -> None:
    from comp.core.config import LR_FINETUNE, LR_SCRATCH

    def lr(**sections) -> object:
        return Config.model_validate(sections).train.lr

    assert LR_SCRATCH > LR_FINETUNE
    assert lr() == LR_FINETUNE  # resnet18 from the hub's ImageNet weights
    assert lr(model={"pretrained": False}) == LR_SCRATCH
    assert lr(model={"pretrained": False, "pretrained_path": "w.safetensors"}) == LR_FINETUNE  # a local file loads too
    assert lr(model={"pretrained": False}, train={"lr": 0.05}) == 0.05  # a number the user gives is kept
    assert lr(train={"lr": "auto"}) == "auto"
    # the resolved number is what the experiment records: the same hash as writing it out
    assert Config.model_validate({"model": {"pretrained": False}}).train_hash() == \
        Config.model_validate({"model": {"pretrained": False}, "train": {"lr": LR_SCRATCH}}).train_hash()
