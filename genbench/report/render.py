"""Sections -> Markdown (pandas' `to_markdown`) and HTML (a Jinja2 template, templates/page.html.j2).

Table cells arrive formatted, `0.983 [0.981, 0.986] ★`; the HTML puts the interval on a second line,
marks tied-best cells, and right-aligns numbers. Section anchors are GitHub's heading slugs, so the
table of contents works in the HTML page and in the Markdown one alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from genbench.report.sections import STAR, Section


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# "0.9833", "0.9833 [0.9806, 0.9861]", "0.9833 [0.9806, 0.9861] ★": a number, maybe with its interval and mark.
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?( \[[^\]]*\])?( ★)?$|^-?(inf|nan)$", re.IGNORECASE)


def _is_number(text: str) -> bool:
    return bool(_NUMBER.match(str(text)))


def _md_table(table: pd.DataFrame) -> str:
    """Numbers right-aligned, text left-aligned; cells stay the formatted strings."""
    align = ["right" if all(_is_number(v) for v in table[c] if v != "") and (table[c] != "").any() else "left"
             for c in table.columns]
    return table.map(_md_cell).to_markdown(index=False, disable_numparse=True, colalign=align)


def markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    if sections:
        lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in sections), ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.table is not None and not section.table.empty:
            lines += [_md_table(section.table), ""]
        for warning in section.warnings:
            lines += [f"> **Warning:** {warning}", ""]
        for note in section.notes:
            lines += [note, ""]
        for caption, path in section.images:
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    return "\n".join(lines)


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
_CELL = re.compile(r"^(?P<value>.*?)(?: (?P<ci>\[[^\]]*\]))?(?P<star> ★)?$")


def _cell(value, links: dict | None = None) -> Markup:
    """One <td>: numbers right-aligned with their interval on a second line, tied-best cells marked,
    model names linked to their page."""
    text = str(value)
    if links and text in links:
        return Markup('<td class="text"><a href="{}">{}</a></td>').format(links[text], text)
    if not _is_number(text):
        return Markup('<td class="text">{}</td>').format(text)
    parts = _CELL.match(text)
    css = "num best" if parts["star"] else "num"
    inner = escape(parts["value"]) + (Markup(" ") + STAR if parts["star"] else "")
    if parts["ci"]:
        inner += Markup('<span class="ci">{}</span>').format(parts["ci"])
    return Markup('<td class="{}">{}</td>').format(css, inner)


_ENV.filters["cell"] = _cell


def html_page(title: str, intro: list[str], sections: list[Section], *, links: list[tuple[str, str]] = (),
              best: list[str] = (), tie_note: str = "") -> str:
    """A single self-contained page (inline CSS, relative links); every text is escaped by the template."""
    return _ENV.get_template("page.html.j2").render(title=title, intro=intro, sections=sections, links=list(links),
                                                    best=list(best), tie_note=tie_note)
