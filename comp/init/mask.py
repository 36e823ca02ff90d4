"""`comp init --from mask`: the reference face-mask layout -> one row per image with the 18-class label.

Layout read:
  train/images/<id>_<gender>_<race>_<age>/{mask1..mask5,incorrect_mask,normal}.<ext>
  train/train.csv    id, gender, race, age, path (path = the person's folder name)
  eval/images/*      eval/info.csv: ImageID, ans (the submission format, in its order)
Label = mask * 2B + gender * B + age_band, B = number of age bands (3: mask*6 + gender*3 + band).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from comp.core.errors import CompError
from comp.init.plan import IMAGE_EXTS, N_EXAMPLES, Correction, Plan, SkipLog, is_hidden, output, rel_to, require_dir
from comp.core.layout import Layout

MASK_STATE = {**{f"mask{i}": 0 for i in range(1, 6)}, "incorrect_mask": 1, "normal": 2}  # 0 wear, 1 incorrect, 2 not wear
GENDER = {"male": 0, "female": 1}
PERSON_COLUMNS = ("id", "gender", "race", "age", "path")
FIXABLE = ("gender", "age", "race")


def parse_age_bands(text: str) -> tuple[int, ...]:
    """'30,60' -> (30, 60): band 0 below 30, 1 from 30 to below 60, 2 from 60."""
    try:
        bounds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CompError(f"--age-bands expects increasing whole ages like 30,60, got {text!r}") from None
    if not bounds or any(b >= c for b, c in zip(bounds, bounds[1:])):
        raise CompError(f"--age-bands expects increasing whole ages like 30,60, got {text!r}")
    return bounds


def age_band(age: np.ndarray, bounds: tuple[int, ...]) -> np.ndarray:
    """Band index per age: how many boundaries are <= age."""
    return np.searchsorted(np.asarray(bounds), np.asarray(age), side="right").astype(np.int64)


def read_persons(path: Path) -> pd.DataFrame:
    """train.csv with its columns checked, gender/age parsed; one row per person folder."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PERSON_COLUMNS if c not in frame.columns]
    if missing:
        raise CompError(f"{path} lacks columns {missing}; it has {list(frame.columns)} "
                        f"and the mask layout needs {list(PERSON_COLUMNS)}")
    frame["gender"] = frame["gender"].str.strip().str.lower()
    bad = frame[~frame["gender"].isin(list(GENDER))]
    if len(bad):
        examples = [f"{p} ({g!r})" for p, g in zip(bad["path"][:N_EXAMPLES], bad["gender"][:N_EXAMPLES])]
        raise CompError(f"{path}: {len(bad)} rows have a gender other than male/female, e.g. {examples}; "
                        "fix them there or with --fix")
    age = pd.to_numeric(frame["age"], errors="coerce")
    if age.isna().any():
        raise CompError(f"{path}: {int(age.isna().sum())} rows have an age that is not a number, "
                        f"e.g. {frame['path'][age.isna()].head(N_EXAMPLES).tolist()}")
    frame["age"] = age.astype(np.int64)
    dup = frame["path"][frame["path"].duplicated()]
    if len(dup):
        raise CompError(f"{path}: person folders listed twice: {dup.head(N_EXAMPLES).tolist()}; keep one row each")
    return frame


def combine_expression(n_bands: int) -> str:
    """data.combine of the heads: the same arithmetic as the single-head label (label_table)."""
    return f"mask*{2 * n_bands} + gender*{n_bands} + age"


def read_fixes(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("person", "column", "value") if c not in frame.columns]
    if missing:
        raise CompError(f"corrections file {path} lacks columns {missing}; it needs person, column, value "
                        f"(columns found: {list(frame.columns)})")
    return frame


def fix_value(column: str, value: str, where: str) -> object:
    """A corrected value, parsed and checked like train.csv's."""
    value = value.strip()
    if column == "gender":
        if value.lower() not in GENDER:
            raise CompError(f"{where}: gender must be male or female, got {value!r}")
        return value.lower()
    if column == "age":
        if not value.isdigit():
            raise CompError(f"{where}: age must be a whole number, got {value!r}")
        return int(value)
    return value


