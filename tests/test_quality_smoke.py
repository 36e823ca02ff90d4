"""benchmarks/quality.py --quick: comp with its defaults and the hand-written loop both train and are scored."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCORE = r"CV (\d\.\d{4})  hidden (\d\.\d{4})\s+(\d+\.\d) s"


@pytest.mark.slow
def test_quick_quality_run_scores_both_systems(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    scores = {m.group(1): m.groups()[1:] for m in re.finditer(r"^  (comp|hand)\s+" + SCORE, out, re.M)}
    assert set(scores) == {"comp", "hand"}, out
    for system, (cv, hidden, seconds) in scores.items():
        assert 0.0 <= float(cv) <= 1.0 and 0.0 <= float(hidden) <= 1.0 and float(seconds) > 0, (system, out)
    assert re.search(r"comp / hand: hidden \d+\.\d{3}  CV \d+\.\d{3}  seconds \d+\.\d{3}", out), out
    assert "| digits | comp |" in out and "| digits | hand |" in out
    # the run's augmentation decision was recorded in the folds' logs and reported
    assert re.search(r"augment .*flip (on|off)", out), out
    # the hidden solution stayed out of the data comp was given
    assert not list((tmp_path / "digits" / "data").glob("*solution*"))
