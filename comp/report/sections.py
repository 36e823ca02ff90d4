"""Report sections beyond training curves: config and its sources, environment, error analysis, predict, ensemble."""

from __future__ import annotations

import html
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.report.page import add_section, img_html, report_image, save_figure, table_html
from comp.core.layout import Layout, read_json, write_bytes

log = logging.getLogger("comp.report.page")

GALLERY = 12  # OOF images with the highest loss shown
PAIRS = 5  # most-confused class pairs shown
PAIR_EXAMPLES = 4  # example images per confused pair
CONFIG_ORDER = 95  # the config and environment close the report (after every stage's section); the card opens it


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def environment() -> dict[str, Any]:
    """Python, torch, CUDA, timm, albumentations versions and the GPU name (recorded in scores.json)."""
    env = {"python": platform.python_version(), "torch": _version("torch"), "cuda": None,
           "timm": _version("timm"), "albumentations": _version("albumentations"), "gpu": None,
           "platform": platform.platform(terse=True)}
    try:
        import torch

        env["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return env


def _p(text: str, note: bool = False) -> str:
    return f"<p{' class=note' if note else ''}>{html.escape(text)}</p>"


def config_section(ws: Layout, exp: str, cfg: Any, origins: dict[str, str]) -> Path:
    """The resolved config with its hashes and where each value came from (default, comp.yaml, experiment, --set)."""
    from comp.core.config import value_sources

    rows = [{"key": k, "value": v if isinstance(v, str) else repr(v) if v is None else str(v), "source": s}
            for k, v, s in value_sources(cfg, origins)]
    frame = pd.DataFrame(rows)
    set_here = frame[frame["source"] != "default"]
    counts = ", ".join(f"{n} by {s}" for s, n in set_here["source"].value_counts(sort=False).items())
    body = (_p(f"config hash {cfg.hash()}, train_hash {cfg.train_hash()} (what determines the weights)")
            + "<details><summary>" + html.escape(
                f"{len(set_here)} of {len(frame)} values set ({counts or 'none'}); the rest are defaults "
                "(`comp config -e NAME` prints the same table)") + "</summary>\n"
            + table_html(frame) + "</details>")
    return add_section(ws, exp, "config", "Resolved config", body, order=CONFIG_ORDER)


def environment_section(ws: Layout, exp: str, env: dict[str, Any]) -> Path:
    """Versions and the GPU the experiment was trained with."""
    frame = pd.DataFrame({"": list(env), "value": ["-" if v is None else str(v) for v in env.values()]})
    return add_section(ws, exp, "environment", "Environment", table_html(frame), order=CONFIG_ORDER + 1)


# ---------------------------------------------------------------- error analysis


def oof_losses(oof: pd.DataFrame, classes: tuple, y: np.ndarray) -> pd.DataFrame:
    """Per OOF row: true and predicted class, the predicted probability, p(true) and the log loss."""
    probs = oof[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
    pred = probs.argmax(axis=1)
    p_true = probs[np.arange(len(y)), y]
    names = np.array([str(c) for c in classes], dtype=object)
    return pd.DataFrame({"id": oof["id"].astype(str).to_numpy(), "fold": oof["fold"].to_numpy(),
                         "true": names[y], "predicted": names[pred], "p_predicted": probs.max(axis=1),
                         "p_true": p_true, "loss": -np.log(np.clip(p_true, 1e-12, 1.0)), "y": y, "pred": pred})


def _thumb(path: str, side: int = 96) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.contain(ImageOps.exif_transpose(img).convert("RGB"), (side, side)))
    except OSError:
        return np.full((side, side, 3), 200, dtype=np.uint8)


THUMB = 96  # gallery thumbnails fit in THUMB x THUMB pixels
CAPTION_FONT = 11  # caption size in pixels


def gallery_png(rows: pd.DataFrame, path_of: dict[str, str], cols: int = 6) -> bytes:
    """Images in a grid, each captioned true / predicted (probability) / fold, as PNG bytes.

    Composed with PIL (thumbnails pasted on a white sheet, captions drawn above them): a matplotlib grid of
    subplots costs ~0.5 s a gallery (layout and rendering), this a few milliseconds.
    """
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=CAPTION_FONT)
    texts = [f"true {row.true}\npred {row.predicted} ({row.p_predicted:.2f})\nfold {row.fold}"
             for row in rows.itertuples(index=False)]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max([THUMB] + [int(measure.multiline_textbbox((0, 0), t, font=font, spacing=3)[2]) for t in texts])
    pad, caption = 10, 3 * (CAPTION_FONT + 3) + 4
    cell_w, cell_h = widest + pad, caption + THUMB + pad
    grid_rows = max(1, (len(rows) + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * cell_w + pad, grid_rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (row, text) in enumerate(zip(rows.itertuples(index=False), texts)):
        x, y = pad + (i % cols) * cell_w, pad + (i // cols) * cell_h
        draw.multiline_text((x + (cell_w - pad) // 2, y), text, fill="black", font=font, anchor="ma", align="center",
                            spacing=3)
        thumb = Image.fromarray(_thumb(path_of[row.id], THUMB))
        sheet.paste(thumb, (x + (cell_w - pad - thumb.width) // 2, y + caption))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def confused_pairs(losses: pd.DataFrame, n: int = PAIRS) -> pd.DataFrame:
    """The most frequent (true, predicted) pairs among wrong OOF predictions, with their counts."""
    wrong = losses[losses["y"] != losses["pred"]]
    if wrong.empty:
        return pd.DataFrame(columns=["true", "predicted", "count", "share of true class"])
    counts = wrong.groupby(["true", "predicted"]).size().rename("count").reset_index()
    per_true = losses.groupby("true").size()
    counts["share of true class"] = counts["count"] / counts["true"].map(per_true)
    return counts.sort_values(["count", "true"], ascending=[False, True]).head(n).reset_index(drop=True)


def error_analysis_html(ws: Layout, exp: str, train: pd.DataFrame, oof: pd.DataFrame, classes: tuple) -> str:
    """The OOF images with the highest loss, and the most-confused class pairs with example images."""
    y_of = dict(zip(train["id"].astype(str), train["y"]))
    path_of = dict(zip(train["id"].astype(str), train["path"].astype(str)))
    losses = oof_losses(oof, classes, np.array([y_of[i] for i in oof["id"].astype(str)], dtype=np.int64))
    worst = losses.sort_values("loss", ascending=False, kind="stable").head(GALLERY)
    parts = ["<h3>Error analysis: OOF images with the highest loss</h3>"]
    path, src = report_image(ws, exp, "errors-highest-loss.png")
    write_bytes(path, gallery_png(worst, path_of))
    parts += [img_html(src, "OOF images with the highest loss"),
              table_html(worst[["id", "fold", "true", "predicted", "p_predicted", "p_true", "loss"]])]
    pairs = confused_pairs(losses)
    parts.append("<h3>Most-confused class pairs</h3>")
    if pairs.empty:
        return "\n".join(parts + [_p("no wrong OOF predictions")])
    parts.append(table_html(pairs))
    for i, pair in enumerate(pairs.itertuples(index=False)):
        examples = losses[(losses["true"] == pair.true) & (losses["predicted"] == pair.predicted)]
        examples = examples.sort_values("loss", ascending=False).head(PAIR_EXAMPLES)
        path, src = report_image(ws, exp, f"errors-pair-{i}.png")
        write_bytes(path, gallery_png(examples, path_of, cols=PAIR_EXAMPLES))
        parts += [_p(f"true {pair.true} predicted as {pair.predicted}: {pair.count} images"),
                  img_html(src, f"true {pair.true} predicted {pair.predicted}")]
    return "\n".join(parts)


# ---------------------------------------------------------------- predict and ensemble


def predict_section(ws: Layout, exp: str, summary: dict, metric: Any, classes: tuple, tables: Any = None) -> Path:
    """TTA, folds and rows predicted; with --oof, the OOF score without the TTA, with it, and of each view alone.

    tables: the loaded Tables (targets looked up by id); without them the OOF labels are class names (multiclass).
    """
    body = _p(f"TTA {summary['tta']} ({summary['merge']} of the views), folds {summary['folds']}, "
              f"{summary['test_rows']} test rows")
    plain, tta = ws.oof_csv(exp), ws.oof_tta_csv(exp)
    if summary.get("oof_tta") and plain.is_file() and tta.is_file():
        rows = []
        for name, path in (("no TTA (training's oof.csv)", plain), (f"TTA {summary['tta']} (oof_tta.csv)", tta)):
            frame = pd.read_csv(path, dtype={"id": str, "label": str})
            if tables is not None:
                from comp.data.tables import targets_by_id

                y = targets_by_id(tables, frame["id"])
            else:
                y = frame["label"].map({str(c): i for i, c in enumerate(classes)}).to_numpy()
            rows.append({"OOF predictions": name, metric.name: metric(y, frame[[f"p_{c}" for c in classes]].to_numpy())})
        plain_score = rows[0][metric.name]
        rows += [{"OOF predictions": f"view {view} alone", metric.name: score}
                 for view, score in (summary.get("oof_view_scores") or {}).items()]
        frame = pd.DataFrame(rows)
        frame["gain over no TTA"] = frame[metric.name] - plain_score
        gain = frame[metric.name].iloc[1] - plain_score
        body += table_html(frame) + _p(f"OOF gain of the TTA: {gain:+.4f} {metric.name}"
                                       f"{'' if metric.greater_is_better else ' (lower is better)'}; each view's own "
                                       "score shows which views help and which cost (a flip of digits or text costs)")
    else:
        body += _p("run `comp predict --oof` to measure the TTA's gain on out-of-fold predictions", note=True)
    return add_section(ws, exp, "predict", "Predictions and TTA", body, order=70)


def ensemble_section(ws: Layout, result: dict) -> list[Path]:
    """In each member's report: the blend's members, weights, TTA, OOF and nested estimate."""
    members = result["members"]
    frame = pd.DataFrame({"member": members, "weight": result["weights"], "TTA": [result["tta"][m] for m in members],
                          "OOF from": [result["oof_source"][m] for m in members],
                          "member OOF": [result["member_oof"][m] for m in members]})
    name = Path(result["csv"]).stem
    body = (_p(f"submission {name} ({result['method']}{', bias' if result['bias'] else ''}): OOF "
               f"{result['oof']:.5f} in-sample, nested estimate {result['nested']:.5f} (weights fitted without the "
               f"scored fold), {result['metric']}") + table_html(frame))
    if result.get("thresholds"):
        outputs = result.get("outputs") or [str(i) for i in range(len(result["thresholds"]))]
        body += _p("decision thresholds fitted on the blend's OOF (nested in the estimate above): "
                   + ", ".join(f"{o} {t:.2f}" for o, t in zip(outputs, result["thresholds"])))
    paths = [add_section(ws, m, f"ensemble-{name}", f"Ensemble {name}", body, order=80)
             for m in members if ws.exp_dir(m).is_dir()]
    blended = result.get("oof_blend")
    if blended is not None and blended["task"].kind != "multiclass" and members and ws.exp_dir(members[0]).is_dir():
        from comp.report.page import img_html, report_image, save_figure
        from comp.report.task_figures import task_figures

        figures = []
        for file, fig, alt in task_figures(blended["task"], blended["y"], blended["probs"], prefix=f"blend-{name}",
                                           thresholds=blended["thresholds"]):
            path, src = report_image(ws, members[0], file)
            save_figure(fig, path)
            figures.append(img_html(src, f"{alt} (blend {name}, OOF)"))
        paths.append(add_section(ws, members[0], f"ensemble-{name}", f"Ensemble {name}", body + "\n".join(figures),
                                 order=80))
    return paths


def recorded_environment(ws: Layout, exp: str) -> dict[str, Any] | None:
    """The environment scores.json recorded, if any."""
    path = ws.scores_json(exp)
    return read_json(path).get("environment") if path.is_file() else None