def apply_fixes(persons: pd.DataFrame, fixes: pd.DataFrame, source: Path) -> tuple[pd.DataFrame, tuple[Correction, ...]]:
    """Apply (person, column, value) corrections; a person is its folder name or its train.csv id."""
    persons = persons.copy()
    by_folder = {p: i for i, p in enumerate(persons["path"])}
    by_id = persons.reset_index(drop=True).groupby("id").groups
    done = []
    for n, row in enumerate(fixes.itertuples(index=False), start=2):
        where = f"{source} line {n}"
        key = row.person.strip()
        idx = [by_folder[key]] if key in by_folder else list(by_id.get(key, []))
        if len(idx) != 1:
            what = "is not a person folder or id in train.csv" if not idx else "matches several persons; use the folder name"
            raise CompError(f"{where}: person {key!r} {what}")
        if row.column not in FIXABLE:
            raise CompError(f"{where}: column {row.column!r} cannot be corrected; use one of {', '.join(FIXABLE)}")
        i = persons.index[idx[0]]
        old, new = persons.at[i, row.column], fix_value(row.column, row.value, where)
        old = old.item() if hasattr(old, "item") else old
        persons.at[i, row.column] = new
        done.append(Correction(person=persons.at[i, "path"], column=row.column, old=old, new=new))
    return persons, tuple(done)


def person_files(folder: Path, skips: SkipLog) -> dict[str, Path]:
    """mask state name -> file in one person's folder; odd files are logged and left out."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        shown = f"{folder.name}/{path.name}"
        if is_hidden(path, folder):
            skips.add("hidden files", shown)
        elif path.is_dir() or path.suffix.lower() not in IMAGE_EXTS:
            skips.add("files that are not images", shown)
        elif path.stem not in MASK_STATE:
            skips.add("files with unexpected names (expected mask1..mask5, incorrect_mask, normal)", shown)
        elif path.stem in files:
            raise CompError(f"{folder} holds two files for {path.stem}: {files[path.stem].name} and {path.name}; "
                            "delete one and rerun")
        else:
            files[path.stem] = path
    return files


def image_rows(images: Path, persons: pd.DataFrame, skips: SkipLog) -> list[dict]:
    """One row per image of each person in train.csv (person order, then mask1..normal)."""
    rows = []
    for person in persons.itertuples(index=False):
        folder = images / person.path
        if not folder.is_dir():
            skips.add("persons in train.csv without a folder in train/images", person.path)
            continue
        files = person_files(folder, skips)
        absent = [s for s in MASK_STATE if s not in files]
        if absent:
            skips.add("persons missing some of the seven images (their other images are kept)",
                      f"{person.path} (no {', '.join(absent)})")
        for stem, path in sorted(files.items(), key=lambda kv: list(MASK_STATE).index(kv[0])):
            rows.append({"id": f"{person.path}/{stem}", "path": f"train/images/{person.path}/{path.name}",
                         "person": person.path, "mask": MASK_STATE[stem], "gender": GENDER[person.gender],
                         "age": int(person.age), "race": person.race})
    listed = set(persons["path"])
    for folder in sorted(images.iterdir()):
        if folder.is_dir() and folder.name not in listed and not is_hidden(folder, images):
            skips.add("person folders not listed in train.csv", folder.name)
    return rows


def label_table(rows: list[dict], bounds: tuple[int, ...]) -> pd.DataFrame:
    """The train table: id, path, label, person, mask, gender, age, age_band, race."""
    frame = pd.DataFrame(rows, columns=["id", "path", "person", "mask", "gender", "age", "race"])
    n_bands = len(bounds) + 1
    frame["age_band"] = age_band(frame["age"].to_numpy(), bounds)
    frame["label"] = frame["mask"] * 2 * n_bands + frame["gender"] * n_bands + frame["age_band"]
    return frame[["id", "path", "label", "person", "mask", "gender", "age", "age_band", "race"]]


def eval_table(eval_dir: Path, skips: SkipLog) -> pd.DataFrame:
    """The test table in info.csv's order: id (= ImageID), path."""
    info_csv, images = eval_dir / "info.csv", require_dir(eval_dir / "images", "eval images folder")
    if not info_csv.is_file():
        raise CompError(f"{info_csv} does not exist; the mask layout needs eval/info.csv with columns ImageID, ans")
    info = pd.read_csv(info_csv, dtype=str, keep_default_na=False)
    if "ImageID" not in info.columns:
        raise CompError(f"{info_csv} has no ImageID column (columns: {list(info.columns)})")
    missing = [i for i in info["ImageID"] if not (images / i).is_file()]
    if missing:
        raise CompError(f"{len(missing)} of {len(info)} images listed in {info_csv} are not in {images}, "
                        f"e.g. {missing[:N_EXAMPLES]}; restore them or check the folder")
    listed = set(info["ImageID"])
    for path in sorted(images.iterdir()):
        if is_hidden(path, images):
            skips.add("hidden files", f"eval/images/{path.name}")
        elif path.name not in listed:
            skips.add("eval images not listed in info.csv", path.name)
    return pd.DataFrame({"id": info["ImageID"], "path": ["eval/images/" + i for i in info["ImageID"]]})


