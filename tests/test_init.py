"""comp init: the csv, folders and face-mask forms, checked row by row on tiny trees written to disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.core.errors import CompError
from comp.init import detect_form, init_csv, init_folders, init_mask, parse_age_bands, write_plan
from comp.init.mask import MASK_STATE
from comp.core.layout import Layout

runner = CliRunner()
TINY = ["--set", "model.name=test_resnet", "--set", "model.pretrained=false", "--set", "image.size=32",
        "--set", "train.num_workers=0", "--set", "train.epochs=1", "--set", "train.batch_size=4"]

# (id, gender, age): two persons per (gender, age band) so that k=2 group folds are feasible
PERSONS = [("000001", "male", 25), ("000002", "male", 19), ("000003", "female", 45), ("000004", "female", 59),
           ("000005", "female", 60), ("000006", "female", 70), ("000007", "male", 58), ("000008", "male", 35)]


def save_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    img = rng.integers(0, 255, (16, 12, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)


def folder(pid: str, gender: str, age: int) -> str:
    return f"{pid}_{gender}_Asian_{age}"


def build_mask(root: Path, persons=PERSONS, n_eval: int = 5) -> Path:
    """data/train/images/<person>/<7 files>, data/train/train.csv, data/eval/images/*, data/eval/info.csv."""
    rows = []
    for i, (pid, gender, age) in enumerate(persons):
        name = folder(pid, gender, age)
        ext = "png" if i % 3 == 0 else "jpg"  # mixed extensions across persons
        for j, stem in enumerate(MASK_STATE):
            save_image(root / "train" / "images" / name / f"{stem}.{ext}", i * 10 + j)
        rows.append({"id": pid, "gender": gender, "race": "Asian", "age": age, "path": name})
    pd.DataFrame(rows).to_csv(root / "train" / "train.csv", index=False)
    ids = [f"{h:040x}.jpg" for h in range(1000, 1000 + n_eval)]
    for k, image_id in enumerate(ids):
        save_image(root / "eval" / "images" / image_id, 500 + k)
    pd.DataFrame({"ImageID": ids[::-1], "ans": 0}).to_csv(root / "eval" / "info.csv", index=False)  # not sorted
    return root


@pytest.fixture
def mask_data(tmp_path: Path) -> Path:
    return build_mask(tmp_path / "ws" / "data")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# ---------------------------------------------------------------- mask


def test_mask_rows_follow_the_label_arithmetic(mask_data: Path) -> None:
    ws = Layout.at(mask_data.parent)
    plan = init_mask(mask_data, ws)
    train = plan.train
    assert len(train) == 7 * len(PERSONS)
    ages = {folder(*p): p for p in PERSONS}
    for row in train.itertuples():
        pid, gender, age = ages[row.person]
        stem = Path(row.path).stem
        assert row.mask == {"normal": 2, "incorrect_mask": 1}.get(stem, 0)
        assert row.gender == (gender == "female")
        assert row.age == age and row.age_band == (0 if age < 30 else 1 if age < 60 else 2)
        assert row.label == row.mask * 6 + row.gender * 3 + row.age_band
        assert (mask_data / row.path).is_file() and row.id == f"{row.person}/{stem}"
    assert plan.comp["data"]["group_col"] == "person" and plan.comp["metric"] == "macro_f1"
    info = pd.read_csv(mask_data / "eval" / "info.csv")
    assert plan.test["id"].tolist() == info["ImageID"].tolist()  # info.csv's order, not sorted
    assert plan.skipped == ()


@pytest.mark.parametrize("bands, moved", [((30, 60), {}), ((30, 58), {58: 2, 59: 2}), ((20, 40, 60), {})])
def test_mask_age_bands_move_the_boundary(mask_data: Path, bands, moved) -> None:
    train = init_mask(mask_data, Layout.at(mask_data.parent), age_bands=bands).train
    n = len(bands) + 1
    for row in train.itertuples():
        expected = moved.get(row.age, int(np.sum(np.array(bands) <= row.age)))
        assert row.age_band == expected
        assert row.label == row.mask * 2 * n + row.gender * n + row.age_band


def test_parse_age_bands() -> None:
    assert parse_age_bands("30,58") == (30, 58)
    with pytest.raises(CompError, match="increasing whole ages.*'60,30'"):
        parse_age_bands("60,30")
    with pytest.raises(CompError, match="increasing whole ages.*'thirty'"):
        parse_age_bands("thirty")


def test_mask_corrections_applied_and_reported(mask_data: Path, tmp_path: Path) -> None:
    fix = tmp_path / "labels_fix.csv"
    fix.write_text("person,column,value\n000001,gender,female\n000003_female_Asian_45,age,61\n")
    plan = init_mask(mask_data, Layout.at(mask_data.parent), fix=fix)
    got = {(c.person, c.column, c.old, c.new) for c in plan.corrections}
    assert got == {("000001_male_Asian_25", "gender", "male", "female"), ("000003_female_Asian_45", "age", 45, 61)}
    p1 = plan.train[plan.train["person"] == "000001_male_Asian_25"]
    assert (p1["gender"] == 1).all() and (p1["label"] == p1["mask"] * 6 + 3 + 0).all()
    p3 = plan.train[plan.train["person"] == "000003_female_Asian_45"]
    assert (p3["age"] == 61).all() and (p3["age_band"] == 2).all()


@pytest.mark.parametrize("line, message", [
    ("999999,gender,female", "person '999999' is not a person folder or id"),
    ("000001,mask,2", "column 'mask' cannot be corrected"),
    ("000001,gender,x", "gender must be male or female, got 'x'"),
])
def test_mask_bad_corrections_name_the_line(mask_data: Path, tmp_path: Path, line: str, message: str) -> None:
    fix = tmp_path / "labels_fix.csv"
    fix.write_text(f"person,column,value\n{line}\n")
    with pytest.raises(CompError, match=f"line 2: {message}"):
        init_mask(mask_data, Layout.at(mask_data.parent), fix=fix)


def test_mask_odd_files_are_skipped_with_counts(mask_data: Path) -> None:
    images = mask_data / "train" / "images"
    person = images / folder(*PERSONS[1])
    (person / "._mask1.jpg").write_bytes(b"\0\0")
    (person / ".DS_Store").write_bytes(b"\0")
    save_image(person / "mask6.jpg", 1)
    (person / "notes.txt").write_text("hi")
    (images / folder(*PERSONS[2]) / "normal.jpg").unlink()
    save_image(images / "000099_male_Asian_40" / "mask1.jpg", 2)  # not in train.csv
    (mask_data / "eval" / "images" / ".DS_Store").write_bytes(b"\0")
    save_image(mask_data / "eval" / "images" / "extra.jpg", 3)
    plan = init_mask(mask_data, Layout.at(mask_data.parent))
    skipped = {s.reason.split(" (")[0]: s for s in plan.skipped}
    assert skipped["hidden files"].count == 3
    assert skipped["files that are not images"].examples == (f"{folder(*PERSONS[1])}/notes.txt",)
    assert skipped["files with unexpected names"].count == 1
    assert skipped["persons missing some of the seven images"].examples == (f"{folder(*PERSONS[2])} (no normal)",)
    assert skipped["person folders not listed in train.csv"].examples == ("000099_male_Asian_40",)
    assert skipped["eval images not listed in info.csv"].examples == ("extra.jpg",)
    assert len(plan.train) == 7 * len(PERSONS) - 1 and not plan.train["path"].str.contains("/[._]", regex=True).any()


@pytest.mark.parametrize("remove, message", [("eval", "eval folder .*eval is not a folder"),
                                             ("train/images", "train images folder .*images is not a folder"),
                                             ("train/train.csv", "train.csv does not exist")])
def test_mask_missing_parts_are_errors_naming_the_path(mask_data: Path, remove: str, message: str) -> None:
    target = mask_data / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CompError, match=message):
        init_mask(mask_data, Layout.at(mask_data.parent))


def test_mask_two_files_for_one_state_is_an_error(mask_data: Path) -> None:
    person = mask_data / "train" / "images" / folder(*PERSONS[1])
    save_image(person / "mask3.png", 9)
    with pytest.raises(CompError, match="two files for mask3: mask3.jpg and mask3.png"):
        init_mask(mask_data, Layout.at(mask_data.parent))


def test_mask_cli_writes_a_workspace_that_folds(mask_data: Path) -> None:
    ws = mask_data.parent
    result = invoke("init", "--from", "mask", mask_data, "--workspace", ws)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "56 training images" in result.output
    cfg = load_config(ws)
    tables = load_tables(cfg, Layout.at(ws))
    assert tables.n_classes == 12 and cfg.submission.id_col == "ImageID" and cfg.data.image_root == "data"
    exp = yaml.safe_load((ws / "experiments" / "baseline.yaml").read_text())
    assert exp["image"]["size"] == 32  # 16x12 images: the smallest sensible input
    folds = invoke("folds", "--k", "2", "--workspace", ws)
    assert folds.exit_code == 0, folds.output
    again = invoke("init", "--from", "mask", mask_data, "--workspace", ws)
    assert again.exit_code == 2 and "--force" in again.output and "comp.yaml exists" in again.output


# ---------------------------------------------------------------- overwrite guard, reproducibility


def test_existing_table_is_not_overwritten_without_force(mask_data: Path) -> None:
    ws = Layout.at(mask_data.parent)
    (ws.root / "data" / "train.csv").write_text("mine\n")
    with pytest.raises(CompError, match=r"train.csv exists; comp init never overwrites it without --force"):
        write_plan(ws, init_mask(mask_data, ws))
    assert (ws.root / "data" / "train.csv").read_text() == "mine\n" and not ws.comp_yaml.exists()
    write_plan(ws, init_mask(mask_data, ws), force=True)
    assert ws.comp_yaml.exists()


def test_same_data_gives_the_same_bytes(mask_data: Path) -> None:
    ws = Layout.at(mask_data.parent)
    write_plan(ws, init_mask(mask_data, ws))
    first = [(ws.root / f).read_bytes() for f in ("comp.yaml", "data/train.csv", "data/test.csv")]
    write_plan(ws, init_mask(mask_data, ws), force=True)
    assert first == [(ws.root / f).read_bytes() for f in ("comp.yaml", "data/train.csv", "data/test.csv")]
    assert not list(ws.root.rglob("*.tmp"))


# ---------------------------------------------------------------- folders


def build_folders(root: Path) -> Path:
    for c, name in enumerate(["cat", "dog", "owl"]):
        for i in range(4):
            save_image(root / "train" / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}", c * 10 + i)
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "README.txt").write_text("readme")
    (root / "train" / "empty").mkdir()
    for i in range(5):
        save_image(root / "test" / f"t{i}.jpg", 100 + i)
    (root / "test" / "._t0.jpg").write_bytes(b"\0")
    order = ["t3.jpg", "t0.jpg", "t4.jpg", "t1.jpg", "t2.jpg"]
    pd.DataFrame({"file": order, "species": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def test_folders_rows_and_sample_order(tmp_path: Path) -> None:
    data = build_folders(tmp_path / "ws" / "data")
    ws = Layout.at(tmp_path / "ws")
    plan = init_folders(data / "train", ws, test_dir=data / "test", sample_csv=data / "sample_submission.csv")
    assert plan.train["label"].tolist() == ["cat"] * 4 + ["dog"] * 4 + ["owl"] * 4
    assert plan.train["id"].tolist()[:2] == ["cat/000", "cat/001"]
    for row in plan.train.itertuples():
        assert row.path == f"train/{row.id}{Path(row.path).suffix}" and (data / row.path).is_file()
    assert plan.test["id"].tolist() == ["t3.jpg", "t0.jpg", "t4.jpg", "t1.jpg", "t2.jpg"]
    assert plan.comp["submission"] == {"id_col": "file", "target_col": "species", "kind": "label",
                                       "sample_csv": "data/sample_submission.csv"}
    reasons = {s.reason: s.count for s in plan.skipped}
    assert reasons == {"hidden files": 2, "files outside class folders": 1, "class folders without images": 1}


def test_folders_cli_then_folds(tmp_path: Path) -> None:
    data = build_folders(tmp_path / "ws" / "data")
    ws = tmp_path / "ws"
    assert detect_form(data / "train") == "folders"
    result = invoke("init", "--from", "folders", data / "train", "--test", data / "test", "--workspace", ws)
    assert result.exit_code == 0, result.output
    tables = load_tables(load_config(ws), Layout.at(ws))
    assert tables.classes == ("cat", "dog", "owl") and len(tables.test) == 5
    assert invoke("folds", "--k", "2", "--workspace", ws).exit_code == 0


def test_folders_missing_train_folder(tmp_path: Path) -> None:
    with pytest.raises(CompError, match="train folder .*nowhere is not a folder; it does not exist"):
        init_folders(tmp_path / "nowhere", Layout.at(tmp_path))


# ---------------------------------------------------------------- csv


def test_csv_guesses_columns_of_a_ready_table(tiny_ws: Path) -> None:
    (tiny_ws / "comp.yaml").unlink()
    ws = Layout.at(tiny_ws)
    plan = init_csv(tiny_ws / "data" / "train.csv", ws, test_csv=tiny_ws / "data" / "test.csv",
                    sample_csv=tiny_ws / "data" / "sample_submission.csv", metric="macro_f1")
    got = {g.role: g.column for g in plan.guesses}
    assert got == {"image": "path", "id": "id", "label": "label", "group": "person"}
    label = next(g for g in plan.guesses if g.role == "label")
    assert "absent from the test CSV" in label.how and "gender" in label.alternatives
    assert plan.generated == () and plan.comp["data"]["image_root"] == "data/images"
    assert plan.comp["data"]["train_csv"] == "data/train.csv"
    done = write_plan(ws, plan)
    assert len(done.tables.train) == 36 and done.kept == (ws.experiment_yaml("baseline"),)


def build_kaggle(root: Path) -> Path:
    """train.csv (image_id, diagnosis, patient) with images at train_images/<id>.png; test only in the sample."""
    rows = []
    for i in range(12):
        save_image(root / "train_images" / f"img{i:03d}.png", i)
        rows.append({"image_id": f"img{i:03d}", "diagnosis": i % 2, "patient_id": f"p{i // 3}"})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    for i in range(4):
        save_image(root / "test_images" / f"tst{i}.png", 50 + i)
    pd.DataFrame({"image_id": [f"tst{i}" for i in (2, 0, 3, 1)], "diagnosis": 0}).to_csv(
        root / "sample_submission.csv", index=False)
    return root


def test_csv_images_named_by_id_get_generated_tables(tmp_path: Path) -> None:
    data = build_kaggle(tmp_path / "ws" / "data")
    ws = Layout.at(tmp_path / "ws")
    plan = init_csv(data / "train.csv", ws, sample_csv=data / "sample_submission.csv")
    got = {g.role: g.column for g in plan.guesses}
    assert got == {"image": "image_id", "id": "image_id", "label": "diagnosis", "group": "patient_id"}
    assert plan.generated == ("train", "test") and plan.comp["data"]["image_root"] == "data"
    assert plan.train["path"].tolist()[0] == "train_images/img000.png"
    assert plan.test["path"].tolist() == [f"test_images/tst{i}.png" for i in (2, 0, 3, 1)]
    done = write_plan(ws, plan)
    assert done.tables.task.kind == "binary" and done.tables.task.labels == ("0", "1")  # two values: binary
    assert done.tables.test["id"].tolist() == ["tst2", "tst0", "tst3", "tst1"]


def test_csv_will_not_overwrite_its_input(tmp_path: Path) -> None:
    data = build_kaggle(tmp_path / "ws" / "data")
    ws = Layout.at(tmp_path / "ws")
    plan = init_csv(data / "train.csv", ws)  # data/train.csv is the input: the generated table goes beside it
    assert plan.comp["data"]["train_csv"] == "data/train_comp.csv"
    plan = init_csv(data / "train.csv", ws, out_train="data/train.csv")
    with pytest.raises(CompError, match="would overwrite your input .*--out-train"):
        write_plan(ws, plan, force=True)


def test_csv_flags_override_and_bad_flags_name_the_columns(tiny_ws: Path) -> None:
    (tiny_ws / "comp.yaml").unlink()
    ws = Layout.at(tiny_ws)
    plan = init_csv(tiny_ws / "data" / "train.csv", ws, label_col="gender", group_col="none")
    assert {g.role: g.column for g in plan.guesses}["label"] == "gender"
    assert plan.comp["data"]["group_col"] is None
    with pytest.raises(CompError, match="--label-col 'lable' is not a column of the train CSV; did you mean label"):
        init_csv(tiny_ws / "data" / "train.csv", ws, label_col="lable")
    with pytest.raises(CompError, match="no column of the train CSV .* names image files"):
        init_csv(tiny_ws / "data" / "train.csv", ws, image_root=tiny_ws / "experiments")


def test_csv_cli_prints_guesses_then_folds(tiny_ws: Path) -> None:
    (tiny_ws / "comp.yaml").unlink()
    result = invoke("init", tiny_ws / "data" / "train.csv", "--test", tiny_ws / "data" / "test.csv",
                    "--workspace", tiny_ws)
    assert result.exit_code == 0, result.output
    assert "person" in result.output and "alternatives" in result.output
    assert invoke("folds", "--k", "2", "--workspace", tiny_ws).exit_code == 0


# ---------------------------------------------------------------- fold-train on each form


def has_fold_train() -> bool:
    return any(c.name == "fold-train" for c in app.registered_commands)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["mask", "folders", "csv"])
def test_fold_train_runs_on_each_form(tmp_path: Path, form: str) -> None:
    if not has_fold_train():
        pytest.skip("comp fold-train is not registered yet")
    ws = tmp_path / "ws"
    if form == "mask":
        args = ["--from", "mask", build_mask(ws / "data")]
    elif form == "folders":
        args = ["--from", "folders", build_folders(ws / "data") / "train"]
    else:
        data = build_kaggle(ws / "data")
        args = ["--from", "csv", data / "train.csv", "--sample", data / "sample_submission.csv"]
    assert invoke("init", *args, "--workspace", ws).exit_code == 0
    result = invoke("fold-train", "--k", "2", "--workspace", ws, *TINY)
    assert result.exit_code == 0, result.output
    assert (ws / "experiments" / "baseline" / "oof.csv").is_file()


def test_detect_form_and_bad_form(tmp_path: Path, mask_data: Path) -> None:
    assert detect_form(mask_data) == "mask"
    assert detect_form(mask_data / "train" / "train.csv") == "csv"
    with pytest.raises(CompError, match="does not exist"):
        detect_form(tmp_path / "nope")
    result = invoke("init", "--from", "zip", mask_data, "--workspace", mask_data.parent)
    assert result.exit_code == 2 and "--from 'zip' is not a form; use one of csv, folders, mask" in result.output


def test_mask_cli_metric_and_bands_flags(mask_data: Path) -> None:
    ws = mask_data.parent
    result = invoke("init", mask_data, "--metric", "accuracy", "--age-bands", "30,58", "--workspace", ws)
    assert result.exit_code == 0, result.output
    cfg = load_config(ws)
    train = pd.read_csv(ws / "data" / "train.csv", dtype={"id": str})
    assert cfg.metric == "accuracy" and set(train.loc[train["age"] >= 58, "age_band"]) == {2}
