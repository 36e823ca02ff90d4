import pandas as pd
import pytest

from comp.core.layout import atomic_path, write_csv, write_text


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "scores.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_csv_bytes_reproducible(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "p": [0.1234567891, 1 / 3]})
    a = write_csv(tmp_path / "a.csv", frame).read_bytes()
    b = write_csv(tmp_path / "b.csv", frame.copy()).read_bytes()
    assert a == b == b"id,p\na,0.123457\nb,0.333333\n"


def test_artifacts_get_normal_permissions(tmp_path):
    import os

    path = write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
