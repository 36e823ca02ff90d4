"""Fold models as ONNX (opset 17, dynamic batch and image size), checked against torch with onnxruntime."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comp.core.errors import CompError

log = logging.getLogger("comp.export")

OPSET = 17
TOLERANCE = 1e-4  # max abs difference of probabilities, onnxruntime vs torch
CHECK_BATCH = 3


def require_onnx() -> None:
    """CompError naming the extra when onnx or onnxruntime is not importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise CompError(f"--onnx needs onnx and onnxruntime ({exc}); pip install 'comp[export]'") from None


def export_onnx(model: nn.Module, spec: dict[str, Any], path: Path) -> float:
    """Write `model` to `path` as ONNX and return the max abs probability difference on every TTA view's size."""
    require_onnx()
    from comp.core.layout import write_with

    h, w = spec["preprocess"]["input_hw"]
    example = torch.randn(2, 3, h, w)
    write_with(path, lambda tmp: _export(model.eval().float(), example, tmp))
    diff = max(check_onnx(model, path, x) for x in view_inputs(spec, h, w))
    if diff > TOLERANCE:
        raise CompError(f"{path.name}: onnxruntime's probabilities differ from torch's by {diff:.2g} (> {TOLERANCE}); "
                        "this architecture does not export faithfully: export without --onnx")
    log.info("%s: onnxruntime matches torch (max abs probability difference %.2g)", path.name, diff)
    return float(diff)


def _export(model: nn.Module, example: torch.Tensor, target: Path) -> None:
    """torch.onnx.export with dynamic batch, height and width (TorchScript exporter; dynamo where it is gone)."""
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(target), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=["logits"], dynamic_axes=axes)
        except (TypeError, RuntimeError, ValueError) as exc:  # a torch without the TorchScript exporter
            log.info("TorchScript ONNX export unavailable (%s); using the dynamo exporter", exc)
            dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=max(OPSET, 18),
                                        input_names=["image"], output_names=["logits"], dynamic_shapes=({**dims},))
            program.save(str(target), external_data=False)


def view_inputs(spec: dict[str, Any], h: int, w: int) -> list[torch.Tensor]:
    """Random inputs of every size the member's TTA views feed the model (a batch size other than the export's)."""
    from comp.export.bundle_predict import tta_views

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, h, w, generator=gen)
    sizes = sorted({tuple(view(x).shape[-2:]) for view in tta_views(spec["tta"], (h, w))})
    return [torch.randn(CHECK_BATCH, 3, sh, sw, generator=gen) for sh, sw in sizes]


@torch.inference_mode()
def check_onnx(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    """Max abs difference of softmax probabilities between torch and onnxruntime on `x`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = torch.softmax(model.float()(x).float(), dim=1).numpy()
    got = torch.softmax(torch.from_numpy(session.run(None, {"image": x.numpy()})[0]).float(), dim=1).numpy()
    return float(np.abs(want - got).max())
