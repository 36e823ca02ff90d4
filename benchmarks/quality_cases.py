"""The quality suite's data: each builder writes one comp workspace with a hidden test split drawn by group.

Every builder takes (root, quick, split) and writes data/images/*.png, data/{train,test,sample_submission}.csv,
hidden/solution.csv (read only by benchmarks/quality.py) and comp.yaml. The hidden split is ~22% of the
groups, drawn at random within each class (`draw_hidden`, seeded by `split`: quality.py's --repeats draws a new
one per repeat), so a group never straddles train and hidden and a plain loop's CV - hidden gap is near zero. A builder whose data is not on this machine raises Missing with the
command that gets it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

HIDDEN_SHARE = 0.22
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
ICON_ROOT = Path("/usr/share/icons")
ICON_THEMES = {"Tango": "32x32", "gnome": "32x32", "mate": "32x32", "nuoveXT2": "32x32", "oxygen": "base/32x32"}
ICON_PACKAGES = "tango-icon-theme gnome-icon-theme mate-icon-theme lxde-icon-theme oxygen-icon-theme"
ICON_CONTEXTS = ("actions", "apps", "devices", "mimetypes", "places", "status")
EMOJI_VERSION = "16.0.0"
EMOJI_VENDORS = ("google", "twitter")  # Apache-2.0 / CC-BY-4.0 images; Apple's and Facebook's are not licensed


class Missing(Exception):
    """A case's data is not on this machine (the message is the command that gets it)."""


def cache_dir() -> Path:
    """Where downloaded benchmark data is kept between runs: $COMP_BENCH_CACHE, else ~/.cache/comp-bench."""
    return Path(os.environ.get("COMP_BENCH_CACHE", "~/.cache/comp-bench")).expanduser()


# ---------------------------------------------------------------- the workspace and its hidden split


def draw_hidden(labels: pd.Series, groups: pd.Series, *, share: float = HIDDEN_SHARE, seed: int = 0) -> np.ndarray:
    """A boolean mask of the hidden rows: `share` of the groups drawn at random within each class.

    A group's class is its most frequent label; a class with 2 or more groups gives at least one to the hidden
    split. Whole groups only, so no group is on both sides.
    """
    rng = np.random.default_rng(seed)
    group_class = pd.DataFrame({"g": groups.to_numpy(), "y": labels.to_numpy()}).groupby("g")["y"].agg(
        lambda s: s.value_counts().index[0])
    hidden: set = set()
    for _, members in group_class.groupby(group_class):
        names = sorted(members.index)
        n = max(1, int(round(share * len(names)))) if len(names) >= 2 else 0
        hidden.update(rng.choice(names, n, replace=False).tolist() if n else [])
    return groups.isin(hidden).to_numpy()


