"""Sections -> Markdown and a self-contained HTML page; training-curve figures.

Tables come from pandas (`to_markdown`, `to_html`); the page frame around them is a few lines of
hand-written HTML, since no library here produces a report page.
"""

from __future__ import annotations

import html
import re

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from genbench.io import atomic_file
from genbench.report.sections import Section

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.warning { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; max-width: 60em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img.samples { width: 256px; image-rendering: pixelated; }
figure img.curve { width: 420px; }
figcaption { text-align: center; font-size: 0.9em; }
"""


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


def html_page(title: str, intro_html: list[str], sections: list[Section]) -> str:
    """A single page with inline CSS; every text from a record is escaped."""
    body = [f"<h1>{html.escape(title)}</h1>", *intro_html]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.table is not None and not section.table.empty:
            body.append(section.table.to_html(index=False, escape=True, border=0))
        body += [f'<p class="warning"><b>Warning:</b> {html.escape(w)}</p>' for w in section.warnings]
        body += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
        for caption, path in section.images:
            css_class = "samples" if path.startswith("samples/") else "curve"
            body.append(f'<figure><img class="{css_class}" src="{html.escape(path)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def curve_figure(curve: pd.DataFrame, title: str, path) -> None:
    """One line per loss column against epoch, written atomically as PNG. With a `seed` column (one
    row per seed and epoch), the line is the mean over seeds and a shaded band spans their min to max.

    `Figure` (not pyplot) renders with Agg and keeps no global state, so no display is needed."""
    losses = [c for c in curve.columns if c not in ("epoch", "seed")]
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.subplots()
    n_seeds = curve["seed"].nunique() if "seed" in curve.columns else 1
    by_epoch = curve.groupby("epoch")
    for i, name in enumerate(losses):
        if n_seeds > 1:
            stats = by_epoch[name].agg(["mean", "min", "max"])
            color = f"C{i % 10}"
            ax.plot(stats.index, stats["mean"], color=color, label=f"{name} (mean of {n_seeds} seeds)",
                    marker="." if len(stats) < 30 else None)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, linewidth=0)
        else:
            ax.plot(curve["epoch"], curve[name], label=name, marker="." if len(curve) < 30 else None)
    values = curve[losses].to_numpy(dtype=float)
    # Losses spanning orders of magnitude (e.g. an ELBO falling from its start) read better on a log axis.
    finite = values[~pd.isna(values)]
    if len(finite) and (finite > 0).all() and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if losses:
        ax.legend(fontsize="small")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
