"""Training augmentation on whole batches in torch (augment.backend torch): the presets' geometry drawn per sample,
the pixels moved on the training device.

The presets `auto` and `light` are geometry only: a small affine jitter plus a shift within the cache margin
(images under 128 px), or a random resized crop (larger ones), and a horizontal flip when the preset flips.
Every one of these is one affine map from the output grid to the cached image, so a batch is drawn as one
(2, 3) matrix per sample on the CPU (microseconds, in the loader, from the sample's own seed: the same
(seed, epoch, draw) gives the same view whatever the batch, the worker count or a resume), shipped with the
uint8 images (a quarter of float32's bytes), and rendered on the device by `F.affine_grid` + `F.grid_sample`
with the normalisation fused in. Per-sample albumentations took ~0.2 ms an image at 32 px on a CPU core:
more than a tiny model's whole training step; on a GPU the CPU side is what starves the card.

Why not kornia or torchvision.transforms.v2: v2 draws one set of parameters per call (the whole batch moves
alike), and kornia draws from torch's global generator per batch, so a sample's view would depend on the
batch it landed in; comp's rule is that it depends on (seed, epoch, draw) alone.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from comp.core.errors import CompError

Norm = tuple[float, float, float]
PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # spreads small seeds over PCG64's 128-bit state
PCG_INC = 0x5851F42D4C957F2D14057B7EF767814F  # a fixed odd stream increment
TRIES = 10  # RandomResizedCrop's attempts at a crop that fits before it falls back to the centre


def normalize_affine(mean: Norm, std: Norm) -> tuple[list[float], list[float]]:
    """(scale, shift) per channel with (x / 255 - mean) / std = x * scale + shift, for uint8 pixels x."""
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


@functools.lru_cache(maxsize=16)
def _norm_tensors(mean: Norm, std: Norm, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """normalize_affine as (1, C, 1, 1) tensors on `device`, made once: a tensor built from Python numbers is a
    blocking copy to a GPU, and a batch from a DataLoader worker brings its own copy of the geometry."""
    return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in normalize_affine(mean, std))


def restart(rng: np.random.Generator, seed: int) -> np.random.Generator:
    """Set a PCG64 generator's state from `seed` in place (~1 us; a new Generator per sample costs ~10x that)."""
    rng.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                               "state": {"state": seed * PCG_MULT % 2**128, "inc": PCG_INC}}
    return rng