def write_workspace(root: Path, frame: pd.DataFrame, *, metric: str, group_col: str | None) -> None:
    """data/{train,test,sample_submission}.csv, hidden/solution.csv and comp.yaml from `frame` (images already in
    data/images; frame["hidden"] marks the hidden test rows)."""
    (root / "hidden").mkdir(parents=True, exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    train, test = frame[~frame["hidden"]], frame[frame["hidden"]]
    cols = ["id", "path", "label"] + ([group_col] if group_col else [])
    train[cols].to_csv(root / "data" / "train.csv", index=False)
    test = test.sample(frac=1.0, random_state=0).reset_index(drop=True)
    test[["id", "path"]].to_csv(root / "data" / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": test["label"]}).to_csv(root / "hidden" / "solution.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": test["label"].iloc[0]}).to_csv(root / "data" / "sample_submission.csv",
                                                                           index=False)
    data = {"train_csv": "data/train.csv", "test_csv": "data/test.csv", "image_root": "data/images", "id_col": "id",
            "image_col": "path", "label_col": "label", "group_col": group_col}
    comp_yaml = {"data": data, "metric": metric, "folds": {"k": 5, "seed": 42},
                 "submission": {"id_col": "id", "target_col": "label", "kind": "label",
                                "sample_csv": "data/sample_submission.csv"}}
    (root / "comp.yaml").write_text(yaml.safe_dump(comp_yaml, sort_keys=False))


def on_white(img: Image.Image) -> Image.Image:
    """An RGB image of `img` composited over white (icons and emoji are RGBA with transparent backgrounds)."""
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


# ---------------------------------------------------------------- digits (the --quick case)


def build_digits(root: Path, quick: bool, split: int = 0) -> None:
    """comp's demo workspace (digits photographed per subject; its test split is ~20% of the subjects of each
    class, drawn at random); its solution becomes hidden/solution.csv. The demo draws one fixed split: `split` is
    not used."""
    from comp.init.demo import build_demo

    demo = build_demo(root, force=True, photos=2 if quick else 3, max_per_class=20 if quick else 60)
    solution = pd.read_csv(demo.solution, dtype=str).rename(columns={"ImageID": "id", "ans": "label"})
    solution.to_csv(root / "hidden" / "solution.csv", index=False)
    for extra in ("effnet.yaml",):
        (root / "experiments" / extra).unlink(missing_ok=True)


# ---------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def lookalike_groups(images: np.ndarray, *, per_group: int = 7, seed: int = 0) -> np.ndarray:
    """A group number per image: k-means on 14x14 downscaled pixels into len(images) / per_group clusters."""
    from sklearn.cluster import KMeans

    n, h, w = images.shape
    small = images.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).reshape(n, -1) / 255.0
    k = max(1, n // per_group)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(small)


def build_fashion(root: Path, quick: bool, split: int = 0) -> None:
    """Fashion-MNIST, 260 images per class from its train set, grouped by look-alike clusters.

    Fashion-MNIST ships no groups, but its Zalando product shots come in near-identical runs (one article in
    several colours, one cut of shirt or sneaker shot the same way), and a split by image puts such twins on
    both sides, so CV (and a random hidden split) reward remembering a twin. k-means on the downscaled pixels,
    within each class, puts look-alikes into groups of ~7 images; folds and the hidden split keep groups whole,
    so both score images unlike every training image in the same way.
    """
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        raise Missing("apt-get install -y dataset-fashion-mnist")
    rng = np.random.default_rng(0)
    x = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    y = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(10):
        keep = np.sort(rng.choice(np.flatnonzero(y == c), 40 if quick else 260, replace=False))
        for i, g in zip(keep, lookalike_groups(x[keep])):
            Image.fromarray(x[i]).save(root / "data" / "images" / f"f{i:05d}.png")
            rows.append({"id": f"f{i:05d}", "path": f"f{i:05d}.png", "label": FASHION_CLASSES[c],
                         "group": f"{FASHION_CLASSES[c]}-{g:02d}"})
    frame = pd.DataFrame(rows)
    frame["hidden"] = draw_hidden(frame["label"], frame["group"], seed=split)
    write_workspace(root, frame, metric="accuracy", group_col="group")


# ---------------------------------------------------------------- icon themes


def icon_rows() -> pd.DataFrame:
    """One row per distinct icon file: theme, context, name (the group), file."""
    rows, seen = [], set()
    for theme, sub in ICON_THEMES.items():
        for context in ICON_CONTEXTS:
            folder = ICON_ROOT / theme / sub / context
            if not folder.is_dir():
                continue
            for png in sorted(folder.glob("*.png")):
                real = png.resolve()
                if real in seen or not real.is_file():
                    continue
                seen.add(real)
                rows.append({"theme": theme, "context": context, "name": png.stem, "file": str(real)})
    return pd.DataFrame(rows)


def build_icons(root: Path, quick: bool, split: int = 0) -> None:
    """Icons by context (actions, apps, devices, mimetypes, places, status), at most 320 per context (whole icon
    names), grouped by icon name (one name drawn by several themes is one group), 32 px on white."""
    missing = [t for t, sub in ICON_THEMES.items() if not (ICON_ROOT / t / sub).is_dir()]
    if missing:
        raise Missing(f"apt-get install -y --no-install-recommends {ICON_PACKAGES}  (missing themes: {', '.join(missing)})")
    rows = icon_rows()
    cap = 50 if quick else 320
    kept = []
    for _, part in rows.groupby("context"):
        names = part["name"].drop_duplicates().sample(frac=1.0, random_state=0)
        sizes = part.groupby("name").size().loc[names].cumsum()
        kept.append(part[part["name"].isin(sizes.index[sizes <= cap])])
    rows = pd.concat(kept).reset_index(drop=True)
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for i, r in rows.iterrows():
        rel = f"{r['theme']}_{r['context']}_{i:05d}.png"
        on_white(Image.open(r["file"])).resize((32, 32), Image.LANCZOS).save(root / "data" / "images" / rel)
        out.append({"id": f"icon{i:05d}", "path": rel, "label": r["context"], "name": r["name"]})
    frame = pd.DataFrame(out)
    frame["hidden"] = draw_hidden(frame["label"], frame["name"], seed=split)
    write_workspace(root, frame, metric="macro_f1", group_col="name")


# ---------------------------------------------------------------- emoji (npm)


def emoji_command(folder: Path) -> str:
    packages = " ".join(f"emoji-datasource-{v}@{EMOJI_VERSION}" for v in EMOJI_VENDORS)
    return f"mkdir -p {folder} && cd {folder} && npm pack {packages}"


def emoji_package(folder: Path) -> Path:
    """The untarred packages under `folder` (npm pack'ed there on first use); returns folder.

    Only package/emoji.json and package/img/<vendor>/64/ are extracted, into folder/<vendor>/.
    """
    for vendor in EMOJI_VENDORS:
        if (folder / vendor / "package" / "img" / vendor / "64").is_dir():
            continue
        tgz = folder / f"emoji-datasource-{vendor}-{EMOJI_VERSION}.tgz"
        if not tgz.exists():
            if shutil.which("npm") is None:
                raise Missing(f"{emoji_command(folder)}  (npm is not installed)")
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["npm", "pack", f"emoji-datasource-{vendor}@{EMOJI_VERSION}"], cwd=folder,
                                  capture_output=True, text=True)
            if done.returncode != 0 or not tgz.exists():
                raise Missing(f"{emoji_command(folder)}  (npm pack failed: {done.stderr.strip()[-200:]})")
        wanted = ("package/emoji.json", f"package/img/{vendor}/64/")
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(wanted)]
            tar.extractall(folder / vendor, members=members, filter="data")
    return folder


