# Two commands for newcomers: `make run` (the study) and `make test` (the suite). Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data
PARAMS ?= params/cpu.yaml
ARGS   ?=
STAMP  := $(VENV)/.installed

.PHONY: setup test run bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name cxr-study --display-name "Python (cxr-study)"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest

run: setup
	$(PY) run_all.py --params $(PARAMS) --data $(DATA) $(ARGS)

bench: setup
	$(PY) bench/train_speed.py
	$(PY) bench/cam_speed.py

clean-venv:
	rm -rf $(VENV)
