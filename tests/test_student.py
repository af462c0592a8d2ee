"""The student copies in notebooks/student/ are current: regenerated, they equal the committed files.

Generic over notebooks/NN_*.ipynb: a new chapter fails here until `make student` has written its copy.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STUDENT = ROOT / "notebooks" / "student"
FIX = "run `make student` (python scripts/make_student.py) and commit notebooks/student/"

_spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
make_student = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_student)


def test_every_chapter_is_covered():
    assert NOTEBOOKS
    assert [p.name for p in make_student.chapters()] == [p.name for p in NOTEBOOKS]


def test_student_copies_are_current(tmp_path):
    assert make_student.main(["--out", str(tmp_path)]) == 0
    fresh = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    committed = sorted(p.name for p in STUDENT.glob("*.ipynb"))
    assert fresh == [p.name for p in NOTEBOOKS]
    assert committed == fresh, f"notebooks/student/ holds {committed}, the chapters are {fresh}: {FIX}"
    stale = [n for n in fresh if (tmp_path / n).read_text() != (STUDENT / n).read_text()]
    assert not stale, f"student copies out of date: {stale}: {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercise_code_cells_are_marked_solutions(path):
    nb = json.loads(path.read_text())
    assert make_student.unmarked_exercise_cells(nb) == [], (
        "every code cell after '## Exercises' must start with '# Solution to exercise N'")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_stubs_every_solution(path):
    nb = json.loads(path.read_text())
    student = make_student.student_notebook(nb, path.name)
    solutions = [c for c in nb["cells"] if make_student.solution_number(c) is not None]
    stubs = [c for c in student["cells"] if "raise NotImplementedError(" in "".join(c["source"])]
    assert len(stubs) == len(solutions)
    for cell in student["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            assert make_student.solution_number(cell) is None, "a solution marker survived"
    for solution, stub in zip(solutions, stubs, strict=True):
        number = make_student.solution_number(solution)
        text = "".join(stub["source"])
        assert f'NotImplementedError("Exercise {number}: ' in text
        ast.parse(text)                                   # valid Python the student can run


def test_stubs_raise_and_keep_the_checks():
    source = (
        "# Solution to exercise 7: the answer is the argmin.\n"
        "def rule(dW):\n"
        '    """The label."""\n'
        "    return int(dW.argmin())   # the solution\n"
        "\n"
        "\n"
        "assert rule([3, 1]) == 1\n"
    )
    stub = make_student.stub_source(source, 7)
    assert "argmin" not in stub and "the answer" not in stub
    assert "def rule(dW):" in stub and '"""The label."""' in stub and "assert rule([3, 1]) == 1" in stub
    with pytest.raises(NotImplementedError, match="Exercise 7: write rule"):
        exec(compile(stub, "<stub>", "exec"), {})

    whole = make_student.stub_source("# Solution to exercise 2: B times.\nassert 2 * 3 == 6\n", 2)
    assert "2 * 3" not in whole
    with pytest.raises(NotImplementedError, match="Exercise 2: "):
        exec(compile(whole, "<stub>", "exec"), {})


def test_unmarked_solution_after_exercises_is_refused():
    nb = {
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["## Exercises\n", "\n", "1. Do it."]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": ["# Solution: no number\n", "x = 1"]},
        ],
    }
    assert make_student.unmarked_exercise_cells(nb) == [1]
    with pytest.raises(ValueError, match="Solution to exercise N"):
        make_student.student_notebook(nb, "99_x.ipynb")
