# Two commands for newcomers: `make run` (the study) and `make test` (the suite). Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data
PARAMS ?= params/cpu.yaml
ARGS   ?=
JOBS   ?= 2
RUN    ?= results/cpu
TASK   ?= multiclass
APP_PORT ?= 8866
TEST_WORKERS ?= 2  # pytest-xdist processes (each test file stays in one, so module fixtures run once)
STAMP  := $(VENV)/.installed

.PHONY: setup test run app bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name cxr-study --display-name "Python (cxr-study)"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

run: setup
	$(PY) run_all.py --params $(PARAMS) --data $(DATA) --parallel $(JOBS) $(ARGS)

# The notebooks folder as local pages (Voila, 127.0.0.1 only): browser.ipynb is the Grad-CAM browser over
# RUN/TASK, 06_predict.ipynb scores an uploaded X-ray with that run's fold models; both are listed in the tree.
app: setup
	CXR_RUN_DIR=$(abspath $(RUN)) CXR_TASK=$(TASK) CXR_PARAMS=$(abspath $(PARAMS)) \
		$(PY) -m voila --Voila.ip=127.0.0.1 --port=$(APP_PORT) --no-browser notebooks/

bench: setup
	$(PY) bench/train_speed.py
	$(PY) bench/cam_speed.py

clean-venv:
	rm -rf $(VENV)
