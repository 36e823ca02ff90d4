#!/usr/bin/env python
"""Offline inference for a bundle written by `comp export`: the submission from the test images, without comp or internet.

    python predict.py --images DIR --csv test.csv --out submission.csv [--device cuda] [--batch-size N]
                      [--runtime torch|onnx] [--sample sample_submission.csv]

Needs torch, timm (and the safetensors it ships with), numpy, pandas, Pillow and OpenCV; reads only
the files beside it (bundle.json, <member>.fold<k>.safetensors or .onnx). Every step mirrors comp's
own evaluation exactly: decode (EXIF, 16-bit, alpha), crop to the box with its margin, resize to the
cached size (area when shrinking, cubic when enlarging), centre crop to the input, normalise in
float32, ttach's TTA views in ttach's order with a softmax per view, fold mean, the probabilities as
comp's test.csv stores them (6 decimals), the blend (mean | geometric | rank | vote, per-class bias),
and the submission in the competition's format. `comp export` checks this file against comp itself.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

BUNDLE_FORMAT = 1
HERE = Path(__file__).resolve().parent
EPS = 1e-7
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class BundleError(Exception):
    """A problem with the inputs or the bundle, said in one line."""


# ---------------------------------------------------------------- images (comp.data.images, comp.data.cache)


def read_rgb(path):
    """(H, W, 3) uint8 RGB from grayscale, RGBA, palette, 16-bit or EXIF-rotated files."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            img = Image.fromarray((arr / peak * 255.0).round().clip(0, 255).astype(np.uint8))
        elif img.mode == "F":
            arr = np.asarray(img, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            img = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def crop_box(img, box, margin, fractional=False):
    """The box (x0, y0, x1, y1) grown by `margin` x its size on each side, clipped; no usable box keeps the image."""
    if box is None or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return img
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (float(v) * s for v, s in zip(box, (w, h, w, h) if fractional else (1, 1, 1, 1)))
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    xa, xb = int(np.clip(np.floor(x0 - mx), 0, w)), int(np.clip(np.ceil(x1 + mx), 0, w))
    ya, yb = int(np.clip(np.floor(y0 - my), 0, h)), int(np.clip(np.ceil(y1 + my), 0, h))
    if xb - xa < 2 or yb - ya < 2:
        return img
    return img[ya:yb, xa:xb]


def resize_cached(img, hw):
    """To the cached size: area averaging when shrinking, cubic when enlarging."""
    if img.shape[:2] == tuple(hw):
        return np.ascontiguousarray(img)
    shrink = img.shape[0] >= hw[0] and img.shape[1] >= hw[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(img, (hw[1], hw[0]), interpolation=interp)


def fraction_boxes(boxes):
    """Whether every finite box lies within [0, 1]: then boxes are fractions of the image size."""
    if boxes is None:
        return False
    finite = boxes[np.isfinite(boxes).all(axis=1)]
    return len(finite) > 0 and float(finite.max()) <= 1.0 and float(finite.min()) >= 0.0


def to_input(img, hw):
    """The eval pipeline's geometry: centre crop from the cached size to the input, then resize (bilinear)."""
    h, w = hw
    if img.shape[0] < h or img.shape[1] < w:
        raise BundleError(f"image of {img.shape[:2]} is smaller than the input {hw}; the bundle is damaged")
    if img.shape[:2] != (h, w):
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        img = img[y0:y0 + h, x0:x0 + w]
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def normalise(img, mean, std):
    """(H, W, 3) uint8 -> (3, H, W) float32: x / 255 - mean, / std, as one fused OpenCV pass per channel."""
    out = np.empty((len(mean), *img.shape[:2]), np.float32)
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(img))):
        scale, shift = 1.0 / (255.0 * std[c]), -mean[c] / std[c]
        res = cv2.addWeighted(plane, scale, plane, 0.0, shift, dst=out[c], dtype=cv2.CV_32F)
        if not np.may_share_memory(res, out):
            out[c] = res
    return out


