"""The committed reports as a reader sees them: rendered by Debian's Chromium (headless, through
Playwright), at a 1280-px-wide window. Every page reachable from reports/index.html is checked: images
load, links resolve (files and #anchors), no table is wider than the window, every figure is an SVG
whose axes are labelled, and the table of contents jumps to its sections.

Chromium is not a Python package: `sudo apt-get install chromium` installs it. Where it is missing these
tests are skipped with that instruction, except where the run asks for them with GENBENCH_BROWSER_TESTS=1
(`.ci/run` installs Chromium and sets it), where a missing browser is a failure."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORTS = Path(os.environ.get("GENBENCH_REPORTS", ROOT / "reports")).resolve()  # or a report built elsewhere
WIDTH = 1280


REQUIRED = os.environ.get("GENBENCH_BROWSER_TESTS") == "1"
MISSING = ("Debian's Chromium is not installed: `sudo apt-get install chromium` (the report's browser tests need it; "
           "GENBENCH_BROWSER_TESTS=1 makes its absence a failure, as in .ci/run)")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if REQUIRED:
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


def pages() -> list[Path]:
    """reports/index.html and every HTML page it leads to, breadth first."""
    seen, queue = [], [REPORTS / "index.html"]
    while queue:
        page = queue.pop(0)
        if page in seen:
            continue
        seen.append(page)
        text = page.read_text()
        for href in _hrefs(text):
            target = _local(page, href)
            if target is not None and target.suffix == ".html" and target.exists():
                queue.append(target)
    return seen


def _hrefs(html: str) -> list[str]:
    import re

    return re.findall(r'href="([^"]+)"', html)


def _local(page: Path, href: str) -> Path | None:
    parsed = urlparse(href)
    if parsed.scheme or not parsed.path:
        return None
    return (page.parent / unquote(parsed.path)).resolve()


def axis_labels(svg: Path) -> tuple[list[str], list[str]]:
    """The texts of the x- and y-axis labels a genbench SVG figure carries (ids x-/y-axis-label-<i>)."""
    tree = ET.parse(svg)
    x, y = [], []
    for element in tree.iter():
        gid = element.get("id") or ""
        text = " ".join(t.strip() for t in element.itertext() if t.strip())
        if gid.startswith("x-axis-label"):
            x.append(text)
        elif gid.startswith("y-axis-label"):
            y.append(text)
    return x, y


def test_the_committed_reports_read_well_in_a_real_browser(browser):
    assert (REPORTS / "index.html").exists() and (REPORTS / "digits" / "index.html").exists()
    found = pages()
    assert REPORTS / "digits" / "index.html" in found and any("models" in p.parts for p in found)
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    problems = []
    for path in found:
        page = context.new_page()
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        name = path.relative_to(REPORTS)
        # images: every <img> decoded to a real size
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        problems += [f"{name}: image does not load: {src}" for src in broken]
        # links: files exist, #anchors exist on their page
        for href in page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"):
            parsed = urlparse(href)
            if parsed.scheme and parsed.scheme != "file":
                continue
            target = _local(path, href) or path
            if not target.exists():
                problems.append(f"{name}: link to a missing file: {href}")
            elif parsed.fragment and target.suffix == ".html":
                if f'id="{parsed.fragment}"' not in target.read_text():
                    problems.append(f"{name}: link to a missing anchor: {href}")
        # no table wider than the window, no horizontal scrolling
        widths = page.evaluate("[...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right)")
        problems += [f"{name}: table {i} ends at {w:.0f} px (> {WIDTH})" for i, w in enumerate(widths) if w > WIDTH]
        scroll = page.evaluate("document.documentElement.scrollWidth")
        if scroll > WIDTH:
            problems.append(f"{name}: the page is {scroll} px wide")
        # figures: SVGs with both axis labels on every axes
        for src in page.evaluate("[...document.querySelectorAll('figure img')].map(i => i.getAttribute('src'))"):
            figure = _local(path, src)
            if figure is None or figure.suffix != ".svg" or not figure.exists():
                problems.append(f"{name}: figure {src} is not an SVG file with labelled axes")
                continue
            x, y = axis_labels(figure)
            if not x or not y or not all(x) or not all(y):
                problems.append(f"{name}: figure {src} lacks axis labels (x {x}, y {y})")
        # table of contents: present on report pages, every entry jumps to its section
        if path.parent.name != "models" and path != REPORTS / "index.html":
            entries = page.evaluate("[...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href'))")
            if not entries:
                problems.append(f"{name}: no table of contents")
            for anchor in entries:
                page.evaluate("window.scrollTo(0, 0)")
                page.click(f'nav.toc a[href="{anchor}"]')
                offset = page.evaluate(f"document.getElementById('{anchor[1:]}').getBoundingClientRect().top")
                at_bottom = page.evaluate("window.innerHeight + window.scrollY >= document.body.scrollHeight - 2")
                if abs(offset) > 2 and not at_bottom:
                    problems.append(f"{name}: contents entry {anchor} leaves its heading at {offset:.0f} px")
        page.close()
    context.close()
    assert not problems, "\n".join(problems)


def test_figure_labels_are_read_from_the_svg_itself(tmp_path):
    """The label check reads the figure, not the page: an unlabelled axis is refused when drawn."""
    from matplotlib.figure import Figure

    from genbench.report.figures import save

    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_xlabel("epoch")
    with pytest.raises(ValueError, match="lacks an axis label"):
        save(fig, tmp_path / "bad.svg")
    ax.set_ylabel("loss (nats)")
    save(fig, tmp_path / "good.svg")
    assert axis_labels(tmp_path / "good.svg") == (["epoch"], ["loss (nats)"])


@pytest.mark.parametrize("required, outcome", [(False, pytest.skip.Exception), (True, pytest.fail.Exception)])
def test_a_missing_browser_skips_unless_the_run_asks_for_it(monkeypatch, required, outcome):
    import test_report_browser as this

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(this, "REQUIRED", required)
    with pytest.raises(outcome, match="sudo apt-get install chromium"):
        this.chromium()
