"""Are a timm model's hub weights already on this machine (Hugging Face cache, torch hub checkpoints)? Nothing here
downloads or opens a connection."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what timm loads from a hub repo, safest first
TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Did the user tell Hugging Face not to use the network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)?"""
    return any(os.environ.get(var, "").strip().lower() in TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, HF_HOME) like huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hf_file(repo: str, filenames: tuple[str, ...]) -> str | None:
    """The cached path of the first of `filenames` in hub repo `repo` ('owner/name[@revision]'), else None."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    for filename in filenames:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir(), revision=revision or None)
        if isinstance(hit, str):  # else None (unknown) or a "known missing" marker
            return hit
    return None


def cached_url_file(url: str) -> str | None:
    """Where torch hub keeps the download of `url` ($TORCH_HOME/hub/checkpoints/<file>), when it is there."""
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    return str(path) if path.is_file() else None


def hub_location(name: str) -> tuple[str | None, tuple[str, ...], str | None]:
    """(hub repo, weight file names, url) timm would fetch for model.name `name`; (None, (), None) when none."""
    if name.startswith(("hf-hub:", "hf_hub:")):
        return name.split(":", 1)[1], HUB_WEIGHTS, None
    import timm

    try:
        pretrained = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):  # an unknown name or tag
        pretrained = None
    if pretrained is None:
        return None, (), None
    wanted = pretrained.hf_hub_filename
    files = (wanted.replace("pytorch_model.bin", "model.safetensors"), wanted) if wanted else HUB_WEIGHTS
    return pretrained.hf_hub_id or None, tuple(dict.fromkeys(files)), pretrained.url or None


def cached_weights(name: str) -> str | None:
    """The local file timm would load for `name` with pretrained=True without downloading, else None."""
    repo, files, url = hub_location(name)
    if repo:
        hit = cached_hf_file(repo, files)
        if hit and name.startswith(("hf-hub:", "hf_hub:")) and not cached_hf_file(repo, ("config.json",)):
            return None  # timm reads the repo's config.json first
        # timm prefers the hub and looks at torch's cache only when TIMM_USE_OLD_CACHE is set
        if hit or not (url and os.environ.get("TIMM_USE_OLD_CACHE", "0").strip() not in ("", "0")):
            return hit
    return cached_url_file(url) if url else None