def prepare(path, box, pre, fractional):
    """One image exactly as comp's eval loader hands it to the model: (3, h, w) float32."""
    img = read_rgb(path)
    img = crop_box(img, box, pre["bbox_margin"] if box is not None else 0.0, fractional=fractional)
    img = to_input(resize_cached(img, pre["cache_hw"]), pre["input_hw"])
    return normalise(img, pre["mean"], pre["std"])


# ---------------------------------------------------------------- TTA (ttach's views, in ttach's order)


def _crops(ch, cw):
    def center(x):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        return x[:, :, h - ch // 2:h + ch // 2 + ch % 2, w - cw // 2:w + cw // 2 + cw % 2]

    return [lambda x: x[:, :, 0:ch, 0:cw], lambda x: x[:, :, -ch:, 0:cw], lambda x: x[:, :, -ch:, -cw:],
            lambda x: x[:, :, 0:ch, -cw:], center]


def _scale(s):
    def view(x):
        size = (int(x.shape[2] * s), int(x.shape[3] * s))
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=None)

    return view


def _product(*stages):
    """Every combination of one function per stage, applied in stage order (ttach's Compose)."""
    views = [lambda x: x]
    for stage in stages:
        views = [(lambda a, b: (lambda x: b(a(x))))(v, f) for v in views for f in stage]
    return views


def tta_views(spec, hw):
    """The list of view functions of a TTA spec {name, crop, scales} for inputs of (h, w)."""
    ident, hflip, vflip = (lambda x: x), (lambda x: x.flip(3)), (lambda x: x.flip(2))
    name = spec["name"]
    crop = (max(1, int(hw[0] * spec["crop"])), max(1, int(hw[1] * spec["crop"])))
    stages = {
        "none": [],
        "hflip": [[ident, hflip]],
        "vflip": [[ident, vflip]],
        "flip": [[ident, hflip], [ident, vflip]],
        "d4": [[ident, hflip], [lambda x, k=k: torch.rot90(x, k, (2, 3)) if k else x for k in range(4)]],
        "multiscale": [[ident] + [_scale(s) for s in spec["scales"] if s != 1]],
        "five_crop": [_crops(*crop)],
        "ten_crop": [[ident, hflip], _crops(*crop)],
    }
    if name not in stages:
        raise BundleError(f"unknown TTA {name!r} in bundle.json")
    return _product(*stages[name])


# ---------------------------------------------------------------- task kinds (comp.core.tasks)


def task_of(bundle):
    """The bundle's task (bundle.json `task`); a bundle without one is multiclass over its classes."""
    return bundle.get("task") or {"kind": "multiclass", "outputs": [str(c) for c in bundle["classes"]]}


def head_slices(task):
    out, start = [], 0
    for head in task.get("heads") or []:
        out.append(slice(start, start + len(head["classes"])))
        start += len(head["classes"])
    return out


def activate(task, logits):
    """Logits -> the values comp's prediction tables hold: softmax, sigmoid, the target's units, softmax per head."""
    kind = task["kind"]
    if kind == "multiclass":
        return torch.softmax(logits, dim=1)
    if kind in ("multilabel", "binary"):
        return torch.sigmoid(logits)
    if kind == "regression":
        lo, hi = task["scale"]
        return (torch.sigmoid(logits) if task.get("squash") else logits) * (hi - lo) + lo
    return torch.cat([torch.softmax(logits[:, s], dim=1) for s in head_slices(task)], dim=1)


def normalise_outputs(task, values):
    """Averaged outputs made valid again (rows of a softmax sum to 1; per head for multitask; tags in [0, 1])."""
    values = np.asarray(values, dtype=np.float64)
    kind = task["kind"]
    if kind == "multiclass":
        return values / np.clip(values.sum(axis=1, keepdims=True), 1e-12, None)
    if kind == "multitask":
        out = values.copy()
        for s in head_slices(task):
            out[:, s] /= np.clip(out[:, s].sum(axis=1, keepdims=True), 1e-12, None)
        return out
    if kind in ("multilabel", "binary"):
        return np.clip(values, 0.0, 1.0)
    return values


