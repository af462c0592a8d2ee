# Two commands: `make book` builds the whole book (every notebook executed); `make test` runs the whole suite.
# Both create .venv when it is missing and install requirements.txt and leaklib into it. `make book` vendors the
# book's JavaScript (MathJax, RequireJS, the ipywidgets HTML manager) from npm into _vendor/offline/ first, so the
# built HTML works offline.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The book build and the tests never touch the network: datasets come from what packages ship.
export LEAKLIB_OFFLINE ?= 1

.PHONY: install lint unit notebooks student vendor test book serve clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check leaklib tests scripts

unit: install
	$(BIN)/python -m pytest tests

# Every notebook, top to bottom, in quick mode (smaller trial counts; the asserts stay the same).
# notebooks/student/ holds the generated student copies, whose exercise stubs raise NotImplementedError.
notebooks: install
	LEAKLIB_QUICK=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:randomly notebooks \
		--ignore=notebooks/student

# The student copies of the chapters (solutions replaced by stubs); tests/test_student.py checks they are current.
student:
	$(PYTHON) scripts/make_student.py

# MathJax, RequireJS and the ipywidgets HTML manager into _vendor/offline/ (npm registry; a no-op when current).
vendor:
	$(PYTHON) scripts/vendor_offline.py

test: lint unit notebooks

book: install vendor
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo
	@echo "The book is in _build/html/index.html"
	@echo "Serve it with:  $(BIN)/python -m http.server --directory _build/html 8000   (then open http://localhost:8000)"

serve: book
	$(BIN)/python -m http.server --directory _build/html 8000

clean:
	rm -rf _build
