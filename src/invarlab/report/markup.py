"""HTML building blocks of the report: escaping, tables, embedded images, hints, the page shell.

Every string that comes from a file (config values, metric and representation names, figure names) passes
through :func:`esc`; functions here take plain text and return markup, so a caller never escapes twice.
Images are embedded as ``data:image/png;base64`` URIs and the CSS is inline: the page loads nothing.
"""

from __future__ import annotations

import base64
import html
import struct
from collections.abc import Iterable

from invarlab.report.run import PNG_MAGIC
from invarlab.report.tables import Table

__all__ = ["CSS", "details", "esc", "figure", "hint", "page", "section", "settings", "table"]

CSS = """
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #d8dde6; --accent: #2f6fb2; --floor: #f3f4f6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: #fafbfc; }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 14px 0 6px; }
.sub { color: var(--muted); margin: 0 0 14px; } .path { word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0 14px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 120px; }
.card .k { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; padding: 8px 0 4px;
      border-top: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
          margin: 16px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #eef2f7; font-weight: 600; text-align: center; }
td.label, th.label { text-align: left; font-weight: 600; }
tr.floor td { background: var(--floor); color: var(--muted); font-style: italic; }
figure { margin: 10px 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
img.pixelated { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 13px; }
.missing { color: #8a5a00; background: #fff8e6; border: 1px solid #f0d9a0; border-radius: 6px;
           padding: 8px 12px; margin: 6px 0; }
.settings { color: var(--muted); font-size: 13px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow-x: auto; }
details summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 13px; padding: 8px 24px 28px; }
"""


def esc(text: object) -> str:
    """Text (from a file) made safe for element content and quoted attributes."""
    return html.escape(str(text), quote=True)


def table(t: Table) -> str:
    """A :class:`Table` as ``<table>`` markup, floor rows marked, wrapped to scroll sideways when wide."""
    head = []
    if t.groups:
        groups = "".join(f'<th colspan="{span}">{esc(label)}</th>' for label, span in t.groups)
        head.append(f'<tr><th class="label" rowspan="2">{esc(t.corner)}</th>{groups}</tr>')
        head.append("<tr>" + "".join(f"<th>{esc(c)}</th>" for c in t.columns) + "</tr>")
    else:
        cols = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
        head.append(f'<tr><th class="label">{esc(t.corner)}</th>{cols}</tr>')
    body = []
    for label, cells in t.rows:
        cls = ' class="floor"' if label in t.floor_rows else ""
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
        body.append(f'<tr{cls}><td class="label">{esc(label)}</td>{tds}</tr>')
    return (
        f'<div class="scroll"><table><thead>{"".join(head)}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure(png: bytes | None, caption: str = "", alt: str = "", min_width: int = 0) -> str:
    """An embedded PNG (a data URI) with an optional caption; bytes that are not a PNG become a note.

    An image narrower than ``min_width`` pixels (a grid of 32 px thumbnails) is shown enlarged by a whole
    factor, pixels kept sharp."""
    if not png:
        return ""
    if not png.startswith(PNG_MAGIC) or len(png) < 24:
        return f'<p class="missing">{esc(caption or alt)}: not a PNG file, not shown</p>'
    size = ""
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk always comes first
    if 0 < width < min_width:
        zoom = min(4, min_width // width)
        size = f' width="{width * zoom}" height="{height * zoom}" class="pixelated"'
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt or caption)}"{size} src="data:image/png;base64,{data}">{cap}</figure>'


def hint(what: str, command: str | None) -> str:
    """The "not evaluated" note with the command that produces the missing part."""
    run = f": run <code>{esc(command)}</code>" if command else ""
    return f'<p class="missing">{esc(what)}{run}</p>'


def settings(values: dict[str, object], label: str = "settings: ") -> str:
    """An evaluation's settings (from ``_meta``), or other facts, as one line of ``key = value``."""
    if not values:
        return ""
    items = " · ".join(f"{esc(k)} = {esc(v)}" for k, v in values.items())
    return f'<p class="settings">{esc(label)}{items}</p>'


def details(summary: str, body_text: str) -> str:
    """Collapsible preformatted text (the config)."""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(body_text)}</pre></details>"


def section(anchor: str, title: str, body: Iterable[str]) -> str:
    """One ``<section>`` with an id the navigation links to; ``body`` is markup."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(body)}</section>'


def page(title: str, header: str, nav: list[tuple[str, str]], sections: list[str], footer: str) -> str:
    """The whole document: inline CSS, no scripts, nothing loaded from elsewhere."""
    links = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>{header}<nav>{links}</nav></header>\n<main>\n"
        + "\n".join(sections)
        + f"\n</main>\n<footer>{footer}</footer>\n</body>\n</html>\n"
    )
