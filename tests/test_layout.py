"""The stage layout holds: no import circle, no stage importing a later stage, no module over the length limit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check_layout():
    spec = importlib.util.spec_from_file_location("check_layout", ROOT / "tools" / "check_layout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layout"] = module
    spec.loader.exec_module(module)
    return module


def test_comp_s_layout_has_no_problem(check_layout) -> None:
    assert check_layout.problems(ROOT / "comp") == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "comp"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_import_from_a_later_stage_is_found_also_inside_a_function(check_layout, tmp_path: Path) -> None:
    root = _package(tmp_path, {"core/__init__.py": "", "core/a.py": "def f():\n    from comp.train import b\n",
                               "train/__init__.py": "", "train/b.py": "from comp.core import a\n"})
    found = check_layout.problems(root)
    assert any("comp.core.a imports comp.train.b" in p and "later stage 'train'" in p for p in found), found
    assert any(p.startswith("import circle: comp.core.a <-> comp.train.b") for p in found), found


def test_a_circle_inside_one_stage_and_a_long_module_are_found(check_layout, tmp_path: Path) -> None:
    root = _package(tmp_path, {"data/__init__.py": "", "data/x.py": "from comp.data import y\n",
                               "data/y.py": "import comp.data.x\n" + "z = 1\n" * (check_layout.MAX_LINES + 1)})
    found = check_layout.problems(root)
    assert "import circle: comp.data.x <-> comp.data.y" in found, found
    assert any("y.py" in p and "lines (at most" in p for p in found), found


def test_a_module_at_the_top_of_the_package_is_found(check_layout, tmp_path: Path) -> None:
    root = _package(tmp_path, {"__main__.py": "", "core/__init__.py": "", "pipeline.py": "import comp.core\n"})
    found = check_layout.problems(root)
    assert found == ["comp.pipeline: a module at the top of comp/; put it in its stage's package"], found


def test_the_command_line_reports_and_exits_1_on_a_problem(check_layout, tmp_path: Path, capsys) -> None:
    root = _package(tmp_path, {"core/__init__.py": "", "core/a.py": "import comp.cli\n", "cli/__init__.py": ""})
    assert check_layout.main([str(root)]) == 1
    assert "may not import the later stage 'cli'" in capsys.readouterr().out
    assert check_layout.main([str(ROOT / "comp")]) == 0
