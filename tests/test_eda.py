"""comp eda: the numbers in summary.json, duplicates, problem files, the HTML page, the CLI."""

from __future__ import annotations

import json
import re
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
from comp.core.errors import CompError
from comp.data.tables import load_tables
from comp.eda import dhash, find_duplicates, hamming_pairs, run_eda
from comp.data.folds import folds_record
from comp.core.layout import Layout

from conftest import build_workspace

DROPPED_GROUPS = ("p103", "p202", "p203")  # -> class counts c0 12, c1 9, c2 6


def _eda(root: Path, **kwargs):
    ws = Layout.at(root)
    return run_eda(load_config(ws.root, "baseline", ()), ws, **kwargs)


def _break(root: Path) -> None:
    """Unbalance the classes, inject duplicates, a corrupt and a missing file, and write a folds file."""
    images = root / "data" / "images"
    train = pd.read_csv(root / "data" / "train.csv")
    train = train[~train["person"].isin(DROPPED_GROUPS)]
    train.to_csv(root / "data" / "train.csv", index=False)
    shutil.copy(images / "p000_0.png", images / "test_0.png")  # exact duplicate: train -> test
    near = np.asarray(Image.open(images / "p000_1.png")).astype(int) + 6  # brighter copy, one pixel changed
    near[0, 0] = 0
    Image.fromarray(near.clip(0, 255).astype(np.uint8)).save(images / "p001_0.png")  # other group, same label
    (images / "p002_0.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (images / "p003_0.png").unlink()
    folds = pd.DataFrame({"id": train["id"], "label": train["label"], "group": train["person"],
                          "fold": [int(p[-1]) % 3 for p in train["person"]]})
    (root / "folds").mkdir(exist_ok=True)
    folds.to_csv(root / "folds" / "k3-s42.csv", index=False)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    (root / "comp.yaml").write_text(yaml.safe_dump({**comp, "folds": {"k": 3}}))
    tables = load_tables(load_config(root), Layout.at(root), check_images=False)
    record = folds_record(tables, k=3, seed=42, group_col="person", stratify=())
    (root / "folds" / "k3-s42.json").write_text(json.dumps(record))  # hand-made folds, recorded as comp would


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory):
    """(workspace root, EdaResult) for a workspace with known counts and injected problems."""
    root = build_workspace(tmp_path_factory.mktemp("eda") / "ws")
    _break(root)
    return root, _eda(root, samples=3)


def test_class_and_group_numbers(broken) -> None:
    root, result = broken
    s = json.loads((root / "eda" / "summary.json").read_text())
    assert s["n_train"] == 27 and s["n_test"] == 9 and s["n_classes"] == 3
    assert s["classes"]["counts"] == {"c0": 12, "c1": 9, "c2": 6}
    assert s["classes"]["shares"]["c0"] == pytest.approx(12 / 27)
    assert s["classes"]["imbalance_ratio"] == pytest.approx(2.0)
    assert (s["classes"]["largest"], s["classes"]["smallest"]) == ("c0", "c2")
    g = s["groups"]
    assert g["n_groups"] == 9 and g["n_groups_multi_label"] == 0
    assert g["images_per_group"] == {"min": 3.0, "median": 3.0, "mean": 3.0, "max": 3.0}
    assert s == json.loads(json.dumps(result.summary))  # the file holds what the function returned


def test_image_numbers(broken) -> None:
    root, _ = broken
    s = json.loads((root / "eda" / "summary.json").read_text())
    train, test = s["images"]["train"], s["images"]["test"]
    assert (train["n"], train["n_ok"], train["n_missing"], train["n_corrupt"]) == (27, 25, 1, 1)
    assert train["dominant_size"] == test["dominant_size"] == "16x16"
    assert train["sizes"] == {"16x16": 25} and train["modes"] == {"RGB": 25} and test["formats"] == {"PNG": 9}
    assert train["aspect"]["min"] == train["aspect"]["max"] == 1.0
    assert s["images"]["flags"] == []
    per_class = s["colour"]["per_class"]
    assert per_class["c0"]["r"] > per_class["c0"]["g"] and per_class["c2"]["b"] > per_class["c2"]["r"]


def test_duplicates_across_train_test_and_groups_are_found(broken) -> None:
    root, result = broken
    found = {(r.kind, r.id_a, r.id_b, bool(r.exact)) for r in result.pairs.itertuples()}
    assert found == {("test", "p000_0", "t000", True), ("group", "p000_1", "p001_0", False)}
    assert result.pairs.set_index("kind").loc["test", "distance"] == 0
    d = json.loads((root / "eda" / "summary.json").read_text())["duplicates"]
    assert (d["n_train_test"], d["n_cross_group"], d["n_label_conflicts"], d["n_exact"]) == (1, 1, 0, 1)
    assert d["n_cross_fold"] == 1  # p000 sits in fold 0, p001 in fold 1
    listed = pd.read_csv(root / "eda" / "duplicates.csv", dtype=str)
    assert set(zip(listed["id_a"], listed["id_b"])) == {("p000_0", "t000"), ("p000_1", "p001_0")}


