# Two commands for newcomers: `make run` (the study) and `make test` (the suite). Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data
PARAMS ?= params/cpu.yaml
ARGS   ?=
APP_PORT ?= 8866
APP    ?= notebooks/06_predict.ipynb
STAMP  := $(VENV)/.installed

.PHONY: setup test run bench app clean-venv

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

# Serves the prediction page with voila (APP=notebooks/ lists every notebook, e.g. beside the Grad-CAM browser).
app: setup
	$(PY) -m voila --no-browser --Voila.ip=127.0.0.1 --port=$(APP_PORT) $(APP)

clean-venv:
	rm -rf $(VENV)
