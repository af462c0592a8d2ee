"""Drop duplicate inline scripts from every page: each one is declared once, so no page starts with a JS error.

sphinx-thebe (which Jupyter Book 1 always loads) adds its inline configuration, ``const THEBE_JS_URL = ...``,
after the HTML builder has started; Sphinx 7 then lists it twice (once with filename ``None``, once ``""``), and
the second ``const`` declaration is an uncaught SyntaxError in the browser. sphinx-togglebutton's inline script is
doubled the same way. tests/browser/ fails a page on any such console error.
"""

from __future__ import annotations


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    # after every extension that adds page scripts (myst-nb adds the widget scripts at the default priority)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
