"""The book's conventions: notebooks stored clean, Colab-ready, all in the table of contents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        if "root" in node:
            files.append(node["root"])
        for value in node.values():
            files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean(path):
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "widget state is saved in the metadata; strip it"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, "stored outputs; the book executes them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_name_title_and_objectives(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), "chapters are named NN_topic.ipynb"
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and "Learning objectives" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_setup_cell_installs_from_the_configured_repository(path):
    nb = json.loads(path.read_text())
    setup = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(setup["source"])
    url = CONFIG["repository"]["url"]
    branch = CONFIG["repository"].get("branch", "main")
    assert 'if "google.colab" in sys.modules:' in source
    assert f"git+{url}@{branch}" in source, f"the Colab install must use {url}@{branch} from _config.yml"
    assert "set_seed(" in source and "get_device(" in source
    assert "hide-input" in setup["metadata"].get("tags", [])
    assert nb["metadata"].get("accelerator") == "GPU", "ask Colab for a GPU runtime"


def test_every_notebook_is_in_the_toc_and_every_toc_file_exists():
    listed = _toc_files(TOC)
    for entry in listed:
        assert any((ROOT / f"{entry}{suffix}").exists() for suffix in ("", ".md", ".ipynb")), entry
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in listed, f"{path.name} is not in _toc.yml"


def test_book_config_builds_offline():
    assert CONFIG["execute"]["execute_notebooks"] in ("cache", "force")
    assert CONFIG["execute"]["allow_errors"] is False
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^jupyter-book>=1,<2$", requirements, re.M), "Jupyter Book 2 fails offline"
