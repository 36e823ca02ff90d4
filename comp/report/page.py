"""HTML reports built from sections that each stage writes; plots are matplotlib PNGs beside them.

An experiment's report is `experiments/<exp>/report.html`. Each stage adds or replaces its own
section (`report/<order>-<key>.html` plus PNGs) and the page is re-rendered from all sections,
so every later stage appends to the same report and reruns never duplicate a section.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from comp.core.layout import Layout, write_text, write_with  # noqa: E402

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
img{max-width:100%;margin:.5rem 0;border:1px solid #eee}.note{color:#666;font-size:.85rem}
.card{border:1px solid #ccd;border-radius:6px;background:#f8f9fc;padding:.6rem 1rem;margin:1rem 0}
.card h2{margin-top:.4rem}.tiles{display:flex;flex-wrap:wrap;gap:.6rem}
.tile{background:#fff;border:1px solid #dde;border-radius:4px;padding:.4rem .7rem;min-width:10rem;max-width:20rem}
.tile .label{font-size:.75rem;color:#666}.tile .value{font-size:1.25rem;font-weight:600}
.tile .sub{font-size:.75rem;color:#666}.warn{color:#a40;font-weight:600}details summary{cursor:pointer;color:#336}
"""


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure atomically as PNG and close it."""
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return path


def figure_uri(fig: plt.Figure, dpi: int = 110) -> str:
    """A matplotlib figure as a data: URI of its PNG (for pages with no folder of images beside them); closes it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def table_html(frame: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    formatters = {c: float_format.format for c in frame.columns if frame[c].dtype.kind == "f"}
    return frame.to_html(index=False, border=0, formatters=formatters, escape=True)


def img_html(src: str, alt: str = "") -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def add_section(ws: Layout, exp: str, key: str, title: str, body: str, *, order: int = 50) -> Path:
    """Write (or replace) one section of the experiment's report, then re-render report.html."""
    fragment = f"<section id='{html.escape(key)}'><h2>{html.escape(title)}</h2>\n{body}\n</section>\n"
    target = ws.report_dir(exp) / f"{order:02d}-{key}.html"
    write_text(target, fragment)
    for old in ws.report_dir(exp).glob(f"*-{key}.html"):  # the same section at another place (an older order)
        if old != target and re.fullmatch(rf"\d+-{re.escape(key)}\.html", old.name):
            old.unlink(missing_ok=True)
    return render_report(ws, exp)


def render_report(ws: Layout, exp: str) -> Path:
    """report.html = the summary card, then all sections in order, one self-contained file (every image embedded
    as a data URI). The card is drawn from the experiment's artifacts now (comp.report.card)."""
    from comp.report.card import summary_card

    sections = sorted(ws.report_dir(exp).glob("*.html"))
    body = summary_card(ws, exp) + "\n" + "\n".join(p.read_text() for p in sections)
    return write_text(ws.report_html(exp), page(f"comp report: {exp}", embed_images(body, ws.report_html(exp).parent)))


_SRC = re.compile(r'src="([^"]+)"')


def embed_images(body: str, folder: Path) -> str:
    """Replace each src="relative.png" by a base64 data URI of the file under `folder` (a missing file is dropped)."""

    def inline(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        if src.startswith("data:"):
            return match.group(0)
        path = folder / src
        if not path.is_file():
            return 'src=""'
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f'src="data:{mime};base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    return _SRC.sub(inline, body)


def report_image(ws: Layout, exp: str, name: str) -> tuple[Path, str]:
    """(absolute path to write a plot to, src to use in a section of report.html)."""
    return ws.report_dir(exp) / name, f"report/{name}"
