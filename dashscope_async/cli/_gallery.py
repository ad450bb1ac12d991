"""The demo's ``index.html``: each input beside its results, readable offline in any browser.

Owns the page only: one self-contained HTML file (inline CSS, no scripts, no remote assets) that
refers to images by paths relative to itself. Writes nothing else.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import attrs


@attrs.frozen
class GalleryItem:
    """One job on the page.

    Attributes:
        title: the job's name.
        caption: what was asked (the style, the prompt).
        inputs: (caption, image path) of each input.
        results: the result images.
        status: how it ended.
        detail: the task id, or why it failed.
    """

    title: str
    caption: str
    inputs: tuple[tuple[str, Path], ...]
    results: tuple[Path, ...]
    status: str
    detail: str = ""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f4f0;color:#222}
header{padding:24px 32px;background:#1f2a44;color:#fff}
header h1{margin:0 0 6px;font-size:24px}
header p{margin:0;opacity:.8}
main{padding:24px 32px;display:grid;gap:20px;align-items:start;grid-template-columns:repeat(auto-fill,minmax(min(100%,400px),1fr));max-width:1800px}
.job{background:#fff;border-radius:10px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:16px 20px;min-width:0}
.job h2{margin:0;font-size:18px}
.job .caption{color:#555;margin:4px 0 12px}
.row{display:flex;flex-wrap:wrap;align-items:center;gap:14px}
figure{margin:0;text-align:center}
figure img{height:160px;max-width:100%;object-fit:contain;border-radius:6px;border:1px solid #ddd;background:#fafafa}
figcaption{font-size:12px;color:#666;margin-top:4px}
.arrow{font-size:32px;color:#999}
.status{font-size:12px;padding:2px 8px;border-radius:10px;margin-left:8px;vertical-align:middle}
.succeeded{background:#dff3e4;color:#17692c}.failed{background:#fbe0e0;color:#9b1c1c}
.canceled,.over-budget{background:#eee;color:#555}.running{background:#fff2cc;color:#7a5a00}
.detail{font-size:12px;color:#777;margin-top:10px;font-family:ui-monospace,monospace;overflow-wrap:anywhere}
footer{padding:8px 32px 32px;color:#777;font-size:13px}
code{font-family:ui-monospace,monospace;background:#e8e6df;padding:1px 5px;border-radius:4px}
"""


def _src(path: Path, page_dir: Path) -> str:
    relative = Path(os.path.relpath(path, page_dir))
    return urllib.parse.quote(relative.as_posix())


def _figure(path: Path, caption: str, page_dir: Path) -> str:
    return (
        f'<figure><img src="{html.escape(_src(path, page_dir))}" alt="{html.escape(caption)}"'
        f' loading="lazy"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _with_code(text: str) -> str:
    """``text`` as HTML, its `backticked` spans as <code>."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick stays a character
        return html.escape(text)
    return "".join(
        f"<code>{html.escape(part)}</code>" if odd else html.escape(part)
        for odd, part in ((n % 2 == 1, p) for n, p in enumerate(parts))
    )


def render_gallery(
    items: Sequence[GalleryItem], *, page_dir: Path, title: str, subtitle: str, footer: str = ""
) -> str:
    """The page's HTML; image paths are made relative to ``page_dir``."""
    jobs: list[str] = []
    for item in items:
        figures = [_figure(path, caption, page_dir) for caption, path in item.inputs]
        figures.append('<span class="arrow">&rarr;</span>')
        if item.results:
            figures += [
                _figure(path, f"result {n + 1}", page_dir) for n, path in enumerate(item.results)
            ]
        else:
            figures.append("<figcaption>no result</figcaption>")
        jobs.append(
            '<section class="job">'
            f'<h2>{html.escape(item.title)}<span class="status {html.escape(item.status)}">'
            f"{html.escape(item.status)}</span></h2>"
            f'<p class="caption">{_with_code(item.caption)}</p>'
            f'<div class="row">{"".join(figures)}</div>'
            + (f'<p class="detail">{html.escape(item.detail)}</p>' if item.detail else "")
            + "</section>"
        )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<main>{''.join(jobs)}</main>"
        f"<footer>{_with_code(footer)}</footer></body></html>\n"
    )


def write_gallery(
    path: Path, items: Sequence[GalleryItem], *, title: str, subtitle: str, footer: str = ""
) -> Path:
    """Write the page to ``path``. Blocks."""
    page = render_gallery(
        items, page_dir=path.parent, title=title, subtitle=subtitle, footer=footer
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