def class_probs(task, values):
    """multitask with combine: the heads' joint probabilities summed per combined label."""
    joint = np.ones((len(values), 1))
    for s in head_slices(task):
        joint = (joint[:, :, None] * values[:, s][:, None, :]).reshape(len(values), -1)
    combos = np.asarray(task["combos"])
    onehot = np.zeros((len(combos), len(task["labels"])))
    seen = combos >= 0
    onehot[np.flatnonzero(seen), combos[seen]] = 1.0
    probs = joint @ onehot
    return probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)


def task_submission(task, table, sub, order, columns):
    """The submission of a task other than multiclass (as comp.blend.submission writes it)."""
    values, kind = table.to_numpy(), sub["kind"]
    head = pd.DataFrame({sub["id_col"]: list(order)})
    combined = task["kind"] == "multitask" and task.get("combine")
    if task["kind"] == "multitask" and kind == "label" and not combined:
        for h, s in zip(task["heads"], head_slices(task)):
            head[h["column"]] = [h["classes"][i] for i in values[:, s].argmax(axis=1)]
        return head
    if kind == "probabilities":
        names = task["labels"] if combined else task["outputs"]
        frame = pd.DataFrame(class_probs(task, values) if combined else values, columns=[str(n) for n in names])
        return pd.concat([head, frame[[c for c in columns if c in frame.columns]]], axis=1)
    if kind in ("prob", "value"):
        head[sub["target_col"]] = values[:, 0]
        return head
    thresholds = task.get("thresholds")
    if task["kind"] == "binary":
        t = 0.5 if thresholds is None else float(thresholds[0])
        head[sub["target_col"]] = [task["labels"][1] if p >= t else task["labels"][0] for p in values[:, 0]]
    elif task["kind"] == "multilabel":
        t = np.full(values.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        sep = task.get("tag_sep") or " "
        head[sub["target_col"]] = [sep.join(o for o, on in zip(task["outputs"], row) if on) for row in values >= t]
    else:  # multitask with combine, kind label
        head[sub["target_col"]] = [task["labels"][i] for i in class_probs(task, values).argmax(axis=1)]
    return head


def merge_views(forward, images, views, merge, autocast, task=None):
    """(B, C) float32 outputs: the task's activation per view (softmax for classes), then mean, or geometric mean
    renormalised (classes only)."""
    acc = None
    task = task or {"kind": "multiclass"}
    for view in views:
        with autocast():
            logits = forward(view(images).contiguous())
        probs = activate(task, logits.float())
        term = probs if merge == "mean" else torch.log(probs.clamp_min(1e-7))
        acc = term if acc is None else acc + term
    acc = acc / len(views)
    return acc if merge == "mean" else torch.softmax(acc, dim=1)


# ---------------------------------------------------------------- models


def load_state(path):
    """A fold's weights from its .safetensors file; a missing or foreign file is a BundleError naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path} is missing from the bundle; re-export it with `comp export`")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError (a torch .pt or a damaged file), OSError
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise BundleError(f"{path} is not a safetensors weights file ({reason}); re-export the bundle with "
                          "`comp export` instead of replacing its weights files") from None


def torch_forward(member, fold, device, folder=HERE):
    """A fold model (timm, built without downloading anything) with its weights, as a forward function."""
    import timm

    spec = member["model"]
    kwargs = {"num_classes": spec["num_classes"], "drop_rate": spec["drop_rate"]}
    if spec.get("drop_path_rate") is not None:
        kwargs["drop_path_rate"] = spec["drop_path_rate"]
    model = timm.create_model(spec["name"], pretrained=False, **kwargs)
    model.load_state_dict(load_state(Path(folder) / member["weights"][str(fold)]))
    model = model.eval().to(device)
    return model


def onnx_forward(member, fold, device, folder=HERE):
    """A fold's ONNX graph under onnxruntime, as a forward function over torch tensors (logits)."""
    import onnxruntime as ort

    path = member.get("onnx", {}).get(str(fold))
    if path is None:
        raise BundleError("this bundle has no ONNX models; export it with `comp export --onnx` or use --runtime torch")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(Path(folder) / path), providers=providers)

    def forward(x):
        out = session.run(None, {"image": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    return forward


def autocast_for(amp, device):
    """comp's train.amp: auto = bf16 (fp16 without bf16) on CUDA, off on CPU."""
    dtype = None
    if amp == "auto" and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif amp in ("bf16", "fp16"):
        if amp == "fp16" and device.type != "cuda":
            raise BundleError("amp fp16 needs a CUDA GPU; pass --amp off or --device cuda")
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ---------------------------------------------------------------- one member: folds x TTA over the images


def predict_member(member, paths, boxes, *, device, batch_size=None, runtime="torch", amp=None, workers=4,
                   folder=HERE, fractional=None, log=print, task=None):
    """(N, C) float64 fold-mean probabilities (the task's outputs) of one member over the images, in `paths` order."""
    task = task or {"kind": "multiclass"}
    make = onnx_forward if runtime == "onnx" else torch_forward
    forwards = [make(member, fold, device, folder) for fold in member["folds"]]
    views = tta_views(member["tta"], member["preprocess"]["input_hw"])
    autocast = autocast_for(amp or member["amp"], device)
    fractional = fraction_boxes(boxes) if fractional is None else fractional
    pre = member["preprocess"]
    batch_size = batch_size or member["batch_size"]
    per_fold = [[] for _ in forwards]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(paths), batch_size):
            rows = range(start, min(start + batch_size, len(paths)))
            arrays = pool.map(lambda i: prepare(paths[i], None if boxes is None else boxes[i], pre, fractional), rows)
            images = torch.from_numpy(np.stack(list(arrays))).to(device)
            with torch.inference_mode():
                for f, forward in enumerate(forwards):
                    per_fold[f].append(merge_views(forward, images, views, member["tta"]["merge"], autocast, task).cpu())
            log(f"{member['name']}: {rows.stop}/{len(paths)} images")
    folds = [normalise_outputs(task, torch.cat(chunks).double().numpy()) for chunks in per_fold]
    return np.mean(folds, axis=0)


def as_stored(ids, probs, classes):
    """The probabilities as comp's test.csv holds them (written with 6 decimals, read back by pandas)."""
    frame = pd.DataFrame(np.asarray(probs), columns=[f"p_{c}" for c in classes])
    frame.insert(0, "id", ids)
    text = frame.to_csv(index=False, float_format="%.6f", lineterminator="\n")
    back = pd.read_csv(io.StringIO(text), dtype={"id": str})
    return back[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)


# ---------------------------------------------------------------- blend (comp.blend.ensemble) and submission (comp.blend.submission)


def rankdata_columns(probs):
    """scipy.stats.rankdata(probs, axis=0) (average ranks of ties), without scipy."""
    out = np.empty(probs.shape, dtype=np.float64)
    for c in range(probs.shape[1]):
        col = probs[:, c]
        order = np.argsort(col, kind="mergesort")
        sorted_col = col[order]
        starts = np.r_[True, sorted_col[1:] != sorted_col[:-1]]
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        counts = np.diff(np.r_[first, len(col)])
        ranks = first + (counts + 1) / 2.0  # average of 1-based ranks first+1 .. first+count
        out[order, c] = ranks[group]
    return out


def contributions(probs, method):
    """What one member adds to a blend: (N, C) float64."""
    if method == "mean":
        return np.asarray(probs, dtype=np.float64)
    if method == "geometric":
        return np.log(np.clip(probs, EPS, 1.0))
    if method == "rank":
        return rankdata_columns(probs) / len(probs)
    if method == "vote":
        onehot = np.zeros(probs.shape, dtype=np.float64)
        onehot[np.arange(len(probs)), np.argmax(probs, axis=1)] = 1.0
        return onehot
    raise BundleError(f"unknown blend method {method!r} in bundle.json")


def finish(summed, method, task=None):
    """Weighted sum of contributions -> probabilities summing to 1 per row (another task: its normalised mean)."""
    if task is not None and task["kind"] != "multiclass":
        return normalise_outputs(task, summed) if method == "mean" else summed
    if method == "geometric":
        z = np.exp(summed - summed.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    total = summed.sum(axis=1, keepdims=True)
    return summed / np.where(total > 0, total, 1.0)


def blend(probs, weights, method, task=None):
    """Members' (N, C) probabilities blended with weights (normalised to sum 1)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    summed = sum(wi * contributions(p, method) for wi, p in zip(w, probs) if wi > 0)
    if method == "vote":
        summed = summed + 1e-6 * sum(wi * np.asarray(p) for wi, p in zip(w, probs))
    return finish(summed, method, task)


def apply_bias(probs, bias):
    """softmax(log p + bias), or the probabilities unchanged without a bias."""
    if bias is None:
        return probs
    return finish(np.log(np.clip(probs, EPS, 1.0)) + np.asarray(bias, dtype=np.float64), "geometric")


def class_columns(classes, sample_columns):
    """Probability columns: the class names, in the sample's column order when it lists them all."""
    names = [str(c) for c in classes]
    if sample_columns and set(names) <= set(sample_columns):
        return [c for c in sample_columns if c in names]
    return names


def build_submission(ids, probs, classes, sub, order, columns, task=None):
    """The submission table in the competition's format, rows in `order`."""
    table = pd.DataFrame(np.asarray(probs, dtype=np.float64), index=pd.Index([str(i) for i in ids]),
                         columns=[str(c) for c in classes])
    missing = [i for i in order if i not in table.index]
    if missing:
        raise BundleError(f"{len(missing)} submission ids have no image row, e.g. {missing[:3]}")
    table = table.loc[list(order)]
    if task is not None and task["kind"] != "multiclass":
        return task_submission(task, table, sub, order, columns)
    if sub["kind"] == "label":
        labels = np.asarray(list(classes), dtype=object)[table.to_numpy().argmax(axis=1)]
        return pd.DataFrame({sub["id_col"]: list(order), sub["target_col"]: labels})
    return pd.concat([pd.DataFrame({sub["id_col"]: list(order)}), table[columns].reset_index(drop=True)], axis=1)


def submission_from_members(bundle, ids, member_probs, order, sample_columns=None):
    """Members' fold-mean probabilities -> the blended submission frame, exactly as `comp ensemble` makes it."""
    classes, task = bundle["classes"], task_of(bundle)
    stored = [as_stored(ids, p, classes) for p in member_probs]
    spec = bundle["blend"]
    probs = apply_bias(blend(stored, spec["weights"], spec["method"], task), spec["bias"])
    sub = bundle["submission"]
    names = task["labels"] if task["kind"] == "multitask" and task.get("combine") else classes
    columns = class_columns(names, sample_columns) if sample_columns else sub["columns"]
    return build_submission(ids, probs, classes, sub, order, columns, task)


def csv_text(frame):
    """A frame as comp writes every CSV: no index, 6-decimal floats, '\\n' line ends."""
    return frame.to_csv(index=False, float_format="%.6f", lineterminator="\n")


# ---------------------------------------------------------------- inputs


def read_table(path, text_cols):
    """A CSV with the given columns read as text, exactly as written."""
    if not Path(path).is_file():
        raise BundleError(f"{path} does not exist")
    return pd.read_csv(path, dtype={c: str for c in text_cols}, keep_default_na=False, na_values=[""])


def test_rows(bundle, csv_path, images):
    """(ids, image paths, boxes or None) of the test CSV; images by the image column, else by id (+ extension)."""
    spec = bundle["test"]
    id_cols = [spec["id_col"], bundle["submission"]["id_col"]]
    frame = read_table(csv_path, [*id_cols, spec["image_col"]])
    id_col = next((c for c in id_cols if c in frame.columns), None)
    if id_col is None:
        raise BundleError(f"{csv_path} has no id column ({' or '.join(id_cols)}); columns: {', '.join(map(str, frame.columns))}")
    ids = frame[id_col].astype(str).tolist()
    if spec["image_col"] in frame.columns:
        paths = [str(Path(images) / str(p)) for p in frame[spec["image_col"]]]
    else:
        paths = [find_image(Path(images), i, spec.get("extension")) for i in ids]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise BundleError(f"{len(missing)} of {len(paths)} images do not exist, e.g. {missing[:3]}; check --images")
    boxes = None
    if spec.get("bbox_cols"):
        lacking = [c for c in spec["bbox_cols"] if c not in frame.columns]
        if lacking:
            raise BundleError(f"{csv_path} lacks the box columns {lacking} the models were trained with")
        boxes = np.stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in spec["bbox_cols"]], axis=1)
    return ids, paths, boxes


