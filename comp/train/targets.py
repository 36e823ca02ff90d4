"""Per-row training targets beyond the hard label: soft pseudo labels and a teacher's probabilities.

When a fit has RowTargets, its training loader yields each image's row number instead of its label,
and `RowTargets.loss` looks the row's targets up:

    loss = (1 - alpha) * label_term + alpha * T^2 * KL(teacher_T || student_T)

label_term is the experiment's loss on the hard labels, or cross-entropy on soft targets when the
fold has soft pseudo rows; teacher_T is the teacher's probabilities p^(1/T) renormalised and
student_T = softmax(logits / T) (the same operation on the student's probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) renormalised per row (T > 1 softens, T < 1 sharpens)."""
    logp = torch.log(probs.clamp_min(EPS)) / temperature
    return torch.softmax(logp, dim=1)


@dataclass
class RowTargets:
    """Targets per row of the fit's training table (real rows first, then pseudo rows)."""

    y: np.ndarray  # (N,) hard class of every row (a soft pseudo row: its top class, for samplers)
    soft: np.ndarray | None = None  # (N, C) label targets (one-hot for labelled rows), when soft pseudo rows exist
    teacher: np.ndarray | None = None  # (N, C) teacher probabilities; NaN rows: none (validation rows)
    alpha: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def _on(self, name: str, device: torch.device) -> torch.Tensor:
        key = f"{name}@{device}"
        if key not in self._tensors:
            value = getattr(self, name)
            dtype = torch.long if name == "y" else torch.float32
            self._tensors[key] = torch.as_tensor(np.array(value), dtype=dtype, device=device)
        return self._tensors[key]

    def loss(self, label_loss: nn.Module, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch whose loader yielded row numbers `rows`."""
        rows = rows.to(logits.device).long()
        if self.soft is not None:
            target = self._on("soft", logits.device)[rows]
            label_term = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        else:
            label_term = label_loss(logits, self._on("y", logits.device)[rows])
        if self.teacher is None or self.alpha == 0:
            return label_term
        t = self.temperature
        teacher = sharpen(self._on("teacher", logits.device)[rows], t)
        student = F.log_softmax(logits / t, dim=1)
        kd = F.kl_div(student, teacher, reduction="batchmean")
        return (1 - self.alpha) * label_term + self.alpha * t * t * kd
