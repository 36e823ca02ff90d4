"""The kind of competition (comp.yaml `task`): what a label is, what the model outputs, what is submitted.

Kinds:
- multiclass (the default): one label per image from a fixed class set; softmax outputs.
- multilabel: several tags per image (`data.label_col` of separated tags, or `data.label_cols` of 0/1
  columns); one sigmoid output per tag.
- binary: one two-valued label; one sigmoid output, the probability of `data.positive`.
- regression: a number; one output in the target's units.
- multitask: one classification head per target (`data.targets: {head: column}`) on one backbone;
  `data.combine` (an arithmetic expression of the heads, or a mapping) builds the submitted label.

A prediction table has one column `p_<output>` per model output (`Task.outputs`): the classes for
multiclass, the tags for multilabel, the positive label for binary, the target's name for regression,
and `<head>=<class>` for multitask. Never imports torch at module level (only `activate` uses it).
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from comp.core.errors import CompError

KINDS = ("multiclass", "multilabel", "binary", "regression", "multitask")
SUBMISSION_KINDS = {
    "multiclass": ("label", "probabilities"),
    "multilabel": ("tags", "probabilities"),
    "binary": ("prob", "label"),
    "regression": ("value",),
    "multitask": ("label", "probabilities"),
}
LOSSES = {
    "multiclass": ("ce", "weighted_ce", "focal", "f1"),
    "multilabel": ("bce", "asl"),
    "binary": ("bce", "asl", "focal"),
    "regression": ("mse", "huber", "bce"),
    "multitask": ("ce",),
}
DEFAULT_LOSS = {"multiclass": "ce", "multilabel": "bce", "binary": "bce", "regression": "mse", "multitask": "ce"}


# ---------------------------------------------------------------- combining heads


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod}


@dataclass(frozen=True)
class Combiner:
    """Builds the submitted label from head values: an expression (`mask*6 + gender*3 + age`) or a mapping
    from the head values, space-separated in `data.targets` order (`"wear male 0": 0`), to a label."""

    heads: tuple[str, ...]
    expression: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: Any, heads: Sequence[str]) -> Combiner:
        heads = tuple(heads)
        if isinstance(spec, dict):
            return cls(heads, mapping=tuple((str(k), str(v)) for k, v in spec.items()))
        if not isinstance(spec, str) or not spec.strip():
            raise CompError(f"data.combine must be an expression of the heads {list(heads)} (e.g. "
                            f"{'*3 + '.join(heads)}) or a mapping; got {spec!r}")
        try:
            tree = ast.parse(spec, mode="eval")
        except SyntaxError:
            raise CompError(f"data.combine {spec!r} is not an arithmetic expression; use head names, integers, "
                            "+ - * // % and parentheses") from None
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id not in heads:
                raise CompError(f"data.combine {spec!r} names {node.id!r}, which is not a head; heads: {list(heads)}")
            if not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Name, ast.Load,
                                     ast.Constant, *_OPS)):
                raise CompError(f"data.combine {spec!r} uses {type(node).__name__}; only head names, integers, "
                                "+ - * // % and parentheses are allowed")
            if isinstance(node, ast.Constant) and not isinstance(node.value, int):
                raise CompError(f"data.combine {spec!r} has the constant {node.value!r}; only integers are allowed")
        return cls(heads, expression=spec)

    def __call__(self, values: Sequence[str]) -> str:
        """The label of one combination of head values (as written in train.csv)."""
        if self.mapping:
            key = " ".join(values)
            found = dict(self.mapping).get(key)
            if found is None:
                raise CompError(f"data.combine has no entry for head values {key!r} ({' '.join(self.heads)}); "
                                "add it to the mapping")
            return found
        env = {}
        for head, value in zip(self.heads, values):
            try:
                number = float(value)
            except ValueError:
                raise CompError(f"data.combine {self.expression!r} needs numeric head values, but {head} has "
                                f"{value!r}; map the values to numbers in train.csv or use a mapping") from None
            if not number.is_integer():
                raise CompError(f"data.combine needs integer head values, but {head} has {value!r}")
            env[head] = int(number)
        return str(_evaluate(ast.parse(self.expression, mode="eval").body, env))


def _evaluate(node: ast.AST, env: dict[str, int]) -> int:
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, env)
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](_evaluate(node.left, env), _evaluate(node.right, env))
    raise CompError(f"cannot evaluate {ast.dump(node)} in data.combine")


# ---------------------------------------------------------------- the task


@dataclass(frozen=True)
class Head:
    """One classification head of a multitask model: its name, its train.csv column, its classes."""

    name: str
    column: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    kind: str
    outputs: tuple[str, ...]  # the prediction-table columns (p_<output>), in model-output order
    labels: tuple[str, ...] = ()  # multiclass: classes; multilabel: tags; binary: (negative, positive); multitask: combined labels
    heads: tuple[Head, ...] = ()
    scale: tuple[float, float] | None = None  # regression: (min, max) of the training target
    combine: Combiner | None = None
    combos: tuple[int, ...] = ()  # multitask + combine: the combined label index of each head combination
    target_name: str = "label"
    tag_sep: str | None = None
    squash: bool = False  # regression trained with loss bce: the output is a logit of the scaled target

    def for_config(self, cfg: Any) -> Task:
        """This task as an experiment trains it (regression with train.loss bce squashes its output)."""
        from dataclasses import replace

        squash = self.kind == "regression" and loss_name(self.kind, cfg.train.loss) == "bce"
        return self if squash == self.squash else replace(self, squash=squash)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    def head_slices(self) -> list[slice]:
        """Each head's columns in the model output (multitask)."""
        out, start = [], 0
        for head in self.heads:
            out.append(slice(start, start + len(head.classes)))
            start += len(head.classes)
        return out

    # ------------------------------------------------------------ outputs

    def activate(self, logits: Any) -> Any:
        """Model logits (torch, (N, outputs)) -> the values a prediction table holds (probabilities or values)."""
        import torch

        logits = logits.float()
        if self.kind == "multiclass":
            return torch.softmax(logits, dim=1)
        if self.kind in ("multilabel", "binary"):
            return torch.sigmoid(logits)
        if self.kind == "regression":
            lo, hi = self.scale or (0.0, 1.0)
            scaled = torch.sigmoid(logits) if self.squash else logits  # the model predicts the target scaled to [0, 1]
            return scaled * (hi - lo) + lo
        return torch.cat([torch.softmax(logits[:, s], dim=1) for s in self.head_slices()], dim=1)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """Merged (averaged) outputs made valid again: rows of a softmax sum to 1, per head for multitask."""
        values = np.asarray(values, dtype=np.float64)
        if self.kind == "multiclass":
            return values / np.clip(values.sum(axis=1, keepdims=True), 1e-12, None)
        if self.kind == "multitask":
            out = values.copy()
            for s in self.head_slices():
                out[:, s] /= np.clip(out[:, s].sum(axis=1, keepdims=True), 1e-12, None)
            return out
        if self.kind in ("multilabel", "binary"):
            return np.clip(values, 0.0, 1.0)
        return values

    def class_probs(self, values: np.ndarray) -> np.ndarray | None:
        """Probabilities over the submitted classes: multiclass as is; multitask with combine: the joint of the
        heads (their product, assuming independent heads) summed per combined label; else None."""
        values = np.asarray(values, dtype=np.float64)
        if self.kind == "multiclass":
            return values
        if self.kind != "multitask" or self.combine is None:
            return None
        joint = np.ones((len(values), 1))
        for s in self.head_slices():
            joint = (joint[:, :, None] * values[:, s][:, None, :]).reshape(len(values), -1)
        combos = np.asarray(self.combos)
        seen = combos >= 0  # combinations never seen in train.csv are not labels: their mass is dropped
        onehot = np.zeros((len(combos), len(self.labels)))
        onehot[np.flatnonzero(seen), combos[seen]] = 1.0
        probs = joint @ onehot
        return probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)

    def decide(self, values: np.ndarray, thresholds: np.ndarray | None = None) -> list[str] | np.ndarray:
        """The submitted value of each row: a label, tags, a probability or a number."""
        values = np.asarray(values, dtype=np.float64)
        if self.kind == "regression":
            return values[:, 0]
        if self.kind == "binary":
            t = 0.5 if thresholds is None else float(np.ravel(thresholds)[0])
            return [self.labels[1] if p >= t else self.labels[0] for p in values[:, 0]]
        if self.kind == "multilabel":
            t = np.full(self.n_outputs, 0.5) if thresholds is None else np.asarray(thresholds)
            on = values >= t
            sep = " " if self.tag_sep is None else self.tag_sep
            return [sep.join(tag for tag, flag in zip(self.outputs, row) if flag) for row in on]
        probs = self.class_probs(values)
        if probs is not None:
            return [self.labels[i] for i in probs.argmax(axis=1)]
        picks = [np.asarray(h.classes)[values[:, s].argmax(axis=1)] for h, s in zip(self.heads, self.head_slices())]
        return [" ".join(map(str, row)) for row in zip(*picks)]

    def head_values(self, values: np.ndarray) -> dict[str, list[str]]:
        """multitask: each head's predicted class per row."""
        values = np.asarray(values)
        return {h.name: [h.classes[i] for i in values[:, s].argmax(axis=1)]
                for h, s in zip(self.heads, self.head_slices())}

    # ------------------------------------------------------------ targets

    def stratify_codes(self, targets: np.ndarray, *, bins: int = 10) -> np.ndarray | None:
        """An int code per row that folds stratify on (None for multilabel: folds stratify the tag matrix)."""
        targets = np.asarray(targets)
        if self.kind in ("multiclass", "binary"):
            return targets.astype(np.int64)
        if self.kind == "regression":
            return quantile_bins(targets, bins)
        if self.kind == "multitask":
            if self.combine is not None:
                return self.combined_codes(targets)
            _, codes = np.unique(targets, axis=0, return_inverse=True)
            return codes.reshape(-1).astype(np.int64)
        return None

    def combined_codes(self, targets: np.ndarray) -> np.ndarray:
        """multitask + combine: the combined label index of each row's head codes."""
        sizes = [len(h.classes) for h in self.heads]
        flat = np.ravel_multi_index(tuple(np.asarray(targets).T), sizes)
        return np.asarray(self.combos, dtype=np.int64)[flat]


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Codes 0..b-1 of equal-count bins of a numeric target (fewer bins when values repeat)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right").astype(np.int64)


