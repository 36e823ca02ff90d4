"""model.pretrained_path: a weights file, or a timm / Hugging Face model folder (weights + config.json), and what
its config.json says about the weights (architecture, normalisation, input size). Reads no tensors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comp.core.errors import CompError

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")
EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
# A timm / Hugging Face model folder's weights, in the order timm prefers them.
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin",
                "pytorch_model.pth", "model.pth")


@dataclass(frozen=True)
class WeightsSource:
    """The file model.pretrained_path's tensors are in, and its folder's config.json ({} for a bare file)."""

    file: Path
    config: dict[str, Any]

    @property
    def architecture(self) -> str | None:
        arch = self.config.get("architecture")
        return arch if isinstance(arch, str) and arch else None

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's pretrained_cfg (mean, std, input_size, ...); an old single-dict config.json is one itself."""
        inner = self.config.get("pretrained_cfg")
        return inner if isinstance(inner, dict) else self.config

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """(h, w) the weights were trained at, from config.json's input_size [3, H, W]."""
        size = self.pretrained_cfg.get("input_size")
        return (int(size[-2]), int(size[-1])) if isinstance(size, list | tuple) and len(size) == 3 else None

    def norm(self, key: str) -> tuple[float, float, float] | None:
        value = self.pretrained_cfg.get(key)
        return tuple(float(v) for v in value) if isinstance(value, list | tuple) and len(value) == 3 else None

    def describe(self) -> str:
        """'config.json: mobilenetv2_100, trained at 224x224' (or '' for a bare file)."""
        if not self.config:
            return ""
        hw = f", trained at {self.input_hw[0]}x{self.input_hw[1]}" if self.input_hw else ""
        return f"config.json: {self.architecture or 'no architecture named'}{hw}"


def find_weights(path: Path | str, *, name: str | None = None) -> WeightsSource:
    """model.pretrained_path as a WeightsSource: a weights file, or a timm / Hugging Face model folder.

    With `name` (model.name), a folder whose config.json names another architecture is refused.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        config_json = path / "config.json"
        source = WeightsSource(folder_weights(path), read_model_config(config_json) if config_json.is_file() else {})
    elif path.is_file():
        source = WeightsSource(path, {})
    else:
        raise CompError(
            f"model.pretrained_path {str(path)!r} does not exist; point it at a weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}) or a timm / Hugging Face model folder (model.safetensors or "
            "pytorch_model.bin + config.json), or set model.pretrained_path: null"
        )
    if name is not None:
        check_architecture(name, source)
    return source


def folder_weights(folder: Path) -> Path:
    """The weights file of a model folder: timm's preferred names first, else its only weights file."""
    for fname in FOLDER_FILES:
        if (folder / fname).is_file():
            return folder / fname
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if found:
        raise CompError(f"model.pretrained_path {str(folder)!r} holds several weights files "
                        f"({', '.join(p.name for p in found[:5])}); point model.pretrained_path at one of them")
    listing = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise CompError(f"model.pretrained_path {str(folder)!r} holds no weights file (it has: {listing}); expected "
                    f"{FOLDER_FILES[0]} or {FOLDER_FILES[1]} (+ config.json) as timm / Hugging Face save them")


def read_model_config(path: Path) -> dict[str, Any]:
    """A model folder's config.json as a dict."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompError(f"could not read {path} ({type(exc).__name__}: {exc}); fix or delete it "
                        "(normalisation then comes from model.name's timm config)") from exc
    if not isinstance(config, dict):
        raise CompError(f"{path} holds a JSON {type(config).__name__}, not an object like timm's "
                        '{"architecture": ..., "pretrained_cfg": {...}}; fix or delete it')
    return config


def check_architecture(name: str, source: WeightsSource) -> None:
    """Refuse a folder whose config.json names another architecture than model.name (tags aside)."""
    arch = source.architecture
    if arch is None or name.startswith(EXTERNAL_PREFIXES) or arch.split(".")[0] == name.split(".")[0]:
        return
    raise CompError(f"model.pretrained_path {str(source.file.parent)!r} holds {arch!r} weights (its config.json) "
                    f"but model.name is {name!r}; set model.name: {arch}, or point model.pretrained_path at "
                    f"{name} weights")
