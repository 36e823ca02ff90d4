"""`comp init --from csv`: guess a table's id / image / label / group columns and find its images.

Each guess says why, and lists the other candidates; a flag given by the user replaces the guess.
The task kind is proposed from the target (see `propose_task`): a column of space-separated tags in
many rows or several 0/1 columns -> multilabel, a two-valued label -> binary, a numeric target with
many distinct values -> regression, else multiclass; --task forces the kind.
The user's CSVs are used as they are when their image column resolves under one root; otherwise
(images named by id + extension, or test images in another folder) tables with a `path` column
are generated at data/train.csv and data/test.csv.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from comp.data.tables import duplicate_examples, outside_root_warning, read_any_delimiter
from comp.core.errors import CompError, did_you_mean
from comp.init.plan import IMAGE_EXTS, Guess, Plan, output, rel_to, submission_from_sample
from comp.core.layout import Layout

ID_NAMES = ("id", "image_id", "imageid", "img_id", "image_name", "filename", "file_name", "name", "uid", "image")
IMAGE_NAMES = ("path", "image_path", "filepath", "file_path", "filename", "file_name", "file", "image", "img",
               "image_name", "fname", "image_file")
LABEL_NAMES = ("label", "labels", "target", "class", "class_name", "category", "diagnosis", "y", "ans", "answer",
               "species", "breed", "landmark_id", "class_id", "label_id")
GROUP_NAMES = ("group", "group_id", "person", "person_id", "patient", "patient_id", "subject", "subject_id", "user",
               "user_id", "individual", "individual_id", "study", "study_id", "case", "case_id", "owner", "site")
N_PROBE = 20


def norm(name: object) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV with every column as text (ids like 000123 keep their zeros)."""
    if not Path(path).is_file():
        raise CompError(f"{what} {path} does not exist; pass an existing CSV")
    try:
        frame = read_any_delimiter(Path(path), dtype=str, keep_default_na=False, na_values=[""])  # only an empty cell is missing
    except pd.errors.EmptyDataError:
        raise CompError(f"{what} {path} is empty (no header); pass the CSV with its header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CompError(f"{what} {path} could not be read as CSV ({str(exc).strip().splitlines()[0]}); fix the file") from None
    if frame.empty:
        raise CompError(f"no rows in {path} ({what}: only a header); pass the CSV with its rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def require_column(frame: pd.DataFrame, column: str, flag: str, name: str) -> str:
    if column not in frame.columns:
        cols = list(frame.columns)
        raise CompError(f"{flag} {column!r} is not a column of {name}{did_you_mean(column, cols)} "
                        f"(columns: {', '.join(cols)})")
    return column


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageSource:
    """Where a table's images are: root / (value of column + suffix)."""

    column: str
    root: Path
    suffix: str  # '' when the values carry their extension

    def files(self, frame: pd.DataFrame) -> list[Path]:
        return [Path(os.path.normpath(self.root / (str(v) + self.suffix))) for v in frame[self.column]]


def candidate_roots(*anchors: Path) -> list[Path]:
    """Folders where image paths may be relative to: each anchor and its visible subfolders."""
    roots: list[Path] = []
    for anchor in anchors:
        anchor = Path(os.path.abspath(anchor))
        if not anchor.is_dir():
            continue
        subdirs = sorted(d for d in anchor.iterdir() if d.is_dir() and not d.name.startswith("."))
        for d in (anchor, *subdirs):
            if d not in roots:
                roots.append(d)
    return roots


def probe_values(frame: pd.DataFrame, column: str) -> list[str]:
    values = frame[column].dropna().astype(str).tolist()
    step = max(1, len(values) // N_PROBE)
    return values[::step][:N_PROBE]


def probe(frame: pd.DataFrame, column: str, roots: list[Path],
          suffixes: tuple[str, ...]) -> tuple[float, ImageSource] | None:
    """The (share of probed values found, source) of the best root and suffix for one column."""
    values = probe_values(frame, column)
    if not values:
        return None
    has_ext = sum(Path(v).suffix.lower() in IMAGE_EXTS for v in values) > len(values) / 2
    best = None
    for suffix in ("",) if has_ext else suffixes:
        for root in roots:
            share = sum((root / (v + suffix)).is_file() for v in values) / len(values)
            if share > 0 and (best is None or share > best[0]):
                best = (share, ImageSource(column, root, suffix))
    return best


def find_images(frame: pd.DataFrame, roots: list[Path], columns: list[str], *,
                suffixes: tuple[str, ...] | None = None) -> tuple[ImageSource | None, list[str]]:
    """The column/root/suffix under which most probed values name files, and other columns that name some."""
    suffixes = suffixes or ("", *sorted(IMAGE_EXTS), *sorted(e.upper() for e in IMAGE_EXTS))
    found = []
    for col in columns:
        hit = probe(frame, col, roots, suffixes)
        if hit is not None:
            named = norm(col) in IMAGE_NAMES
            found.append(((hit[0], named, hit[1].suffix == ""), hit[1]))
    found.sort(key=lambda x: x[0], reverse=True)
    if not found:
        return None, []
    return found[0][1], [s.column for _, s in found[1:]]


def text_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if frame[c].notna().any()]


# ---------------------------------------------------------------- columns


def guess_id(frame: pd.DataFrame, image: ImageSource, given: str | None) -> Guess:
    if given:
        column = require_column(frame, given, "--id-col", "the train CSV")
        if frame[column].duplicated().any():
            raise CompError(f"--id-col {column!r} has duplicated values, e.g. {duplicate_examples(frame[column])}; "
                            "ids must be unique: pass another --id-col, or fix the CSV")
        return Guess("id", column, "given (--id-col)")
    unique = [c for c in frame.columns if frame[c].notna().all() and not frame[c].duplicated().any()]
    if image.suffix:
        return Guess("id", image.column, "its values + extension name the image files",
                     tuple(c for c in unique if c != image.column))
    named = [c for c in unique if norm(c) in ID_NAMES and c != image.column]
    ranked = named + ([image.column] if image.column in unique else []) + [c for c in unique if c not in named]
    ranked = list(dict.fromkeys(ranked))
    if not ranked:
        idlike = [c for c in frame.columns if norm(c) in ID_NAMES] or list(frame.columns[:1])
        dups = "; ".join(f"{c!r} repeats {duplicate_examples(frame[c], 3)}" for c in idlike)
        raise CompError(f"no column of the train CSV has unique values to serve as the id ({dups}; columns: "
                        f"{', '.join(frame.columns)}); make the ids unique, add an id column or pass --id-col")
    how = ("named like an id, values unique" if ranked[0] in named
           else "the image column (unique)" if ranked[0] == image.column else "values unique")
    return Guess("id", ranked[0], how, tuple(ranked[1:]))


def guess_label(frame: pd.DataFrame, test: pd.DataFrame | None, taken: set[str], given: str | None, *,
                numeric: bool = False) -> Guess:
    if given:
        return Guess("label", require_column(frame, given, "--label-col", "the train CSV"), "given (--label-col)")
    n = len(frame)
    scored = []
    for col in frame.columns:
        n_unique = frame[col].nunique()
        many = n_unique > max(2, n // 2) and not (numeric and numbers(frame[col]) is not None)  # numbers may be a target
        if col in taken or n_unique < 2 or many or frame[col].isna().any():
            continue
        absent = test is not None and col not in test.columns
        scored.append(((absent, norm(col) in LABEL_NAMES, -n_unique), col))
    scored.sort(key=lambda x: x[0], reverse=True)
    if not scored:
        raise CompError(f"no column of the train CSV looks like a label (2 or more classes, repeated values, "
                        f"no empty cells; columns: {', '.join(frame.columns)}); pass --label-col")
    (absent, named, n_neg), col = scored[0]
    why = [w for w, ok in (("absent from the test CSV", absent), ("named like a label", named)) if ok]
    return Guess("label", col, f"{', '.join(why) or 'fewest distinct values'}; {-n_neg} classes",
                 tuple(c for _, c in scored[1:]))


def guess_group(frame: pd.DataFrame, taken: set[str], given: str | None) -> Guess:
    if given:
        if given.lower() == "none":
            return Guess("group", None, "given (--group-col none)")
        return Guess("group", require_column(frame, given, "--group-col", "the train CSV"), "given (--group-col)")
    repeated = [c for c in frame.columns if c not in taken and 1 < frame[c].nunique() < len(frame)]
    named = [c for c in repeated if norm(c) in GROUP_NAMES or (norm(c).endswith("_id") and c not in taken)]
    named.sort(key=lambda c: norm(c) not in GROUP_NAMES)
    if not named:
        return Guess("group", None, "no column named like a group (person, patient, ...): folds split images one by one",
                     tuple(repeated))
    n_groups = frame[named[0]].nunique()
    return Guess("group", named[0], f"named like a group; {n_groups} groups keep their images in one fold",
                 tuple(c for c in repeated if c != named[0]))


# ---------------------------------------------------------------- the task kind

TASK_METRIC = {"multiclass": "accuracy", "multilabel": "micro_f1", "binary": "roc_auc", "regression": "rmse",
               "multitask": "macro_f1"}
TASK_SUBMISSION = {"multiclass": "label", "multilabel": "tags", "binary": "prob", "regression": "value",
                   "multitask": "label"}
TAG_SHARE = 0.1  # a tag column: at least this share of its filled rows hold two or more tokens
REGRESSION_DISTINCT = 30  # integer targets with more distinct values than this (and than rows/4) are numbers


def numbers(values: pd.Series) -> pd.Series | None:
    """The column as floats when every filled cell is a number, else None."""
    filled = values.dropna()
    parsed = pd.to_numeric(filled, errors="coerce")
    return None if not len(filled) or parsed.isna().any() else parsed


def is_01(values: pd.Series) -> bool:
    """Every cell 0 or 1 (both present): a 0/1 tag column or a binary label."""
    parsed = numbers(values)
    return parsed is not None and not values.isna().any() and set(parsed.unique()) == {0.0, 1.0}


def tag_share(values: pd.Series) -> tuple[float, int]:
    """(share of filled rows holding two or more whitespace-separated tokens, distinct tokens)."""
    filled = values.dropna().astype(str)
    if not len(filled) or numbers(values) is not None:
        return 0.0, 0
    tokens = filled.str.split()
    vocab = {t for row in tokens for t in row}
    return float((tokens.str.len() >= 2).mean()), len(vocab)


def is_tag_column(values: pd.Series) -> bool:
    """Space-separated tags: many rows hold several tokens from a small, repeated vocabulary, in combinations."""
    share, vocab = tag_share(values)
    n_tokens = int(values.dropna().astype(str).str.split().str.len().sum())
    return share >= TAG_SHARE and 2 <= vocab <= max(2, n_tokens // 2) and tokens_combine(values)


def tokens_combine(values: pd.Series) -> bool:
    """Do the tokens combine as tags do: one row's token set inside another's (`cat` and `cat dog`), or more
    distinct token sets than tokens? Class names with a space (`red car`, `blue car`, `red truck`) do neither."""
    patterns = {frozenset(v.split()) for v in values.dropna().astype(str)} - {frozenset()}
    if len(patterns) > len(frozenset().union(*patterns)):
        return True
    for pattern in patterns:
        if len(pattern) <= 8:  # every proper subset; a longer row: those one token short
            parts = (frozenset(c) for k in range(1, len(pattern)) for c in itertools.combinations(pattern, k))
        else:
            parts = (pattern - {t} for t in pattern)
        if any(part in patterns for part in parts):
            return True
    return False


def spaces_warning(train: pd.DataFrame, target: Target) -> str | None:
    """A question for the user when the label column's values hold spaces: tags, or class names with spaces?"""
    if target.kind not in ("multiclass", "multilabel") or not target.label_col:
        return None
    values = train[target.label_col].dropna().astype(str)
    spaced = values[values.str.contains(r"\s", regex=True)]
    if spaced.empty:
        return None
    example, col = spaced.iloc[0], target.label_col
    if target.kind == "multilabel":
        return (f"warning: {len(spaced)} labels of {col!r} hold spaces (e.g. {example!r}) and are read as several "
                "tags each (multilabel); is each one class whose name has a space? then pass --task multiclass")
    return (f"warning: {len(spaced)} labels of {col!r} hold spaces (e.g. {example!r}) and are read as class names "
            "(multiclass: their words never combine as tags do); are they several tags each? then pass --task multilabel")


def column_kind(values: pd.Series) -> tuple[str, str]:
    """(task kind, why) of one target column."""
    n_unique = values.nunique()
    if is_tag_column(values):
        share, vocab = tag_share(values)
        return "multilabel", f"{share:.0%} of its rows hold several space-separated tags ({vocab} tags)"
    if n_unique == 2 and not values.isna().any():
        return "binary", f"two values ({', '.join(map(str, sorted(values.unique())))})"
    parsed = numbers(values)
    if parsed is not None and n_unique > 2:
        fractional = bool((parsed != parsed.round()).any())
        if fractional or n_unique > max(REGRESSION_DISTINCT, len(values) // 4):
            return "regression", f"numbers with {n_unique} distinct values" + (" (fractional)" if fractional else "")
    return "multiclass", f"{n_unique} classes"


@dataclass(frozen=True)
class Target:
    """What the table's target is: the task kind, its columns (data keys) and why."""

    kind: str
    label_col: str | None
    label_cols: tuple[str, ...] = ()
    why: str = ""
    alternatives: tuple[str, ...] = ()

    def guess(self) -> Guess:
        column = self.label_col if self.label_col else ",".join(self.label_cols)
        return Guess("label", column, self.why, self.alternatives)

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.label_col,) if self.label_col else self.label_cols


def check_task(task: str) -> None:
    """--task names a kind a CSV can say (multitask needs heads comp.yaml names)."""
    from comp.core.tasks import check_kind

    check_kind(task)
    if task == "multitask":
        raise CompError("--task multitask needs heads (data.targets) and how they combine (data.combine), which "
                        "a CSV does not say: init with another task and edit comp.yaml, or use `comp init --from "
                        "mask --heads` for the face-mask layout")


def propose_task(frame: pd.DataFrame, test: pd.DataFrame | None, taken: set[str], *, label_col: str | None,
                 task: str | None) -> Target:
    """The target of the train table and the task kind it suggests; --label-col and --task win.

    Order: a column named like a label (or --label-col) decides by its values (column_kind); else a column of
    space-separated tags; else two or more 0/1 columns absent from the test table (multilabel, one column per
    tag); else the label guess of a single-label table.
    """
    if task is not None:
        check_task(task)
    free = [c for c in frame.columns if c not in taken]
    absent = [c for c in free if test is None or c not in test.columns]
    zero_one = [c for c in absent if is_01(frame[c])]
    if label_col:
        col = require_column(frame, label_col, "--label-col", "the train CSV")
        kind, why = column_kind(frame[col])
        return _forced(Target(kind, col, why=f"given (--label-col); {why}"), task, frame)
    named = [c for c in free if norm(c) in LABEL_NAMES and frame[c].nunique() >= 2]
    named.sort(key=lambda c: c not in absent)
    if task in (None, "multilabel") and not named:
        tags = [c for c in free if is_tag_column(frame[c])]
        if tags:
            kind, why = column_kind(frame[tags[0]])
            return _forced(Target("multilabel", tags[0], why=why, alternatives=tuple(tags[1:])), task, frame)
        if len(zero_one) >= 2 and task in (None, "multilabel"):
            return Target("multilabel", None, tuple(zero_one),
                          why=f"{len(zero_one)} columns of 0/1 absent from the test table: one tag each")
    if named:
        kind, why = column_kind(frame[named[0]])
        why = ("absent from the test CSV, " if named[0] in absent and test is not None else "") + f"named like a label; {why}"
        try:
            others = guess_label(frame, test, taken, None, numeric=True)
            others = (others.column, *others.alternatives)
        except CompError:
            others = ()
        alternatives = tuple(dict.fromkeys(c for c in (*named[1:], *others) if c != named[0]))
        return _forced(Target(kind, named[0], why=why, alternatives=alternatives), task, frame)
    guess = guess_label(frame, test, taken, None, numeric=True)
    kind, why = column_kind(frame[guess.column])
    return _forced(Target(kind, guess.column, why=f"{guess.how.split(';')[0]}; {why}", alternatives=guess.alternatives),
                   task, frame)


def _forced(target: Target, task: str | None, frame: pd.DataFrame) -> Target:
    """The target with --task's kind (checked against its values) instead of the proposed one."""
    if task is None or task == target.kind:
        return target
    col = target.label_col
    values = frame[col]
    if task == "binary" and values.nunique() != 2:
        raise CompError(f"--task binary needs two values in {col!r}, found {values.nunique()}; pick another column "
                        "(--label-col) or another --task")
    if task == "regression" and numbers(values) is None:
        raise CompError(f"--task regression needs numbers in {col!r} (e.g. {values.dropna().head(3).tolist()}); pick "
                        "another column (--label-col) or another --task")
    if task == "multiclass" and values.isna().any():
        raise CompError(f"--task multiclass needs a label on every row of {col!r}, {int(values.isna().sum())} are "
                        "empty; fill them, or use --task multilabel")
    return Target(task, col, target.label_cols, why=f"{target.why}; --task {task}", alternatives=target.alternatives)


# ---------------------------------------------------------------- the form


def locate(frame: pd.DataFrame, roots: list[Path], columns: list[str], name: str, *,
           suffixes: tuple[str, ...] | None = None) -> tuple[ImageSource, tuple[str, ...]]:
    source, others = find_images(frame, roots, columns, suffixes=suffixes)
    if source is None:
        shown = ", ".join(str(r) for r in roots[:4]) + (f" and {len(roots) - 4} more" if len(roots) > 4 else "")
        raise CompError(f"no column of {name} ({', '.join(columns)}) names image files under any folder tried "
                        f"({shown}); pass --image-root DIR (and --image-col COLUMN)")
    return source, tuple(others)


def image_guess(source: ImageSource, others: tuple[str, ...], given: str | None) -> Guess:
    how = "given (--image-col); " if given else ""
    how += f"values name files under {source.root}" + (f" once '{source.suffix}' is added" if source.suffix else "")
    return Guess("image", source.column, how, others)


def test_source(test: pd.DataFrame, id_col: str, image: ImageSource, roots: list[Path]) -> ImageSource:
    """Find test images by the train image column, else by id + extension; the train root is tried first."""
    column = image.column if image.column in test.columns else id_col
    exts = tuple(e for e in (image.suffix, "", *sorted(IMAGE_EXTS)) if e is not None)
    source, _ = locate(test, [image.root, *roots], [column], "the test table", suffixes=tuple(dict.fromkeys(exts)))
    return source


def test_frame(test: pd.DataFrame | None, sample: pd.DataFrame | None, id_col: str) -> pd.DataFrame | None:
    """The test table: --test as read, else the sample submission's ids; its id column named like train's."""
    if test is not None:
        if id_col not in test.columns and sample is not None and sample.columns[0] in test.columns:
            test = test.rename(columns={sample.columns[0]: id_col})
        return test
    if sample is None:
        return None
    return pd.DataFrame({id_col: sample.iloc[:, 0].astype(str)})


def derive(train: pd.DataFrame, test: pd.DataFrame | None,
           sources: list[ImageSource]) -> tuple[pd.DataFrame, pd.DataFrame | None, str, Path]:
    """Tables with a path column relative to the images' common root: (train, test, path column, root)."""
    files = [s.files(frame) for s, frame in zip(sources, (train, test))]
    root = Path(os.path.commonpath([str(f.parent) for group in files for f in group]))
    col = "path" if "path" not in train.columns or sources[0].column == "path" else "image_path"
    train = train.assign(**{col: [f.relative_to(root).as_posix() for f in files[0]]})
    if test is not None:
        test = test.assign(**{col: [f.relative_to(root).as_posix() for f in files[1]]})
    return train, test, col, root


def guess_columns(train: pd.DataFrame, test: pd.DataFrame | None, roots: list[Path], *, id_col: str | None,
                  image_col: str | None, label_col: str | None, group_col: str | None,
                  task: str | None = None) -> tuple[ImageSource, list[Guess], Target]:
    """The train images' source, the four column guesses (image, id, label, group) and the target; flags win."""
    columns = [require_column(train, image_col, "--image-col", "the train CSV")] if image_col else text_columns(train)
    image, others = locate(train, roots, columns, "the train CSV")
    guesses = [image_guess(image, others, image_col), guess_id(train, image, id_col)]
    taken = {image.column, guesses[1].column}
    target = propose_task(train, test, taken, label_col=label_col, task=task)
    guesses.append(target.guess())
    guesses.append(guess_group(train, taken | set(target.columns), group_col))
    return image, guesses, target


def place_tables(ws: Layout, train: pd.DataFrame, test: pd.DataFrame | None, sources: list[ImageSource], *,
                 inputs: tuple[Path | None, Path | None, Path | None], outs: tuple[str | None, str | None]):
    """(data paths for comp.yaml, train, test, generated): the user's CSVs as they are when they resolve under one root."""
    train_csv, test_csv, _ = inputs
    as_is = (test_csv is not None or test is None) and all(
        s.suffix == "" and s.column == sources[0].column and s.root == sources[0].root for s in sources)
    if as_is:
        files = {"train_csv": rel_to(ws, train_csv), "test_csv": rel_to(ws, test_csv) if test_csv else None,
                 "image_root": rel_to(ws, sources[0].root), "image_col": sources[0].column}
        return files, train, test, ()
    train, test, col, root = derive(train, test, sources)
    files = {"train_csv": output(ws, outs[0], "train", inputs),
             "test_csv": output(ws, outs[1], "test", inputs) if test is not None else None,
             "image_root": rel_to(ws, root), "image_col": col}
    return files, train, test, ("train", "test") if test is not None else ("train",)


def init_csv(
    train_csv: Path,
    ws: Layout,
    *,
    test_csv: Path | None = None,
    image_root: Path | None = None,
    id_col: str | None = None,
    image_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    sample_csv: Path | None = None,
    metric: str | None = None,
    task: str | None = None,
    out_train: str | None = None,
    out_test: str | None = None,
) -> Plan:
    """Inspect a train CSV (and test CSV / sample submission), guess its columns and task kind, find its images;
    return a Plan. metric None: the task's usual one (accuracy, micro_f1, roc_auc, rmse); task None: proposed."""
    if task is not None:
        check_task(task)
    train = read_table(Path(train_csv), "train CSV")
    test_raw = read_table(Path(test_csv), "test CSV") if test_csv else None
    if image_root is not None and not Path(image_root).is_dir():
        raise CompError(f"--image-root {image_root} is not a folder; pass the folder the image paths are relative to")
    roots = ([Path(os.path.abspath(image_root))] if image_root
             else candidate_roots(Path(train_csv).parent, ws.root, ws.root / "data"))
    image, guesses, target = guess_columns(train, test_raw, roots, id_col=id_col, image_col=image_col,
                                           label_col=label_col, group_col=group_col, task=task)
    ident, group = guesses[1].column, guesses[3].column
    label = target.label_col or "label"
    task_keys, labels = task_data(train, target)
    sub, sample = {"id_col": ident, "target_col": label, "kind": TASK_SUBMISSION[target.kind]}, None
    if sample_csv is not None:
        sub, sample = submission_from_sample(Path(sample_csv), ws, labels, task=target.kind)
    test = test_frame(test_raw, sample, ident)
    sources = [image]
    if test is not None:
        require_column(test, ident, "the id column", "the test table")
        anchor = Path(test_csv or sample_csv).parent
        roots = candidate_roots(anchor, image.root.parent, ws.root, ws.root / "data")
        sources.append(test_source(test, ident, image, roots))
    inputs = (Path(train_csv), Path(test_csv) if test_csv else None, Path(sample_csv) if sample_csv else None)
    files, train, test, generated = place_tables(ws, train, test, sources, inputs=inputs, outs=(out_train, out_test))
    data = {**{k: files[k] for k in ("train_csv", "test_csv", "image_root")}, "id_col": ident,
            "image_col": files["image_col"], "label_col": label, "group_col": group, **task_keys}
    if target.label_cols:
        data.pop("label_col")
    what = {"multilabel": f"{len(labels)} tags", "regression": f"a numeric target ({label})",
            "binary": f"two labels ({', '.join(labels)})"}.get(target.kind, f"{len(labels)} classes")
    notes = [f"{len(train)} training rows, {what}"
             + (f", {len(test)} test rows" if test is not None else "; no test table (--test or --sample gives one)")]
    metric = metric or TASK_METRIC[target.kind]
    others = [k for k in ("multiclass", "multilabel", "binary", "regression") if k != target.kind]
    if target.kind == "binary":
        notes.append(f"positive label {task_keys['positive']!r} (the probability submitted is of it; change "
                     "data.positive in comp.yaml to flip it)")
    notes.append(f"task: {target.kind} ({target.why}); metric {metric}, submission.kind {sub['kind']}; "
                 f"override with --task {' | '.join(others)} (or task: in comp.yaml)")
    if (question := spaces_warning(train, target)) is not None:
        notes.append(question)
    for name, frame in (("the train table", train), ("the test table", test)):
        if frame is not None and (leaving := outside_root_warning(frame[files["image_col"]].dropna(),
                                                                  ws.path(files["image_root"]), name,
                                                                  shown_root=files["image_root"])):
            notes.append(f"warning: {leaving}")
    if generated:
        found = "; ".join(f"{what} images: {rel_to(ws, s.root)}/<{s.column}>{s.suffix}"
                          for what, s in zip(("train", "test"), sources))
        notes.append(f"{found}: tables with a path column are written")
    comp = {"task": target.kind} if target.kind != "multiclass" else {}
    return Plan(comp={**comp, "data": data, "metric": metric, "submission": sub}, train=train, test=test,
                generated=generated, sources=tuple(p for p in inputs if p is not None), guesses=tuple(guesses),
                notes=tuple(notes))


def task_data(train: pd.DataFrame, target: Target) -> tuple[dict, list[str]]:
    """(the data keys comp.yaml needs for the task beyond label_col, the labels / tags the submission names)."""
    from comp.data.tables import class_order

    if target.kind == "multilabel":
        if target.label_cols:
            return {"label_cols": list(target.label_cols)}, list(target.label_cols)
        tags = class_order(t for v in train[target.label_col].dropna().astype(str) for t in v.split())
        return {}, tags
    if target.kind == "binary":
        values = class_order(train[target.label_col].dropna().astype(str))
        return {"positive": values[-1]}, values
    if target.kind == "regression":
        return {}, []
    return {}, class_order(train[target.label_col].dropna().astype(str))