@dataclass(frozen=True)
class Targets:
    """What load_tables derives from train.csv for a task: the task, the target array, a label text per row."""

    task: Task
    targets: np.ndarray
    label_text: pd.Series
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # stratification / class codes


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CompError(f"unknown task {kind!r}; use one of: {', '.join(KINDS)}")


def submission_kind(kind: str, configured: str | None) -> str:
    """The submission kind for a task: the configured one when valid for it, else the task's first."""
    allowed = SUBMISSION_KINDS[kind]
    if configured is None:
        return allowed[0]
    value = "probabilities" if configured == "probs" else configured
    if value not in allowed:
        raise CompError(f"submission.kind {configured!r} does not fit task {kind!r}; use one of: {', '.join(allowed)}")
    return value


def loss_name(kind: str, configured: str) -> str:
    """train.loss resolved for the task (`auto` -> the task's default); refused when it does not fit."""
    name = DEFAULT_LOSS[kind] if configured == "auto" else configured
    if name not in LOSSES[kind]:
        raise CompError(f"train.loss {configured!r} does not fit task {kind!r}; use auto or one of: "
                        f"{', '.join(LOSSES[kind])}")
    return name


def combos_of(heads: Sequence[Head], combine: Combiner, order: Any,
              seen: np.ndarray | None = None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(combined labels in class order, the label index of every head combination in C order).

    seen: the head codes (N, H) of train.csv; only combined labels that occur there are labels (the index of a
    combination that never occurs is -1), so a combination no image has is never predicted or scored.
    """
    combos = list(itertools.product(*(h.classes for h in heads)))
    values = [combine(tuple(combo)) for combo in combos]
    present = set(values)
    if seen is not None:
        sizes = [len(h.classes) for h in heads]
        present = {values[i] for i in np.unique(np.ravel_multi_index(tuple(np.asarray(seen).T), sizes))}
    labels = tuple(order(sorted(present)))
    index = {v: i for i, v in enumerate(labels)}
    return labels, tuple(index.get(v, -1) for v in values)


def finite_scale(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CompError("the regression target has non-finite values; fix train.csv")
    return (lo, hi if hi > lo else lo + 1.0)
