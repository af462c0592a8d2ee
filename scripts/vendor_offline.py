"""Vendor the book's JavaScript into _vendor/offline/, so the built HTML needs no network.

    python scripts/vendor_offline.py            # `make book` and `make test` run it; a no-op when up to date

What a built page loads from outside the build without this: MathJax 3 (Sphinx's default ``mathjax_path`` is a
CDN), and on pages with widgets RequireJS and the ipywidgets HTML manager (myst-nb's default ``nb_ipywidgets_js``).
This script fetches the exact versions below with ``npm pack`` (the npm registry is the only place it asks) and
unpacks them. _config.yml names _vendor/ in ``html_static_path`` (so Sphinx copies it to _build/html/_static/,
and the files land in _static/offline/) and points ``mathjax_path`` and ``nb_ipywidgets_js`` at the copies. Fonts
come with them (MathJax's woff2 fonts, the HTML manager's Font Awesome).

Not _static/ at the book's root: when that folder exists, Jupyter Book 1 adds every .js file under every
``html_static_path`` to every page, which would load all of MathJax's components (node-main.js included) at once.

The HTML manager's major version must match ipywidgets' ``__html_manager_version__`` (tests/test_offline.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "_vendor" / "offline"

# npm package -> (exact version, folder inside the package to keep, where it goes under _vendor/offline/)
PACKAGES = {
    "mathjax": ("3.2.2", "es5", "mathjax"),
    "requirejs": ("2.3.7", "", "requirejs"),
    "@jupyter-widgets/html-manager": ("1.0.15", "dist", "html-manager"),
}
# the files _config.yml names; each must exist after vendoring
ENTRY_POINTS = ["mathjax/tex-mml-chtml.js", "requirejs/require.js", "html-manager/embed-amd.js"]
MANIFEST = OFFLINE / "versions.json"


def wanted() -> dict[str, str]:
    return {name: version for name, (version, _, _) in PACKAGES.items()}


def up_to_date() -> bool:
    try:
        have = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False
    return have == wanted() and all((OFFLINE / p).is_file() for p in ENTRY_POINTS)


def _keep(member: tarfile.TarInfo, prefix: str) -> bool:
    if not (member.isfile() and member.name.startswith(prefix)):
        return False
    name = member.name
    return not name.endswith((".map", ".ts")) and "/.." not in name and not name.startswith("/")


def vendor() -> None:
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("vendor_offline: npm is not installed (Debian: apt-get install -y npm); it fetches MathJax, "
                 "RequireJS and the ipywidgets HTML manager from the npm registry")
    staging = OFFLINE.with_name("offline.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, inner, target) in PACKAGES.items():
            out = subprocess.run([npm, "pack", "--silent", f"{name}@{version}"], cwd=tmp, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            prefix = f"package/{inner}/" if inner else "package/"
            with tarfile.open(Path(tmp) / out) as tar:
                members = [m for m in tar.getmembers() if _keep(m, prefix)]
                if not members:
                    sys.exit(f"vendor_offline: {name}@{version} has no files under {prefix}")
                for member in members:
                    dest = staging / target / member.name[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            print(f"vendored {name}@{version} into _vendor/offline/{target}/ ({len(members)} files)")
    missing = [p for p in ENTRY_POINTS if not (staging / p).is_file()]
    if missing:
        sys.exit(f"vendor_offline: missing after unpacking: {missing}")
    (staging / "versions.json").write_text(json.dumps(wanted(), indent=1) + "\n")
    shutil.rmtree(OFFLINE, ignore_errors=True)
    staging.rename(OFFLINE)


def main() -> int:
    if up_to_date():
        return 0
    vendor()
    return 0


if __name__ == "__main__":
    sys.exit(main())
