"""The book's configuration loads its JavaScript from the vendored copies, and those match ipywidgets.

tests/browser/ checks the built pages themselves; this checks the configuration without a build or a network.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPHINX = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]

_spec = importlib.util.spec_from_file_location("vendor_offline", ROOT / "scripts" / "vendor_offline.py")
vendor_offline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vendor_offline)


def _vendored(path: str) -> str:
    """A path relative to _static/ that lies in _static/offline/ (from _vendor/offline/), the part after offline/."""
    assert not re.match(r"^[a-z]+:|^//", path), f"{path} is loaded from the network"
    assert path.startswith("offline/"), f"{path} is not one of the vendored files (_static/offline/)"
    return path.removeprefix("offline/")


def test_mathjax_is_vendored():
    assert _vendored(SPHINX["mathjax_path"]) in vendor_offline.ENTRY_POINTS


def test_widget_scripts_are_local_and_in_order():
    # RequireJS, then our shim (it configures RequireJS), then the HTML manager
    scripts = list(SPHINX["nb_ipywidgets_js"])
    assert scripts == ["offline/requirejs/require.js", "widgets-offline.js", "offline/html-manager/embed-amd.js"]
    assert _vendored(scripts[0]) in vendor_offline.ENTRY_POINTS
    assert _vendored(scripts[2]) in vendor_offline.ENTRY_POINTS
    assert (ROOT / "_ext" / "static" / scripts[1]).is_file()
    for attributes in SPHINX["nb_ipywidgets_js"].values():
        assert not any("http" in str(v) for v in (attributes or {}).values())


def test_html_manager_matches_ipywidgets():
    from ipywidgets._version import __html_manager_version__

    wanted_major = re.search(r"\d+", __html_manager_version__).group()
    version = vendor_offline.PACKAGES["@jupyter-widgets/html-manager"][0]
    assert version.split(".")[0] == wanted_major, (
        f"ipywidgets wants @jupyter-widgets/html-manager {__html_manager_version__}; "
        f"scripts/vendor_offline.py vendors {version}")


def test_vendored_files_are_copied_and_ignored_by_git():
    assert vendor_offline.OFFLINE.parent == ROOT / "_vendor"
    assert SPHINX["html_static_path"] == ["_vendor", "_ext/static"]
    assert "/_vendor/" in (ROOT / ".gitignore").read_text().splitlines()


def test_no_top_level_static_folder():
    # Jupyter Book 1 adds every .js and .css file under html_static_path to every page when _static/ exists:
    # all of the vendored MathJax (node-main.js included) would load on every page.
    assert not (ROOT / "_static").exists(), "put custom static files elsewhere (see _config.yml, html_static_path)"
