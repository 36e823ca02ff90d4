import numpy as np
import pandas as pd
import pytest
from PIL import Image

from comp.core.config import load_config
from comp.data.images import check_images, read_rgb
from comp.data.tables import load_tables
from comp.core.errors import CompError
from comp.core.layout import Layout


def tables_of(ws, *overrides, **kwargs):
    return load_tables(load_config(ws, overrides=list(overrides)), Layout.at(ws), **kwargs)


def edit_csv(path, fn):
    frame = pd.read_csv(path, dtype={"id": str})
    fn(frame).to_csv(path, index=False)


def test_canonical_columns_and_label_mapping(tiny_ws):
    t = tables_of(tiny_ws)
    assert t.classes == ("c0", "c1", "c2")
    assert {"id", "path", "label", "y", "group", "gender"} <= set(t.train.columns)
    assert (t.train["label"].map({c: i for i, c in enumerate(t.classes)}) == t.train["y"]).all()
    assert t.test is not None and len(t.test) == 9 and "label" not in t.test.columns


def test_numeric_labels_keep_their_text_in_numeric_order(make_ws):
    ws = make_ws(labels=[3, 10, 7])
    t = tables_of(ws)
    assert t.classes == ("3", "7", "10")  # numeric order, names exactly as written


def test_missing_column_lists_columns(tiny_ws):
    with pytest.raises(CompError, match=r"data\.label_col column 'target' not in train\.csv.*columns are: id, path, label, person, gender"):
        tables_of(tiny_ws, "data.label_col=target")


def test_duplicate_ids(tiny_ws):
    edit_csv(tiny_ws / "data/train.csv", lambda f: f.assign(id=f["id"].where(f.index != 1, f["id"][0])))
    with pytest.raises(CompError, match=r"train\.csv has 1 duplicated ids \(2 rows\), e\.g\. 'p000_0'"):
        tables_of(tiny_ws)


def test_test_ids_colliding(tiny_ws):
    edit_csv(tiny_ws / "data/test.csv", lambda f: f.assign(id="t000"))
    with pytest.raises(CompError, match=r"test\.csv has 1 duplicated ids \(9 rows\)"):
        tables_of(tiny_ws)


def test_empty_labels(tiny_ws):
    edit_csv(tiny_ws / "data/train.csv", lambda f: f.assign(label=f["label"].where(f.index % 10 != 3)))
    with pytest.raises(CompError, match=r"4 rows with an empty label \(first rows: \[3, 13, 23, 33\]\)"):
        tables_of(tiny_ws)


def test_missing_files_counted_with_examples(tiny_ws):
    (tiny_ws / "data/images/p000_0.png").unlink()
    (tiny_ws / "data/images/p101_2.png").unlink()
    with pytest.raises(CompError, match=r"2 of 36 images in train\.csv do not exist, e\.g\. \[.*p000_0\.png"):
        tables_of(tiny_ws)


def test_corrupt_image_named(tiny_ws):
    (tiny_ws / "data/images/p100_1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(CompError, match=r"1 images in train\.csv could not be decoded, e\.g\. .*p100_1\.png"):
        tables_of(tiny_ws)


def test_truncated_jpeg_is_corrupt(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    info = check_images([str(path)])
    assert not info["ok"][0] and info["error"][0]


def test_image_check_is_cached(tiny_ws, monkeypatch):
    tables_of(tiny_ws)  # fills the cache
    import comp.data.images as images

    calls = []
    monkeypatch.setattr(images, "_inspect", lambda p: calls.append(p) or {})
    tables_of(tiny_ws)
    assert calls == []  # nothing re-decoded
    (tiny_ws / "data/images/p000_0.png").touch()
    monkeypatch.setattr(images, "_inspect", lambda p: calls.append(p) or {"path": p, "ok": True, "error": ""})
    tables_of(tiny_ws)
    assert [c.rsplit("/", 1)[1] for c in calls] == ["p000_0.png"]  # only the changed file


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 255, (10, 14, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    else:
        img = img.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("I;16", "CMYK") else "x.png")
    img.save(path)
    out = read_rgb(path)
    assert out.shape == (10, 14, 3) and out.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_rgb(tmp_path / "d.png")
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out[..., 0])) > 32


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_rgb(tmp_path / "r.jpg").shape == (20, 10, 3)