def emoji_rows(folder: Path) -> pd.DataFrame:
    """One row per (emoji, skin tone, vendor) image: subcategory, group (the base emoji's codepoints), file."""
    entries = json.loads((folder / EMOJI_VENDORS[0] / "package" / "emoji.json").read_text())
    rows = []
    for e in entries:
        if e["category"] == "Component":  # bare skin-tone swatches and hair parts, not emoji of a subcategory
            continue
        for variant in [e, *(e.get("skin_variations") or {}).values()]:
            for vendor in EMOJI_VENDORS:
                png = folder / vendor / "package" / "img" / vendor / "64" / variant["image"]
                if variant.get(f"has_img_{vendor}") and png.is_file():
                    rows.append({"subcategory": e["subcategory"], "group": e["unified"].lower(), "vendor": vendor,
                                 "variant": variant["unified"].lower(), "file": str(png)})
    return pd.DataFrame(rows)


def pick_emoji(rows: pd.DataFrame, *, n_classes: int, per_group: int, per_class: int, seed: int = 0) -> pd.DataFrame:
    """The n_classes subcategories with the most emoji; at most per_group images of one emoji (skin tones drawn
    at random, both vendors), and whole emoji up to per_class images in a class."""
    rng = np.random.default_rng(seed)
    counts = rows.groupby("subcategory")["group"].nunique().sort_values(ascending=False, kind="stable")
    kept = []
    for sub in counts.index[:n_classes]:
        part = rows[rows["subcategory"] == sub]
        groups = sorted(part["group"].unique())
        total = 0
        for g in rng.permutation(groups):
            members = part[part["group"] == g]
            if len(members) > per_group:  # both vendors of the same drawn skin tones
                variants = sorted(members["variant"].unique())
                take = rng.choice(variants, max(1, per_group // 2), replace=False)
                members = members[members["variant"].isin(take)].head(per_group)
            if total + len(members) > per_class:
                continue
            kept.append(members)
            total += len(members)
    return pd.concat(kept).reset_index(drop=True)


def build_emoji(root: Path, quick: bool, split: int = 0) -> None:
    """Emoji of Google and Twitter (npm emoji-datasource-*, 16.0.0) by subcategory: the 16 subcategories with the
    most emoji, at most 6 images of one emoji and 150 of one subcategory; grouped by the base emoji (its skin
    tones and both vendors' drawings share it); 64 px on white; macro-F1."""
    folder = emoji_package(cache_dir() / "emoji")
    frame = pick_emoji(emoji_rows(folder), n_classes=6 if quick else 16, per_group=6, per_class=40 if quick else 150)
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    frame["label"] = [re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") for s in frame["subcategory"]]
    frame["id"] = [f"e{i:05d}" for i in range(len(frame))]
    frame["path"] = [f"{v}_{var}.png" for v, var in zip(frame["vendor"], frame["variant"])]
    for rel, file in zip(frame["path"], frame["file"]):
        on_white(Image.open(file)).save(root / "data" / "images" / rel)
    frame["hidden"] = draw_hidden(frame["label"], frame["group"], seed=split)
    write_workspace(root, frame, metric="macro_f1", group_col="group")


BUILDERS = {"digits": build_digits, "fashion": build_fashion, "icons": build_icons, "emoji": build_emoji}
