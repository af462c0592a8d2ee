"""The page checker itself catches what it must: a page with every fault fails, a clean page passes."""

from __future__ import annotations

import shutil

import pytest

from .pages import check_page, serve

BROKEN = """<!DOCTYPE html><html><head>
<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
</head><body><main>
<p>Inline math left as text: $$x^2$$ and \\(y\\).</p>
<span class="math notranslate nohighlight">\\(z\\)</span>
<img src="missing.png" alt="missing">
<div class="cell"><div class="cell_output">
<script type="application/vnd.jupyter.widget-view+json">{"model_id": "abc", "version_major": 2}</script>
</div></div>
<script>console.error("boom");</script>
</main></body></html>"""

CLEAN = """<!DOCTYPE html><html><body><main><p>Nothing to see: <code>$$ \\( \\)</code></p>
<img src="dot.png" alt="dot"></main></body></html>"""

# a 1x1 PNG
DOT = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@pytest.fixture(scope="module")
def context():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is not installed: apt-get install -y chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        yield browser.new_context()
        browser.close()


def test_checker_reports_every_fault(tmp_path, context):
    (tmp_path / "broken.html").write_text(BROKEN)
    with serve(tmp_path) as base:
        found = check_page(context, base + "broken.html", widget_timeout_ms=2000)
    text = "\n".join(found["problems"])
    for expected in ["network request (blocked): https://cdn.jsdelivr.net", "console error: boom", "HTTP 404",
                     "image did not load", "formula not rendered: \\(z\\)", "raw TeX in the text: Inline math",
                     "widget not rendered", "widget without a static figure"]:
        assert expected in text, f"{expected!r} not reported in:\n{text}"


def test_checker_passes_a_clean_page(tmp_path, context):
    (tmp_path / "clean.html").write_text(CLEAN)
    (tmp_path / "dot.png").write_bytes(DOT)
    with serve(tmp_path) as base:
        found = check_page(context, base + "clean.html")
    assert found["problems"] == []
    assert found["images"] == 1
