"""Generate the student copy of every chapter: exercise solutions become ``NotImplementedError`` stubs.

    python scripts/make_student.py                 # writes notebooks/student/NN_topic.ipynb for every chapter
    python scripts/make_student.py --out DIR       # somewhere else (tests/test_student.py compares the two)

A solution is a code cell that starts with ``# Solution to exercise N`` (the convention of every chapter; the
cells after a chapter's ``## Exercises`` heading are all solutions). In the student copy:

- a function the solution defines keeps its signature and docstring, and its body becomes
  ``raise NotImplementedError("Exercise N: write NAME")``; the checking code after the definitions stays, so running
  the cell tells the student when the function is right;
- a solution without functions is replaced whole by ``raise NotImplementedError("Exercise N: ...")``;
- the solution's own comment lines (the explanation) go, every output is cleared, and a note under the title says
  where the copy comes from.

Standard library only, so it runs with any Python 3.10+. Run ``make student`` after changing a chapter.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STUDENT = NOTEBOOKS / "student"
SOLUTION = re.compile(r"#\s*Solution to exercise (\d+)\b")
EXERCISES_HEADING = re.compile(r"^##\s+Exercises\s*$", re.M)
NOTE_ID = "student-version-note"


def chapters(folder: Path = NOTEBOOKS) -> list[Path]:
    """Every chapter notebook, ``NN_topic.ipynb``, directly in ``folder``."""
    return sorted(p for p in folder.glob("*.ipynb") if re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _lines(text: str) -> list[str]:
    """A cell source as nbformat stores it: lines keeping their newline, the last one without."""
    return text.splitlines(keepends=True)


def solution_number(cell: dict) -> int | None:
    """The exercise number of a solution cell, or None when ``cell`` is no solution."""
    if cell.get("cell_type") != "code":
        return None
    match = SOLUTION.match(_source(cell).lstrip())
    return int(match.group(1)) if match else None


def unmarked_exercise_cells(nb: dict) -> list[int]:
    """Indices of code cells after the ``## Exercises`` heading that are not marked as solutions.

    The heading opens the exercises; every code cell after it must be a marked solution, or the student copy
    would leak it.
    """
    cells = nb["cells"]
    start = next((i for i, c in enumerate(cells)
                  if c["cell_type"] == "markdown" and EXERCISES_HEADING.search(_source(c))), None)
    if start is None:
        return []
    return [i for i in range(start + 1, len(cells))
            if cells[i]["cell_type"] == "code" and solution_number(cells[i]) is None]


def stub_source(source: str, number: int) -> str:
    """The student's version of one solution cell (see the module docstring)."""
    body = source.lstrip()
    lines = body.splitlines()
    # drop the solution's leading comment block: the marker and its explanation
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    code = "\n".join(lines)
    header = f"# Exercise {number}: your solution here. Remove the `raise` when you have written it."
    whole = f'{header}\nraise NotImplementedError("Exercise {number}: your solution here")\n'
    try:
        tree = ast.parse(code)
    except SyntaxError:        # IPython magics and the like: stub the whole cell
        return whole.rstrip("\n")
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        return whole.rstrip("\n")
    out: list[str] = [header]
    cursor = 0                                   # index into lines of the next line to copy
    for fn in functions:
        first = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
        out += lines[cursor:first]
        body_nodes = fn.body
        doc = ast.get_docstring(fn, clean=False) is not None
        keep_until = body_nodes[0].end_lineno if doc else body_nodes[0].lineno - 1
        if body_nodes[0].lineno == fn.lineno:     # one-line def: no room for a stub, stub the whole cell
            return whole.rstrip("\n")
        out += lines[first:keep_until]
        indent = " " * body_nodes[0].col_offset
        out.append(f'{indent}raise NotImplementedError("Exercise {number}: write {fn.name}")')
        cursor = fn.end_lineno
    rest = lines[cursor:]
    while rest and not rest[0].strip():
        rest.pop(0)
    if rest:
        out += ["", ""] + rest
    return "\n".join(out)


def student_notebook(nb: dict, source_name: str) -> dict:
    """The student copy of one chapter: stubs for solutions, no outputs, a note under the title."""
    nb = copy.deepcopy(nb)
    unmarked = unmarked_exercise_cells(nb)
    if unmarked:
        raise ValueError(f"{source_name}: code cells {unmarked} follow '## Exercises' but do not start with "
                         "'# Solution to exercise N'; mark them so the student copy does not leak them")
    nb["metadata"].pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        number = solution_number(cell)
        if number is not None:
            cell["source"] = _lines(stub_source(_source(cell), number))
        cell["outputs"] = []
        cell["execution_count"] = None
    note = {
        "cell_type": "markdown",
        "id": NOTE_ID,
        "metadata": {},
        "source": _lines(
            f"**Student version.** The exercise solutions of `notebooks/{source_name}` are replaced by stubs that "
            "raise `NotImplementedError`: write your own, then run the cell.\n"
            "This copy is generated by `make student` (`scripts/make_student.py`); edit the chapter, not this file."
        ),
    }
    nb["cells"].insert(1, note)
    return nb


def dumps(nb: dict) -> str:
    """Serialise as Jupyter does (one-space indent, sorted keys, non-ASCII kept, final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def render(path: Path) -> str:
    """The text of the student copy of the chapter at ``path``."""
    return dumps(student_notebook(json.loads(path.read_text(encoding="utf-8")), path.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the chapters")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: NOTEBOOKS/student)")
    args = parser.parse_args(argv)
    out = args.out or args.notebooks / "student"
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    for path in chapters(args.notebooks):
        (out / path.name).write_text(render(path), encoding="utf-8")
        written.add(path.name)
    for stale in out.glob("*.ipynb"):
        if stale.name not in written:
            stale.unlink()
            print(f"removed {stale} (no such chapter)")
    print(f"wrote {len(written)} student notebooks to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
