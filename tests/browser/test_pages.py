"""Every page of the built book works offline in a real browser (headless Debian chromium, driven by Playwright).

`make browser` (part of `make test`) builds the book in quick mode into _build/quick and runs this with
BOOK_HTML=_build/quick/_build/html. The pages are served on 127.0.0.1; any other request is blocked and fails the
page. See pages.py for what a page must satisfy. Chromium is Debian's (`apt-get install chromium`, which .ci/run
does); `playwright install` is never run, nothing downloads a browser.

Cost on the 2-core build machine: ~50 s for the 13 pages and the checker's test, on top of the quick book build
(~9 minutes from an empty execution cache on idle cores, ~15 s when no notebook changed; see the Makefile).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from .pages import check_page, serve

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "quick" / "_build" / "html"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOT_PAGES = {"_static", "_sources", "_images", "_downloads"}
BUILD_HINT = "build the book first: `make browser` (LEAKLIB_QUICK=1 jupyter-book build . --path-output _build/quick)"


def _pages() -> list[str]:
    if not HTML.is_dir():
        return []
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not NOT_PAGES.intersection(p.relative_to(HTML).parts))


PAGES = _pages()


def colab_url(notebook: str) -> str:
    """The Colab address of ``notebooks/NN_x.ipynb`` in the repository that _config.yml names."""
    repo = urlparse_path(CONFIG["repository"]["url"])
    branch = CONFIG["repository"].get("branch", "main")
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/{notebook}"


def urlparse_path(url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", url)
    assert match, f"repository.url in _config.yml is not a GitHub repository: {url}"
    return match.group(1)


@pytest.fixture(scope="module")
def site():
    assert PAGES, f"no built book in {HTML}: {BUILD_HINT}"
    with serve(HTML) as base:
        yield base


@pytest.fixture(scope="module")
def browser_context():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(service_workers="block")
        yield context
        context.close()
        browser.close()


def test_the_book_is_built_with_a_page_per_chapter():
    assert PAGES, f"no built book in {HTML}: {BUILD_HINT}"
    for path in CHAPTERS:
        assert f"notebooks/{path.stem}.html" in PAGES, f"{path.name} has no page in {HTML}"
    assert not [p for p in PAGES if p.startswith("notebooks/student/")], "student copies must not be book pages"
    assert len(PAGES) >= len(CHAPTERS) + 2


@pytest.mark.parametrize("page", PAGES or ["(no built book)"])
def test_page_works_offline(page, site, browser_context):
    found = check_page(browser_context, site + page)
    problems = list(found["problems"])
    name = Path(page).stem
    if page.startswith("notebooks/") and (ROOT / "notebooks" / f"{name}.ipynb").exists():
        expected = colab_url(f"notebooks/{name}.ipynb")
        if expected not in found["links"]:
            colab = [h for h in found["links"] if "colab.research.google.com" in h]
            problems.append(f"no Colab link to {expected} (Colab links on the page: {colab})")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
