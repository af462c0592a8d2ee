"""Load a built page in headless Chromium and list what is wrong with it (used by test_pages.py).

A page passes when, with every request off 127.0.0.1 blocked: no console error or uncaught exception, no failed
request or HTTP error, every image loaded, every formula rendered by MathJax and no raw TeX delimiters left in
the text, and every embedded widget rendered with a static figure beside it.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LOCAL_HOSTS = {"127.0.0.1"}
TIMEOUT_MS = 60_000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature http.server defines
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 at a free port, in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


_SETTLE = """async () => {
    // MathJax typesets after load; its startup promise resolves when the page is done
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    for (const img of document.images) { if (img.loading === "lazy") img.loading = "eager"; }
    await Promise.all([...document.images].map(img => img.complete ? null :
        new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); })));
}"""

_WIDGETS_RENDERED = f"""() => [...document.querySelectorAll('script[type="{WIDGET_VIEW}"]')].every(s => {{
    const prev = s.previousElementSibling;
    return prev && prev.classList.contains("widget-subarea") && prev.children.length > 0;
}})"""

_INSPECT = f"""() => {{
    const problems = [];
    // images
    for (const img of document.images) {{
        if (!img.complete || img.naturalWidth === 0) problems.push("image did not load: " + img.currentSrc);
    }}
    // math: Sphinx marks every formula with class "math"; MathJax puts an mjx-container inside
    const formulas = [...document.querySelectorAll(".math")];
    for (const f of formulas) {{
        if (!f.querySelector("mjx-container")) {{
            problems.push("formula not rendered: " + f.textContent.trim().slice(0, 80));
        }}
    }}
    const root = document.querySelector("main") || document.body;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const raw = /\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{{/;
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {{
        const el = n.parentElement;
        if (!el || el.closest("pre, code, script, style, textarea, .highlight, mjx-container")) continue;
        if (raw.test(n.textContent)) problems.push("raw TeX in the text: " + n.textContent.trim().slice(0, 80));
    }}
    // widgets: each rendered, and a static figure (a loaded image outside any widget) in its cell or the
    // code cell next to it, because a published page runs no widget callback
    const cells = [...document.querySelectorAll("div.cell")];
    const hasFigure = cell => cell && [...cell.querySelectorAll(".cell_output img")].some(img =>
        img.naturalWidth > 0 && !img.closest(".widget-subarea, .jupyter-widgets"));
    const views = [...document.querySelectorAll('script[type="{WIDGET_VIEW}"]')];
    for (const view of views) {{
        const prev = view.previousElementSibling;
        if (!(prev && prev.classList.contains("widget-subarea") && prev.children.length > 0)) {{
            problems.push("widget not rendered: " + view.textContent.trim().slice(0, 120));
        }}
        const cell = view.closest("div.cell");
        const k = cells.indexOf(cell);
        if (k < 0 || !(hasFigure(cells[k]) || hasFigure(cells[k - 1]) || hasFigure(cells[k + 1]))) {{
            const code = cell ? (cell.querySelector(".cell_input") || cell).textContent.trim().slice(0, 80) : "?";
            problems.push("widget without a static figure beside it: " + code);
        }}
    }}
    return {{problems, formulas: formulas.length, widgets: views.length, images: document.images.length,
             links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href"))}};
}}"""


def check_page(context, url: str, *, widget_timeout_ms: int = TIMEOUT_MS) -> dict:
    """Load ``url`` in a new page of the Playwright browser ``context``; return what it found.

    The result has ``problems`` (a list of messages; empty when the page is fine), the number of ``formulas``,
    ``widgets`` and ``images``, and every link's ``href`` in ``links``. Widgets get ``widget_timeout_ms`` to
    render (the HTML manager renders them after the page has loaded).
    """
    problems: list[str] = []
    page = context.new_page()

    def route(r) -> None:
        if urlparse(r.request.url).hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            problems.append(f"network request (blocked): {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})")
            if urlparse(r.url).hostname in LOCAL_HOSTS else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        for _ in range(3):   # a page that redirects (index.html) destroys the context once
            try:
                page.evaluate(_SETTLE)
                break
            except Exception as err:  # noqa: BLE001 - Playwright's Error; re-raised unless it is the redirect
                if "context was destroyed" not in str(err):
                    raise
                page.wait_for_load_state("load", timeout=TIMEOUT_MS)
        try:
            page.wait_for_function(_WIDGETS_RENDERED, timeout=widget_timeout_ms)
        except Exception:  # noqa: BLE001 - _INSPECT names the widget that did not render
            pass
        page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        page.evaluate(_SETTLE)
        found = page.evaluate(_INSPECT)
    finally:
        page.close()
    found["problems"] = problems + found["problems"]
    return found
