"""The official `kaggle` command, run as a subprocess: submit a file, list submissions (CSV), wait for a public score.

comp never reads or stores Kaggle credentials: the kaggle tool uses its own (~/.kaggle/kaggle.json or
its environment variables).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from comp.core.errors import CompError

if TYPE_CHECKING:
    from comp.core.config import Config
    from comp.core.layout import Layout

log = logging.getLogger("comp.export.kaggle")

MISSING = "the kaggle command is not installed; pip install 'comp[kaggle]' (or pip install kaggle) and set up its credentials"
CODE_COMPETITION_WORDS = ("notebook", "kernel", "code competition")
TIMEOUT_S = 600


@dataclass(frozen=True)
class KaggleSubmission:
    """One row of `kaggle competitions submissions`."""

    file_name: str
    date: str
    description: str
    status: str
    public_score: float | None
    private_score: float | None

    @property
    def complete(self) -> bool:
        return "complete" in self.status.lower()

    @property
    def failed(self) -> bool:
        return "error" in self.status.lower()


def kaggle_executable() -> str:
    """The kaggle command on PATH, or a CompError naming the package."""
    found = shutil.which("kaggle")
    if found is None:
        raise CompError(MISSING)
    return found


def run_kaggle(args: list[str]) -> str:
    """Run `kaggle ARGS`; its stdout, or a CompError with the tool's last message line."""
    cmd = [kaggle_executable(), *args]
    log.debug("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise CompError(f"`kaggle {' '.join(args)}` did not finish in {TIMEOUT_S}s; check the network and retry") from None
    except OSError as exc:
        raise CompError(f"could not run {cmd[0]} ({exc}); {MISSING}") from None
    if done.returncode != 0:
        raise CompError(f"`kaggle {' '.join(args[:2])}` failed (exit {done.returncode}): {last_line(done.stderr or done.stdout)}")
    return done.stdout


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def submit(slug: str, file: Path, message: str) -> str:
    """`kaggle competitions submit -c SLUG -f FILE -m MESSAGE`; the tool's confirmation line."""
    out = run_kaggle(["competitions", "submit", "-c", slug, "-f", str(file), "-m", message])
    if "successfully submitted" not in out.lower():  # the tool prints some refusals and still exits 0
        line = last_line(out)
        if any(word in line.lower() for word in CODE_COMPETITION_WORDS):
            raise CompError(f"Kaggle refused the file: {line}; this looks like a code competition: "
                            "set code_competition: true in comp.yaml and use `comp export`")
        raise CompError(f"Kaggle did not accept the submission: {line}")
    return last_line(out)


def list_submissions(slug: str) -> list[KaggleSubmission]:
    """Your submissions to competition `slug`, newest first (`kaggle competitions submissions -c SLUG -v`)."""
    return parse_submissions(run_kaggle(["competitions", "submissions", "-c", slug, "-v"]))


def parse_submissions(text: str) -> list[KaggleSubmission]:
    """Rows of the CSV the kaggle tool prints (camelCase or snake_case headers; lines before the header skipped)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "filename" in _key(line) and "status" in line.lower()), None)
    if start is None:
        if "no submissions" in text.lower():
            return []
        raise CompError(f"could not read the kaggle tool's submission list (no CSV header in: {last_line(text)!r}); "
                        "update the kaggle package")
    rows = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        get = {_key(k): (v or "").strip() for k, v in row.items() if k}
        rows.append(KaggleSubmission(file_name=get.get("filename", ""), date=get.get("date", ""),
                                     description=get.get("description", ""), status=get.get("status", ""),
                                     public_score=_score(get.get("publicscore")), private_score=_score(get.get("privatescore"))))
    return rows


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def _score(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "None", "null") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def find_submission(rows: list[KaggleSubmission], file_name: str, message: str) -> KaggleSubmission | None:
    """The newest listed submission of this file with this message."""
    return next((r for r in rows if r.description == message and Path(r.file_name).name == file_name), None)


def wait_for_score(slug: str, file_name: str, message: str, *, poll_s: float = 30.0, timeout_s: float = 3600.0,
                   sleep: Callable[[float], None] = time.sleep) -> KaggleSubmission:
    """Poll the submission list until this submission has a public score; CompError on an error status or timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = find_submission(list_submissions(slug), file_name, message)
        if row is not None and row.failed:
            raise CompError(f"Kaggle scored {file_name} with status {row.status!r}; see the competition's submissions page")
        if row is not None and row.complete and row.public_score is not None:
            return row
        if time.monotonic() >= deadline:
            state = row.status if row is not None else "not listed yet"
            raise CompError(f"no public score for {file_name} after {timeout_s:.0f}s ({state}); "
                            "record it later with `comp leaderboard --record NAME --lb SCORE`")
        log.info("waiting for the public score of %s (%s)", file_name, row.status if row else "not listed yet")
        sleep(poll_s)


# ---------------------------------------------------------------- comp submit


def check_submittable(cfg: Config, ws: Layout, name: str) -> str:
    """The competition slug, after refusing code competitions, a missing slug and an unknown submission."""
    from comp.core.errors import did_you_mean

    if cfg.code_competition:
        raise CompError(f"{cfg.competition or 'this competition'} is a code competition: Kaggle scores a notebook, not a "
                        f"file; run `comp export {name} --to DIR`, upload DIR with `kaggle datasets create -p DIR`, and "
                        "submit its notebook.ipynb")
    if not cfg.competition:
        raise CompError("comp.yaml has no `competition:` (the Kaggle slug from the competition's URL, e.g. "
                        "competition: digit-recognizer); add it to submit")
    if not ws.submission_csv(name).is_file() or not ws.submission_json(name).is_file():
        known = sorted(p.stem for p in ws.submissions_dir.glob("*.json"))
        raise CompError(f"no submission {name!r} ({ws.submission_csv(name)} with its manifest){did_you_mean(name, known)}; "
                        f"make it with `comp ensemble --name {name}` (known: {', '.join(known) or 'none'})")
    return cfg.competition


def submit_submission(cfg: Config, ws: Layout, name: str, message: str, *, wait: bool = False,
                      poll_s: float = 30.0, timeout_s: float = 3600.0,
                      sleep: Callable[[float], None] = time.sleep) -> dict:
    """Upload submissions/<name>.csv with the kaggle tool, record it in leaderboard.json, and with `wait` its score."""
    import hashlib

    from comp.blend.leaderboard import record_entry, record_lb

    slug = check_submittable(cfg, ws, name)
    if not message.strip():
        raise CompError("the submission message is empty; pass -m 'what changed'")
    kaggle_executable()
    csv_path = ws.submission_csv(name)
    confirmation = submit(slug, csv_path, message)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record_entry(ws, name, competition=slug, submitted=stamp, message=message,
                 manifest_sha256=hashlib.sha256(ws.submission_json(name).read_bytes()).hexdigest(),
                 csv_sha256=hashlib.sha256(csv_path.read_bytes()).hexdigest())
    result = {"name": name, "competition": slug, "submitted": stamp, "confirmation": confirmation, "lb": None}
    if wait:
        row = wait_for_score(slug, csv_path.name, message, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep)
        record_lb(ws, name, row.public_score)
        if row.private_score is not None:
            record_entry(ws, name, private_lb=row.private_score)
        result.update(lb=row.public_score, private_lb=row.private_score)
    return result
