# Two commands on a fresh machine: `make repro` (the demo pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: repro test install clean-venv pr-report

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -e .
	touch $@

install: $(BIN)/.installed

repro: install
	. $(BIN)/activate && dvc repro

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: install
	. $(BIN)/activate && ruff check . && python -m pytest -q tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

# Markdown params/metrics diff against BASE for a pull-request comment (after `make repro`).
BASE ?= main
pr-report: install
	. $(BIN)/activate && scripts/pr_report.sh $(BASE)

clean-venv:
	rm -rf $(VENV)
