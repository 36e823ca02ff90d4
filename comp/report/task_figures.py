"""Report figures for the task kinds other than multiclass (comp/core/tasks.py): what to look at after CV.

- multilabel: per-tag precision-recall curves (the 0.5 decision marked, and a fitted threshold when given)
  and per-tag F1 at the decision;
- binary: the ROC curve and the precision-recall curve;
- regression: predicted vs true, and residuals against the prediction;
- multitask: one row-normalised confusion matrix per head (and of the combined label when heads combine).
"""

from __future__ import annotations

import numpy as np

from comp.report.page import plt
from comp.core.tasks import Task


def task_figures(task: Task, y: np.ndarray, outputs: np.ndarray, *, prefix: str,
                 thresholds: np.ndarray | None = None) -> list[tuple[str, plt.Figure, str]]:
    """[(file name, figure, alt text)] for the task's OOF (or blended) outputs against its targets."""
    y, outputs = np.asarray(y), np.asarray(outputs, dtype=np.float64)
    if task.kind == "multilabel":
        return [(f"{prefix}-pr-curves.png", pr_curves(task.outputs, y, outputs, thresholds), "per-tag precision-recall"),
                (f"{prefix}-per-tag.png", per_tag_f1(task.outputs, y, outputs, thresholds), "per-tag F1 at the decision")]
    if task.kind == "binary":
        return [(f"{prefix}-roc.png", roc_figure(y, outputs[:, 0]), "ROC and precision-recall curves")]
    if task.kind == "regression":
        return [(f"{prefix}-scatter.png", scatter_figure(y, outputs[:, 0], task.target_name), "predicted vs true")]
    if task.kind == "multitask":
        return [(f"{prefix}-heads.png", heads_figure(task, y, outputs), "confusion matrix per head")]
    return []


def pr_curves(tags: tuple[str, ...], y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None) -> plt.Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    n = len(tags)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for j, tag in enumerate(tags):
        ax = axes[j // cols][j % cols]
        truth = y[:, j] > 0.5
        if truth.any() and (~truth).any():
            precision, recall, cut = precision_recall_curve(truth, probs[:, j])
            ax.plot(recall, precision, lw=1.2)
            for t, style in ((0.5, "o"), (None if thresholds is None else float(thresholds[j]), "s")):
                if t is None:
                    continue
                k = min(np.searchsorted(cut, t), len(cut) - 1)
                ax.plot(recall[k], precision[k], style, ms=5, label=f"t={t:.2f}")
            ax.set_title(f"{tag} (AP {average_precision_score(truth, probs[:, j]):.3f}, n={int(truth.sum())})", fontsize=8)
            ax.legend(fontsize=6)
        else:
            ax.set_title(f"{tag}: no {'negatives' if truth.all() else 'positives'}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle("precision-recall per tag (o: threshold 0.5, s: fitted threshold)")
    fig.tight_layout()
    return fig


def per_tag_f1(tags: tuple[str, ...], y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None) -> plt.Figure:
    from sklearn.metrics import f1_score

    cut = np.full(len(tags), 0.5) if thresholds is None else np.asarray(thresholds)
    f1 = [f1_score(y[:, j] > 0.5, probs[:, j] >= cut[j], zero_division=0) for j in range(len(tags))]
    support = (y > 0.5).sum(axis=0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(tags) + 2), 3.6))
    ax.bar(np.arange(len(tags)), f1)
    ax.set_xticks(np.arange(len(tags)), [f"{t}\n(n={s})" for t, s in zip(tags, support)], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title("F1 per tag at the decision threshold")
    return fig


def roc_figure(y: np.ndarray, p: np.ndarray) -> plt.Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    truth = np.asarray(y) > 0.5
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    if truth.any() and (~truth).any():
        fpr, tpr, _ = roc_curve(truth, p)
        a.plot(fpr, tpr, lw=1.5, label=f"AUC {roc_auc_score(truth, p):.4f}")
        precision, recall, _ = precision_recall_curve(truth, p)
        b.plot(recall, precision, lw=1.5, label=f"AP {average_precision_score(truth, p):.4f}")
    a.plot([0, 1], [0, 1], ":", color="grey")
    a.set_xlabel("false positive rate")
    a.set_ylabel("true positive rate")
    a.set_title("ROC")
    b.set_xlabel("recall")
    b.set_ylabel("precision")
    b.set_title("precision-recall")
    a.legend()
    b.legend()
    return fig


def scatter_figure(y: np.ndarray, pred: np.ndarray, name: str) -> plt.Figure:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    a.scatter(y, pred, s=6, alpha=0.5)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    a.plot([lo, hi], [lo, hi], ":", color="grey")
    a.set_xlabel(f"true {name}")
    a.set_ylabel(f"predicted {name}")
    a.set_title(f"predicted vs true (RMSE {np.sqrt(np.mean((y - pred) ** 2)):.4g})")
    b.scatter(pred, y - pred, s=6, alpha=0.5)
    b.axhline(0, color="grey", lw=0.8)
    b.set_xlabel(f"predicted {name}")
    b.set_ylabel("residual (true - predicted)")
    b.set_title("residuals")
    return fig


def heads_figure(task: Task, y: np.ndarray, outputs: np.ndarray) -> plt.Figure:
    from comp.core.metrics import confusion_rates

    y = np.asarray(y).reshape(len(y), -1).astype(np.int64)
    panels = [(h.name, h.classes, y[:, i], outputs[:, s].argmax(axis=1))
              for i, (h, s) in enumerate(zip(task.heads, task.head_slices()))]
    if task.combine is not None:
        panels.append(("combined", task.labels, task.combined_codes(y), task.class_probs(outputs).argmax(axis=1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    for ax, (name, classes, truth, pred) in zip(axes[0], panels):
        ax.imshow(confusion_rates(truth, pred, len(classes)), cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=90, fontsize=6)
        ax.set_yticks(ticks, classes, fontsize=6)
        ax.set_title(f"{name} (acc {(truth == pred).mean():.3f})", fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    return fig
