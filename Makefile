# Two commands: `make book` builds the whole book (every notebook executed); `make test` runs the whole suite.
# Both create .venv when it is missing and install requirements.txt and leaklib into it, and both vendor the
# book's JavaScript (MathJax, RequireJS, the ipywidgets HTML manager) from npm into _vendor/offline/, so the
# built HTML works offline. `make test` needs Debian's chromium for its browser test (.ci/run installs it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The book build and the tests never touch the network: datasets come from what packages ship.
export LEAKLIB_OFFLINE ?= 1

.PHONY: install lint unit notebooks student vendor book browser test serve clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check leaklib tests scripts

unit: install
	$(BIN)/python -m pytest tests --ignore=tests/browser

# Every notebook, top to bottom, in quick mode (smaller trial counts; the asserts stay the same).
# notebooks/student/ holds the generated student copies, whose exercise stubs raise NotImplementedError.
# The kernel's messages sometimes go missing (see `browser` below): nbval then fails a cell with "Timeout of 5
# seconds exceeded waiting for output" although the cell ran. So a failed run is repeated once, whole (a chapter's
# cells depend on each other); a notebook that really fails fails both times.
NBVAL := LEAKLIB_QUICK=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:randomly notebooks \
	--ignore=notebooks/student
notebooks: install
	$(NBVAL) || { echo "nbval failed; once more (a lost kernel message?)"; $(NBVAL); }

# The student copies of the chapters (solutions replaced by stubs); tests/test_student.py checks they are current.
student:
	$(PYTHON) scripts/make_student.py

# MathJax, RequireJS and the ipywidgets HTML manager into _vendor/offline/ (npm registry; a no-op when current).
vendor:
	$(PYTHON) scripts/vendor_offline.py

# The browser test: the book built in quick mode into its own folder (its own execution cache, so quick outputs
# never reach `make book`), then every page loaded in headless Chromium with the network blocked (tests/browser/).
# What it adds to `make test` on the 2-core build machine: the page checks ~50 s (13 pages, and the checker's own
# test); the quick build ~9 min from an empty execution cache on idle cores (measured with another job sharing the
# cores, at nice 10: chapter 3 alone took 33 min), ~15 s when no notebook changed.
# Each build first deletes its HTML (not the execution cache or doctrees): Sphinx copies static files only when it
# writes pages and never over its own earlier copy, so a changed _vendor/ or _ext/static/ would otherwise be ignored.
# The Jupyter kernel sometimes never answers an execute request (both idle; seen twice in fresh-clone builds, on
# chapter 1's widget cell). The quick build therefore gives a cell 10 minutes (_ext/execution_timeout.py) and is
# run once more if it fails: the execution cache keeps every notebook that finished, so the retry re-executes only
# the one that stalled. A notebook that really fails fails both times.
QUICK_BOOK := _build/quick
QUICK_BUILD := LEAKLIB_QUICK=1 LEAKLIB_CELL_TIMEOUT=600 $(BIN)/jupyter-book build . --warningiserror --nitpick \
	--keep-going --path-output $(QUICK_BOOK)
browser: install vendor
	rm -rf $(QUICK_BOOK)/_build/html
	$(QUICK_BUILD) || { echo "quick book build failed; once more (a stalled kernel?)"; \
		rm -rf $(QUICK_BOOK)/_build/html; $(QUICK_BUILD); }
	BOOK_HTML=$(QUICK_BOOK)/_build/html $(BIN)/python -m pytest tests/browser

test: lint unit notebooks browser

book: install vendor
	rm -rf _build/html
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo
	@echo "The book is in _build/html/index.html"
	@echo "Serve it with:  $(BIN)/python -m http.server --directory _build/html 8000   (then open http://localhost:8000)"

serve: book
	$(BIN)/python -m http.server --directory _build/html 8000

clean:
	rm -rf _build
