"""Fine-tuning parts: a lower lr for the backbone, layer-wise decay, a frozen backbone while the head learns."""

from __future__ import annotations

import pytest
import timm
import torch

from comp.core.config import TrainConfig
from comp.train.parts import build_optimizer, build_scheduler


def head_and_backbone_lrs(opt: torch.optim.Optimizer) -> tuple[set[float], set[float]]:
    head = {round(g["lr"], 12) for g in opt.param_groups if not g["backbone"]}
    return head, {round(g["lr"], 12) for g in opt.param_groups if g["backbone"]}


def test_backbone_lr_scale_applies_to_everything_but_the_head() -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, backbone_lr_scale=0.1))
    head, backbone = head_and_backbone_lrs(opt)
    assert head == {1e-3} and backbone == {1e-4}
    head_params = {id(p) for g in opt.param_groups if not g["backbone"] for p in g["params"]}
    assert head_params == {id(p) for p in model.get_classifier().parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_layer_decay_gives_earlier_layers_smaller_lrs() -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["conv1.0.weight"])] < lr_of[id(params["layer4.0.conv1.weight"])] < lr_of[id(model.fc.weight)]
    assert lr_of[id(model.fc.weight)] == pytest.approx(1e-3)


def test_frozen_backbone_gets_no_lr_then_warms_up_while_the_head_follows_the_schedule() -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    cfg = TrainConfig(lr=1.0, epochs=4, freeze_epochs=1, warmup_epochs=0, scheduler="cosine")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    backbone = [i for i, g in enumerate(opt.param_groups) if g["backbone"]]
    head = [i for i, g in enumerate(opt.param_groups) if not g["backbone"]]
    seen = []
    for _ in range(40):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert all(seen[s][i] == 0 for s in range(10) for i in backbone)  # the first epoch: backbone still
    assert all(seen[s][i] > 0 for s in range(10, 39) for i in backbone)
    assert seen[0][head[0]] == pytest.approx(1.0) and seen[10][backbone[0]] == pytest.approx(1.0)
    assert seen[10][head[0]] < 1.0  # the head's cosine began at step 0


def test_finetune_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="backbone_lr_scale must be between 0 and 1"):
        TrainConfig(backbone_lr_scale=2)
    with pytest.raises(ValueError, match="freeze_epochs must be 0 or more"):
        TrainConfig(freeze_epochs=-1)
