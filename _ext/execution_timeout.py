"""A per-cell execution timeout from the environment: ``LEAKLIB_CELL_TIMEOUT=600`` overrides ``execute.timeout``.

The quick build of ``make browser`` sets it. Its cells take well under a minute on two idle cores, and the Jupyter
kernel sometimes never answers an execute request (seen in fresh-clone builds here: kernel and client both idle,
on chapter 1's widget cell). With the book's 30-minute timeout such a stall costs half of CI's time before the
Makefile's one retry; with 10 minutes it costs 10.
"""

from __future__ import annotations

import os


def _override(app, config) -> None:
    value = os.environ.get("LEAKLIB_CELL_TIMEOUT")
    if value:
        try:
            seconds = int(value)
        except ValueError:
            raise ValueError(f"LEAKLIB_CELL_TIMEOUT must be a whole number of seconds; got {value!r}") from None
        config.nb_execution_timeout = seconds


def setup(app):
    app.connect("config-inited", _override)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