def init_mask(
    root: Path,
    ws: Layout,
    *,
    age_bands: tuple[int, ...] = (30, 60),
    fix: Path | None = None,
    heads: bool = False,
    out_train: str | None = None,
    out_test: str | None = None,
) -> Plan:
    """Read the face-mask layout under root into a Plan (train table per image, test table from info.csv).

    heads: a multitask workspace instead of the 18-class single head: three classification heads (mask 0-2,
    gender 0-1, age band 0..B-1) on one backbone, combined into the submitted label by the same arithmetic
    (`data.combine: "mask*6 + gender*3 + age"` for three bands).
    """
    root = require_dir(Path(root), "mask dataset folder")
    train_dir = require_dir(root / "train", "train folder")
    images = require_dir(train_dir / "images", "train images folder")
    eval_dir = require_dir(root / "eval", "eval folder")
    persons_csv = train_dir / "train.csv"
    if not persons_csv.is_file():
        raise CompError(f"{persons_csv} does not exist; the mask layout needs train/train.csv (id, gender, race, age, path)")
    persons = read_persons(persons_csv)
    corrections: tuple[Correction, ...] = ()
    if fix is not None:
        if not Path(fix).is_file():
            raise CompError(f"corrections file {fix} does not exist; pass a CSV with columns person, column, value")
        persons, corrections = apply_fixes(persons, read_fixes(Path(fix)), Path(fix))
    skips = SkipLog()
    train = label_table(image_rows(images, persons, skips), age_bands)
    test = eval_table(eval_dir, skips)
    comp = {
        "data": {"train_csv": output(ws, out_train, "train"), "test_csv": output(ws, out_test, "test"),
                 "image_root": rel_to(ws, root),
                 "id_col": "id", "image_col": "path", "label_col": "label", "group_col": "person"},
        "metric": "macro_f1",
        "folds": {"stratify": ["gender"]},  # folds balance gender as well as the 18 classes
        "submission": {"id_col": "ImageID", "target_col": "ans", "kind": "label",
                       "sample_csv": rel_to(ws, eval_dir / "info.csv")},
    }
    bands = ", ".join(f"{b}" for b in age_bands)
    n_bands = len(age_bands) + 1
    notes = (f"{len(train)} training images of {train['person'].nunique()} persons, {len(test)} test images",
             f"label = mask*{2 * n_bands} + gender*{n_bands} + age_band; age bands split at {bands}")
    if heads:
        comp = {"task": "multitask", **comp}
        comp["data"] = {**comp["data"], "targets": {"mask": "mask", "gender": "gender", "age": "age_band"},
                        "combine": combine_expression(n_bands)}
        notes += (f"task: multitask (--heads): heads mask (0 wear, 1 incorrect, 2 not wear), gender (0 male, "
                  f"1 female), age (bands 0-{n_bands - 1}) on one backbone; submitted label "
                  f"{combine_expression(n_bands)}; without --heads: one 18-class head",)
    return Plan(comp=comp, train=train, test=test, generated=("train", "test"), sources=(persons_csv, eval_dir / "info.csv"),
                skipped=skips.freeze(), corrections=corrections, notes=notes)