def test_corrupt_and_missing_files_are_listed_not_fatal(broken) -> None:
    root, result = broken
    problems = {(r.id, r.problem) for r in result.problems.itertuples()}
    assert problems == {("p002_0", "corrupt"), ("p003_0", "missing")}
    s = json.loads((root / "eda" / "summary.json").read_text())
    assert s["problems"]["counts"] == {"corrupt": 1, "missing": 1}
    assert "p002_0.png" in (root / "eda" / "problems.csv").read_text()


def test_folds_heat_map_numbers(broken) -> None:
    root, _ = broken
    f = json.loads((root / "eda" / "summary.json").read_text())["folds"]
    assert f["k"] == 3 and f["file"].endswith("k3-s42.csv")
    assert f["class_counts"]["0"] == {"c0": 6, "c1": 3, "c2": 3}  # groups p?00, p?03 less p103, p203
    assert f["groups_per_fold"] == {"0": 4, "1": 3, "2": 2}
    assert f["rows_per_fold"] == {"0": 12, "1": 9, "2": 6}
    assert f["n_groups_in_several_folds"] == 0


def test_html_embeds_every_image(broken) -> None:
    """eda/report.html travels alone: every figure is embedded (the PNGs stay beside it too)."""
    root, result = broken
    page = result.report.read_text()
    images = re.findall(r'<img src="([^"]+)" alt="([^"]*)"', page)
    assert {"classes", "groups", "images", "colour", "samples", "duplicates", "folds"} <= {alt for _, alt in images}
    for src, alt in images:
        assert src.startswith("data:image/png;base64,") and len(src) > 200, alt
        assert (result.report.parent / f"{alt}.png").stat().st_size > 0
    for section in ("overview", "classes", "images", "colour", "samples", "duplicates", "problems", "folds"):
        assert f"<section id='{section}'>" in page
    assert "p002_0" in page
    dup = page[page.index("<section id='duplicates'>"):]
    assert dup.index("conflicting labels") < dup.index("across groups") < dup.index("train/test pairs") < dup.index("<img")


def test_rerun_is_reproducible_and_uses_the_caches(broken) -> None:
    root, _ = broken
    before = (root / "eda" / "summary.json").read_bytes()
    cache = root / ".cache" / "eda_features.json"
    stamp = cache.stat().st_mtime_ns
    _eda(root, samples=3)
    assert (root / "eda" / "summary.json").read_bytes() == before
    assert cache.stat().st_mtime_ns == stamp  # nothing new to decode, cache not rewritten


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**63, size=70, dtype=np.uint64)
    a[10] = a[3] ^ np.uint64(0b1011)  # distance 3
    b = np.concatenate([a[:5] ^ np.uint64(1 << 40), rng.integers(0, 2**63, size=30, dtype=np.uint64)])
    for other in (None, b):
        i, j, d = hamming_pairs(a, other, threshold=4, block_cells=50)  # many small blocks
        ref = other if other is not None else a
        brute = {(x, y, bin(int(a[x]) ^ int(ref[y])).count("1")) for x in range(len(a)) for y in range(len(ref))
                 if (other is not None or y > x) and bin(int(a[x]) ^ int(ref[y])).count("1") <= 4}
        assert set(zip(i.tolist(), j.tolist(), d.tolist())) == brute and brute
    assert len(hamming_pairs(a, b[:0])[0]) == 0


def test_dhash_ignores_brightness_and_separates_different_images() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, size=(40, 30, 3), dtype=np.uint8)
    other = rng.integers(0, 200, size=(40, 30, 3), dtype=np.uint8)
    h = dhash(Image.fromarray(img))
    assert dhash(Image.fromarray(img + 20)) == h
    assert bin(h ^ dhash(Image.fromarray(other))).count("1") > 10


def test_label_conflict_kind() -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c"], "path": ["a", "b", "c"], "label": ["x", "y", "x"],
                          "dhash": ["00ff00ff00ff00ff", "00ff00ff00ff00fe", "ffffffff00000000"],
                          "sha": ["1", "2", "3"]})
    pairs = find_duplicates(frame, None, threshold=2, min_correlation=None)  # no files: the hash alone
    assert pairs[["kind", "id_a", "id_b", "distance", "confidence"]].values.tolist() == [["label", "a", "b", 1, "hash only"]]


def _digit_facts(root: Path, n_photos: int = 2, per_class: int = 25):
    from comp.init.demo import build_demo

    build_demo(root, photos=n_photos, max_per_class=per_class, force=True)
    ws = Layout.at(root)
    tables = load_tables(load_config(ws.root), ws, check_images=False)
    from comp.eda import file_facts

    return ws, tables, file_facts(tables.train, ws), file_facts(tables.test, ws)


def test_digits_look_alikes_are_not_reported_as_duplicates(tmp_path) -> None:
    """Digits at 32 px: many hash candidates (7 vs 2 within 6 bits), none a copy; the pixels reject them."""
    _, _, train, test = _digit_facts(tmp_path / "digits")
    candidates = find_duplicates(train, test, min_correlation=None)
    assert len(candidates) >= 20 and (candidates["kind"] == "label").sum() >= 3  # the false alarms of before
    pairs = find_duplicates(train, test)
    assert len(pairs) <= 2 and not (pairs["kind"] == "label").any()
    assert pairs.attrs["n_candidates"] == len(candidates) and pairs.attrs["n_unconfirmed"] >= len(candidates) - 2