class BatchGeometry:
    """One preset's random geometry, from cached (H', W') images to (h, w) inputs, drawn per sample.

    kind "jitter": scale in `scale`, rotation within +-`rotate` degrees about the centre, then a shift of up
    to the cache margin (albumentations' Affine + RandomCrop). kind "resized_crop": a crop of `area` of the
    cached image with aspect ratio in `ratio` (log-uniform), resized to the input (RandomResizedCrop). kind
    "centre": the centre crop evaluation sees. `flip`: mirror half of the samples.
    """

    def __init__(self, kind: str, *, in_hw: tuple[int, int], out_hw: tuple[int, int], flip: bool, mean: Norm,
                 std: Norm, scale: tuple[float, float] = (0.9, 1.1), rotate: float = 10.0,
                 area: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] | None = None,
                 seed: int = 0) -> None:
        if kind not in ("jitter", "resized_crop", "centre"):
            raise CompError(f"unknown batch geometry {kind!r}; one of jitter, resized_crop, centre")
        self.kind, self.flip = kind, flip
        self.in_hw, self.out_hw = tuple(in_hw), tuple(out_hw)
        self.scale, self.rotate, self.area = scale, rotate, area
        aspect = out_hw[1] / out_hw[0]
        self.ratio = ratio or (0.75 * aspect, aspect / 0.75)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.auto: dict[str, Any] | None = None  # augment.preset auto's decision, as on albumentations pipelines
        self._rng = np.random.Generator(np.random.PCG64(0))
        self.seed, self._calls = seed, 0  # for __call__ only: batches draw from their samples' seeds

    def __repr__(self) -> str:
        return (f"BatchGeometry({self.kind!r}, in_hw={self.in_hw}, out_hw={self.out_hw}, flip={self.flip}, "
                f"scale={self.scale}, rotate={self.rotate}, area={self.area})")

    def _reseed(self, seed: int) -> np.random.Generator:
        return restart(self._rng, seed)

    def draw(self, seed: int) -> list[float]:
        """The affine_grid matrix of one sample, row-major (6 numbers): output coordinates in [-1, 1] -> cached-image
        ones (pixel maths in plain floats: a numpy matrix per sample costs more than the draw itself)."""
        rng = self._reseed(seed)
        (H, W), (h, w) = self.in_hw, self.out_hw
        if self.kind == "jitter":
            s = rng.uniform(*self.scale)
            a = math.radians(rng.uniform(-self.rotate, self.rotate))
            # the crop's centre in the scaled, rotated image (pixels from its centre), at a whole-pixel offset as
            # RandomCrop's: without rotation or zoom the view is the cached pixels themselves, as sharp as evaluation's
            cx, cy = rng.integers(0, W - w + 1) - (W - w) / 2, rng.integers(0, H - h + 1) - (H - h) / 2
            m00, m01, m10, m11 = math.cos(a) / s, -math.sin(a) / s, math.sin(a) / s, math.cos(a) / s
            tx, ty = m00 * cx + m01 * cy, m10 * cx + m11 * cy  # input = m @ (output + c): the affine undone
        elif self.kind == "resized_crop":
            cw, ch = self._crop_size(rng, H, W)
            m00, m01, m10, m11 = cw / w, 0.0, 0.0, ch / h
            tx, ty = rng.uniform(-1, 1) * (W - cw) / 2, rng.uniform(-1, 1) * (H - ch) / 2
        else:
            m00, m01, m10, m11, tx, ty = 1.0, 0.0, 0.0, 1.0, 0.0, 0.0
        if self.flip and rng.random() < 0.5:  # mirror the output: the first column changes sign
            m00, m10 = -m00, -m10
        # pixels from the centre <-> affine_grid's [-1, 1] (align_corners=False: the images' outer edges)
        return [m00 * w / W, m01 * h / W, 2 * tx / W, m10 * w / H, m11 * h / H, 2 * ty / H]

    def _crop_size(self, rng: np.random.Generator, H: int, W: int) -> tuple[float, float]:
        for _ in range(TRIES):
            area = rng.uniform(*self.area) * H * W
            ratio = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
            if cw <= W and ch <= H:
                return cw, ch
        ratio = min(max(W / H, self.ratio[0]), self.ratio[1])  # the whole image at the nearest allowed ratio
        return (W, W / ratio) if W / H < ratio else (H * ratio, H)

    def draws(self, seeds: list[int]) -> np.ndarray:
        """(B, 2, 3) matrices for a batch's sample seeds."""
        return np.array([self.draw(int(s)) for s in seeds], np.float32).reshape(len(seeds), 2, 3)

    def __call__(self, *, image: np.ndarray) -> dict[str, torch.Tensor]:
        """One (H', W', C) uint8 image -> {"image": (C, h, w) float32 tensor}, albumentations' calling convention
        (each call draws the next view of this geometry's own sequence, which starts at `seed`)."""
        self._calls += 1
        theta = torch.from_numpy(self.draws([self.seed * 1_000_003 + self._calls]))
        return {"image": self.render(torch.from_numpy(np.ascontiguousarray(image))[None], theta)[0]}

    def render(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(B, H', W', C) uint8 images and (B, 2, 3) matrices, on one device -> (B, C, h, w) normalised float32."""
        x = images.permute(0, 3, 1, 2).float()
        grid = sampling_grid(theta.float(), self.out_hw)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        scale, shift = _norm_tensors(self.mean, self.std, x.device)
        return x.mul_(scale).add_(shift)  # (x / 255 - mean) / std


def sampling_grid(theta: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """F.affine_grid(theta, (B, C, h, w), align_corners=False), as two broadcast multiply-adds (affine_grid's
    batched matmul with an inner size of 3 took 5x longer on a CPU core at 224 px)."""
    h, w = hw
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1  # pixel centres in [-1, 1]
    ys = (torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1
    grid = torch.empty((theta.shape[0], h, w, 2), dtype=theta.dtype, device=theta.device)
    for k in (0, 1):  # grid[..., k] = theta[k, 0] * x + theta[k, 1] * y + theta[k, 2]
        rows = theta[:, k, 1, None] * ys + theta[:, k, 2, None]  # (B, h)
        torch.add(theta[:, k, 0, None, None] * xs, rows[:, :, None], out=grid[..., k])
    return grid


class RawImages:
    """A training batch before its geometry: cached uint8 images and each sample's matrix; `render` on a device."""

    def __init__(self, images: torch.Tensor, theta: torch.Tensor, geometry: BatchGeometry) -> None:
        self.images, self.theta, self.geometry = images, theta, geometry

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> torch.Size:
        """The shape of the rendered batch, (B, C, h, w)."""
        return torch.Size([len(self.images), self.images.shape[-1], *self.geometry.out_hw])

    def pin_memory(self) -> RawImages:  # DataLoader(pin_memory=True) calls this
        return RawImages(self.images.pin_memory(), self.theta.pin_memory(), self.geometry)

    def render(self, device: torch.device | str) -> torch.Tensor:
        """The augmented, normalised (B, C, h, w) float32 batch on `device` (the uint8 images travel, not floats)."""
        images = self.images.to(device, non_blocking=True)
        return self.geometry.render(images, self.theta.to(device, non_blocking=True))
