# `make demo` and `make test` do all set-up from a bare machine:
# virtual env, dependencies, model weights, then the job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= out/demo

.PHONY: demo test models clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

models: $(STAMP)
	$(VENV)/bin/shelfready models fetch

demo: models
	$(VENV)/bin/shelfready demo sample_images $(DEMO_OUT)

test: models
	$(PY) -m pytest

clean-demo:
	rm -rf $(DEMO_OUT)