def find_image(images, image_id, extension):
    """images/<id>, or images/<id><ext> with the training images' extension first."""
    candidates = [images / image_id] + [images / f"{image_id}{e}" for e in ([extension] if extension else []) + list(IMAGE_EXTENSIONS)]
    for path in candidates:
        if path.is_file():
            return str(path)
    return str(candidates[-1] if not extension else images / f"{image_id}{extension}")


def read_bundle(folder=HERE):
    """bundle.json, checked for its format version."""
    doc = json.loads((Path(folder) / "bundle.json").read_text(encoding="utf-8"))
    if doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle.json has format {doc.get('format')}; this predict.py reads format {BUNDLE_FORMAT}")
    return doc


def warn_versions(bundle, log):
    """Say when torch or timm differ (major.minor) from the environment that exported the models."""
    import timm

    for name, have in (("torch", torch.__version__), ("timm", timm.__version__)):
        want = bundle.get("versions", {}).get(name)
        if want and want.split(".")[:2] != have.split(".")[:2]:
            log(f"note: {name} {have} here, {want} where the bundle was made; predictions may differ slightly")


# ---------------------------------------------------------------- command line


def parse_args(argv):
    p = argparse.ArgumentParser(description="Write the submission of this comp bundle from test images.")
    p.add_argument("--images", required=True, help="Folder of the test images (paths in --csv are relative to it).")
    p.add_argument("--csv", required=True, help="Test CSV: the id column, and the image column or images named <id>.<ext>.")
    p.add_argument("--out", required=True, help="Where to write the submission CSV.")
    p.add_argument("--sample", default=None, help="Sample submission: row order and probability column order (default: --csv's order).")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto).")
    p.add_argument("--batch-size", type=int, default=None, help="Images per batch (default: as comp predicted).")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="torch (default) or onnx (onnxruntime).")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default=None, help="Mixed precision (default: as trained).")
    p.add_argument("--workers", type=int, default=4, help="Threads decoding images.")
    p.add_argument("--probs", default=None, help="Also write each member's fold-mean probabilities here (a folder).")
    return p.parse_args(argv)