def _planted(src: Path, dst: Path, how: str) -> None:
    img = Image.open(src).convert("RGB")
    if how == "jpeg":
        img.save(dst.with_suffix(".jpg"), quality=70)
        return
    if how == "resize":
        img = img.resize((img.width * 2, img.height * 2), Image.Resampling.BILINEAR)
    elif how == "bright":
        img = Image.fromarray((np.asarray(img).astype(int) + 25).clip(0, 255).astype(np.uint8))
    elif how == "pixels":
        arr = np.asarray(img).copy()
        arr[0, 0], arr[5, 7] = 0, 255
        img = Image.fromarray(arr)
    img.save(dst)


def test_planted_copies_are_all_found_with_their_confidence(tmp_path) -> None:
    root = tmp_path / "digits"
    ws, tables, train, test = _digit_facts(root)
    images = root / "data" / "images"
    hows = ["copy", "jpeg", "resize", "bright", "pixels"]
    rows, expected = [], set()
    sources = tables.train.iloc[:: len(tables.train) // 10].head(10)  # two of each kind of copy
    for k, (src, how) in enumerate(zip(sources.itertuples(), hows * 2)):
        name = f"planted_{k}_{how}.png"
        (images / name).write_bytes(Path(src.path).read_bytes()) if how == "copy" else _planted(Path(src.path), images / name, how)
        path = str(images / name if how != "jpeg" else (images / name).with_suffix(".jpg"))
        rows.append({"id": f"planted{k}", "path": path})
        expected.add((src.id, f"planted{k}"))
    from comp.eda import file_facts

    test = pd.concat([test, file_facts(pd.DataFrame(rows), ws)], ignore_index=True)
    pairs = find_duplicates(train, test)
    found = set(zip(pairs["id_a"], pairs["id_b"]))
    assert expected <= found and len(found - expected) <= 2
    planted = pairs[pairs["id_b"].str.startswith("planted")]
    assert (planted["kind"] == "test").all() and set(planted["confidence"]) <= {"exact", "high", "likely"}
    assert len(planted) == 10 and (planted["confidence"] == "exact").sum() == 2  # the byte copies
    assert planted.loc[planted["confidence"] != "exact", "correlation"].min() >= 0.985


def test_train_test_differences_are_flagged(make_ws) -> None:
    root = make_ws(n_test=12)
    rng = np.random.default_rng(1)
    for t in range(12):  # test images bigger, wider and darker than the 16x16 training images
        Image.fromarray(rng.integers(0, 40, size=(24, 48, 3), dtype=np.uint8)).save(root / "data/images" / f"test_{t}.png")
    flags = _eda(root, samples=1).summary["images"]["flags"]
    assert any("dominant size differs: train 16x16, test 48x24" in f for f in flags)
    assert any(f.startswith("aspect ratio distributions differ") for f in flags)
    assert any(f.startswith("brightness distributions differ") for f in flags)


def test_bbox_crops_without_test_set(make_ws) -> None:
    root = make_ws(n_classes=2, groups_per_class=2, grouped=False)
    train = pd.read_csv(root / "data" / "train.csv").assign(x0=2, y0=3, x1=12, y1=14)
    train.loc[0, "x1"] = 40  # beyond the 16 px wide image
    train.to_csv(root / "data" / "train.csv", index=False)
    comp = yaml.safe_load((root / "comp.yaml").read_text())
    comp["data"].update(bbox_cols=["x0", "y0", "x1", "y1"], test_csv=None)
    (root / "comp.yaml").write_text(yaml.safe_dump(comp))
    result = _eda(root, samples=2)
    assert result.summary["n_test"] == 0 and result.summary["groups"] is None and result.summary["folds"] is None
    assert 'alt="crops"' in result.report.read_text() and (root / "eda" / "crops.png").is_file()
    assert result.problems[["id", "problem"]].values.tolist() == [[train["id"][0], "unusual"]]
    assert result.problems["detail"][0] == "bounding box (2, 3, 40, 14) empty, missing or outside the 16x16 image"


def test_cli_eda(make_ws) -> None:
    root = make_ws(n_classes=2, groups_per_class=2)
    runner = CliRunner()
    res = runner.invoke(app, ["eda", "--workspace", str(root), "--samples", "2"])
    assert res.exit_code == 0, res.output
    assert "imbalance ratio 1" in res.output and "near-duplicates" in res.output
    assert (root / "eda" / "report.html").is_file() and (root / "eda" / "summary.json").is_file()
    bad = runner.invoke(app, ["eda", "--workspace", str(root), "--samples", "0"])
    assert bad.exit_code == 2 and "sample images per class must be 1 or more, got 0 (--samples)" in bad.output


def test_bad_threshold_is_refused(tiny_ws) -> None:
    with pytest.raises(CompError, match=r"Hamming distance in 0..64, got 65 \(--threshold\)"):
        _eda(tiny_ws, threshold=65)
