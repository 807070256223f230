# finetune-course: every target builds .venv from nothing when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the stamp names a hash of the install inputs: tools that rewrite pyproject.toml unchanged (nbdev-export) do not force a reinstall
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | md5sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install demo test test-fast test-seeds check-sync lint metrics lab bench docs outputs clean chromium

help:
	@echo "make demo   - fine-tune the default backbone on the embedded digits data, print accuracy and report path"
	@echo "make test   - install if needed, check notebooks and library are in sync, run every test"
	@echo "make test-seeds - rerun the lessons that assert comparisons with base seeds 1 and 2 (FTC_SEED; not in CI, about an hour)"
	@echo "make lab    - open the notebooks (nbs/lessons: the course, nbs/api: the library) in JupyterLab"
	@echo "make lint   - ruff check --select F,E9 over the library, tests, tools and benchmarks"
	@echo "make metrics - print the lesson and library shape tables; fail if the module graph is broken"
	@echo "make bench  - run the benchmarks, results in benchmarks/results/"
	@echo "make outputs - run the home page and every lesson (quick profile, CPU) and save their outputs in the notebooks (ONLY=08_overfitting for one)"
	@echo "make docs   - build HTML pages of the lessons and the library reference offline (no Quarto needed) into _site/"

$(STAMP):
	@echo "==> creating $(VENV) and installing finetune-course[dev] with the pins in constraints.txt"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@$(BIN)/python -c "import torch, torchvision, fastai, timm; print('==> installed torch', torch.__version__, 'torchvision', torchvision.__version__, 'fastai', fastai.__version__, 'timm', timm.__version__)"
	@rm -f $(VENV)/.installed*; touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@echo "==> finetune-course fit (embedded digits data, default backbone) -> runs/demo (replacing the previous demo run)"
	$(BIN)/finetune-course fit --out runs/demo --overwrite

check-sync: $(STAMP)
	@echo "==> checking that nbdev-export and nbdev-clean change nothing"
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  before=$$( (git status --porcelain -- finetune_course nbs; git diff -- finetune_course nbs) | md5sum ); \
	  $(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	  after=$$( (git status --porcelain -- finetune_course nbs; git diff -- finetune_course nbs) | md5sum ); \
	  if [ "$$before" != "$$after" ]; then echo "FAIL: nbdev-export/nbdev-clean changed files: export and clean the notebooks, then commit"; git status --short -- finetune_course nbs; exit 1; fi; \
	  echo "==> library and notebooks are in sync"; \
	else echo "==> not a git checkout: sync check skipped"; fi

lint: $(STAMP)
	@echo "==> ruff check --select F,E9 (pyflakes-level) over the library, tests, tools and benchmarks"
	$(BIN)/ruff check --select F,E9 finetune_course tests tools benchmarks

metrics: $(STAMP)
	@echo "==> lesson shape (a report): exported share and median code cell per lesson"
	@$(BIN)/python tools/lesson_metrics.py
	@echo "==> library shape (a report) and module graph (a gate: one notebook per module, no import of a later module)"
	@$(BIN)/python tools/function_metrics.py

# tests/test_browser.py drives the system Chromium (playwright's own browser download needs the network)
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then echo "==> installing Chromium from the OS packages for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "==> installing Chromium failed: the browser tests (tests/test_browser.py) will be skipped"; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then echo "==> installing Chromium from the OS packages for the browser tests"; \
	  { sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "==> installing Chromium failed: the browser tests (tests/test_browser.py) will be skipped"; \
	else echo "==> /usr/bin/chromium missing and no root to install it: the browser tests (tests/test_browser.py) will be skipped"; fi

test: $(STAMP) check-sync lint metrics chromium
	@echo "==> pytest: notebooks (quick profile) + library + CLI + bad inputs"
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -rfE --durations=15 tests

# lessons whose asserts compare fits: they must hold for any base seed, not only the default 42
SEED_LESSONS := 01_ or 03_ or 04_ or 05_ or 06_ or 07_ or 08_ or 09_ or 10_
test-seeds: $(STAMP)
	@for seed in 1 2; do echo "==> lessons with FTC_SEED=$$seed"; \
	  FTC_SEED=$$seed $(BIN)/python -m pytest -n 2 -q -rfE tests/test_notebooks.py -k "lessons and ($(SEED_LESSONS))" || exit 1; done

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests --ignore=tests/test_notebooks.py

# JupyterLab refuses to run as root without --allow-root (containers often run as root)
lab: $(STAMP)
	@echo "==> JupyterLab: open the URL below; the course is in nbs/lessons, the library in nbs/api (it opens on nbs/index.ipynb)"
	cd nbs && $(CURDIR)/$(BIN)/jupyter lab index.ipynb $$(test "$$(id -u)" = 0 && echo --allow-root)

# the lessons are committed with their outputs; tests/test_outputs.py fails when a code cell changed after they were saved
outputs: $(STAMP)
	$(BIN)/python tools/save_outputs.py $(if $(ONLY),--only $(ONLY))

bench: $(STAMP)
	@echo "==> benchmarks -> benchmarks/results/"
	$(BIN)/python benchmarks/run_all.py

docs: $(STAMP)
	$(BIN)/python tools/build_docs.py

clean:
	rm -rf $(VENV) _proc _site runs .pytest_cache