def resolve_device(spec):
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BundleError(f"--device {spec} but no CUDA GPU is usable here; use --device cpu")
    return device


def run(args, log=print):
    """Predict every member, blend, write the submission; returns the frame written."""
    started = time.time()
    bundle = read_bundle()
    warn_versions(bundle, log)
    device = resolve_device(args.device)
    ids, paths, boxes = test_rows(bundle, args.csv, args.images)
    order, sample_columns = ids, None
    if args.sample:
        sample = read_table(args.sample, [bundle["submission"]["id_col"]])
        order, sample_columns = sample[bundle["submission"]["id_col"]].astype(str).tolist(), [str(c) for c in sample.columns]
    member_probs = []
    for member in bundle["members"]:
        probs = predict_member(member, paths, boxes, device=device, batch_size=args.batch_size, runtime=args.runtime,
                               amp=args.amp, workers=args.workers, log=log, task=task_of(bundle))
        member_probs.append(probs)
        if args.probs:
            Path(args.probs).mkdir(parents=True, exist_ok=True)
            frame = pd.DataFrame(probs, columns=[f"p_{c}" for c in bundle["classes"]])
            frame.insert(0, "id", ids)
            (Path(args.probs) / f"{member['name']}.csv").write_text(csv_text(frame), encoding="utf-8")
    frame = submission_from_members(bundle, ids, member_probs, order, sample_columns)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(csv_text(frame), encoding="utf-8")
    log(f"wrote {args.out}: {len(frame)} rows from {len(bundle['members'])} member(s) in {time.time() - started:.1f}s")
    return frame


def main(argv=None):
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
