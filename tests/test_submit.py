"""comp submit through a fake `kaggle` executable on PATH that records its arguments and answers as the real tool does."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.core.errors import CompError
from comp.export.kaggle import parse_submissions
from comp.core.layout import Layout, read_json, write_json

runner = CliRunner()

FAKE_KAGGLE = r'''#!{python}
"""A stand-in for the kaggle CLI: appends argv to calls.jsonl; `submissions` answers 'pending' {pending} time(s) first."""
import json, os, sys
from pathlib import Path
state = Path(__file__).parent
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args[:2] == ["competitions", "submit"]:
    if os.environ.get("FAKE_KAGGLE_REFUSE"):
        print("Submission not allowed: this competition only accepts submissions from notebooks")
        sys.exit(0)
    print("100%|##########| 1.21k/1.21k [00:00<00:00, 3.1kB/s]")
    print("Successfully submitted to Face Mask Classification")
elif args[:2] == ["competitions", "submissions"]:
    polls = state / "polls"
    n = int(polls.read_text()) if polls.exists() else 0
    polls.write_text(str(n + 1))
    message = json.loads((state / "calls.jsonl").read_text().splitlines()[0])[-1]
    done = n >= {pending}
    print("ref,fileName,date,description,status,publicScore,privateScore")
    print(f"1002,blend.csv,2024-05-02 10:00:00,\"{{message}}\",{{'SubmissionStatus.COMPLETE' if done else 'SubmissionStatus.PENDING'}},{{'0.7632' if done else ''}},")
    print("1001,blend.csv,2024-05-01 09:00:00,older try,SubmissionStatus.COMPLETE,0.7001,")
else:
    print("unexpected arguments", file=sys.stderr)
    sys.exit(2)
'''


def invoke(ws: Path, *args: str):
    return runner.invoke(app, [*args, "--workspace", str(ws)])


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """Write bin/kaggle (answering 'pending' once before the score), put it first on PATH; yield its folder."""
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "kaggle"
    import sys

    exe.write_text(FAKE_KAGGLE.format(python=sys.executable, pending=1))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder


def calls(folder: Path) -> list[list[str]]:
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


@pytest.fixture
def submitted_ws(tiny_ws) -> Path:
    """A workspace with competition: set and a submission (csv + manifest) to upload."""
    comp = yaml.safe_load((tiny_ws / "comp.yaml").read_text())
    (tiny_ws / "comp.yaml").write_text(yaml.safe_dump({**comp, "competition": "face-mask"}))
    ws = Layout.at(tiny_ws)
    ws.submissions_dir.mkdir()
    ws.submission_csv("blend").write_text("ImageID,ans\nt000,c0\n")
    write_json(ws.submission_json("blend"), {"members": ["baseline"], "method": "mean", "oof": 0.8, "nested": 0.78})
    return tiny_ws


def test_submit_uploads_records_and_waits_for_the_score(submitted_ws, fake_kaggle, monkeypatch):
    monkeypatch.setattr("comp.export.kaggle.time.sleep", lambda s: None)
    result = invoke(submitted_ws, "submit", "blend", "-m", "geometric blend, bias", "--wait", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert "Successfully submitted to Face Mask Classification" in result.output and "0.7632" in result.output
    made = calls(fake_kaggle)
    ws = Layout.at(submitted_ws)
    assert made[0] == ["competitions", "submit", "-c", "face-mask", "-f", str(ws.submission_csv("blend")),
                       "-m", "geometric blend, bias"]
    assert made[1:] == [["competitions", "submissions", "-c", "face-mask", "-v"]] * 2  # pending, then scored
    entry = read_json(ws.leaderboard_json)["blend"]
    assert entry["lb"] == 0.7632 and entry["message"] == "geometric blend, bias" and entry["competition"] == "face-mask"
    import hashlib

    assert entry["manifest_sha256"] == hashlib.sha256(ws.submission_json("blend").read_bytes()).hexdigest()
    assert entry["submitted"] and entry["recorded"]
    board = invoke(submitted_ws, "leaderboard")
    assert "0.7632" in board.output


def test_submit_without_wait_records_the_upload_and_keeps_a_manual_score(submitted_ws, fake_kaggle):
    assert invoke(submitted_ws, "leaderboard", "--record", "blend", "--lb", "0.5").exit_code == 0
    result = invoke(submitted_ws, "submit", "blend", "-m", "first")
    assert result.exit_code == 0, result.output
    entry = read_json(Layout.at(submitted_ws).leaderboard_json)["blend"]
    assert entry["message"] == "first" and entry["lb"] == 0.5  # --record's score is kept, not overwritten
    assert len(calls(fake_kaggle)) == 1


def test_submit_errors(submitted_ws, tmp_path, monkeypatch, fake_kaggle):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = invoke(submitted_ws, "submit", "blend", "-m", "x")
    assert missing.exit_code == 2 and "kaggle command is not installed" in missing.output
    assert "pip install kaggle" in missing.output  # (and comp[kaggle], where the error display keeps brackets)
    monkeypatch.setenv("PATH", f"{fake_kaggle}{os.pathsep}{os.environ.get('PATH', '')}")
    unknown = invoke(submitted_ws, "submit", "blnd", "-m", "x")
    assert unknown.exit_code == 2 and "did you mean blend" in unknown.output
    monkeypatch.setenv("FAKE_KAGGLE_REFUSE", "1")
    refused = invoke(submitted_ws, "submit", "blend", "-m", "x")
    assert refused.exit_code == 2 and "code competition" in refused.output and "comp export" in refused.output
    monkeypatch.delenv("FAKE_KAGGLE_REFUSE")

    comp = yaml.safe_load((submitted_ws / "comp.yaml").read_text())
    (submitted_ws / "comp.yaml").write_text(yaml.safe_dump({**comp, "code_competition": True}))
    code = invoke(submitted_ws, "submit", "blend", "-m", "x")
    assert code.exit_code == 2 and "comp export blend --to DIR" in code.output
    (submitted_ws / "comp.yaml").write_text(yaml.safe_dump({k: v for k, v in comp.items() if k != "competition"}))
    no_slug = invoke(submitted_ws, "submit", "blend", "-m", "x")
    assert no_slug.exit_code == 2 and "competition:" in no_slug.output
    assert not Layout.at(submitted_ws).leaderboard_json.exists()  # nothing recorded for failed submits


def test_parse_submissions_handles_both_header_styles():
    old = "Warning: Looks like you're using an outdated API Version\nfileName,date,description,status,publicScore,privateScore\n" \
          "a.csv,2024-01-01,\"x, y\",complete,0.91,0.90\n"
    rows = parse_submissions(old)
    assert rows[0].description == "x, y" and rows[0].public_score == 0.91 and rows[0].complete
    new = "file_name,date,description,status,public_score,private_score\nb.csv,2024-01-02,m,SubmissionStatus.ERROR,None,\n"
    row = parse_submissions(new)[0]
    assert row.failed and row.public_score is None
    assert parse_submissions("No submissions found\n") == []
    with pytest.raises(CompError, match="submission list"):
        parse_submissions("401 - Unauthorized\n")
