"""What the Python API returns for a notebook to show inline: a report's figures, the EDA's, the lr finder's plot.

Each object is plain data everywhere else (a path, a dict); in Jupyter its `_repr_html_` draws the figures in
the cell (the PNGs the HTML reports embed), so `ws.report()` as a cell's last line shows the curves, the
confusion matrix and the highest-loss images without opening a file.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_IMG = re.compile(r'<img src="(data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+)" alt="([^"]*)"')
ROUND = 4  # digits of the floats in the DataFrames the API returns


def embedded_figures(page: Path) -> list[tuple[str, str]]:
    """(caption, data URI) of every image embedded in an HTML report, in page order."""
    if not page.is_file():
        return []
    return [(html.unescape(alt), src) for src, alt in _IMG.findall(page.read_text(encoding="utf-8"))]


def figure_files(paths: list[Path]) -> list[tuple[str, str]]:
    """(caption, data URI) of PNG files (the caption is the file's name without .png)."""
    return [(p.stem.replace("-", " "), "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii"))
            for p in paths if p.is_file()]


def figures_html(title: str, figures: list[tuple[str, str]], note: str = "") -> str:
    cells = "".join(f"<figure style='display:inline-block;margin:4px'><img src='{src}' style='max-width:480px'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>" for caption, src in figures)
    note = f"<p>{html.escape(note)}</p>" if note else ""
    return f"<div><b>{html.escape(title)}</b>{note}<div>{cells or '(no figures yet)'}</div></div>"


class ReportPath(type(Path())):  # type: ignore[misc]
    """The path of a report.html (str() and open as any Path); in a notebook it shows the report's figures."""

    def _repr_html_(self) -> str:
        return figures_html(f"{self} (open it, or copy it anywhere: every image is embedded)", embedded_figures(self))


@dataclass
class Figures:
    """A stage's figures and numbers for a notebook: `data` holds what the stage returned (summary, suggestion)."""

    title: str
    figures: list[tuple[str, str]]
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def _repr_html_(self) -> str:
        return figures_html(self.title, self.figures, self.note)


def rounded(frame: Any, digits: int = ROUND) -> Any:
    """A DataFrame with its float columns rounded (a notebook shows 0.8123, not 0.812345679); attrs kept."""
    attrs = dict(frame.attrs)
    out = frame.round({c: digits for c in frame.columns if frame[c].dtype.kind == "f"})
    out.attrs = attrs
    return out
