# One-command set-up, tests and demo. See README.md.
#
#   make setup [DETECTRON2=wheel|git] [PANOPTICAPI=pypi|git]   create .venv and install everything
#   make test                                                  run the test suite (what CI runs)
#   make demo [DEMO_ARGS='KEY VALUE ...']                      train + evaluate on the built-in dataset

PYTHON ?= python3
VENV ?= .venv
DETECTRON2 ?= wheel
PANOPTICAPI ?= pypi
DEMO_ARGS ?=
ARCH := $(shell uname -m)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := -c requirements/constraints.txt
STAMP := $(VENV)/.setup-$(DETECTRON2)-$(PANOPTICAPI)
SETUP_INPUTS := setup.py Makefile $(wildcard requirements/*.txt)

.PHONY: setup test demo env clean

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@case "$(DETECTRON2)" in wheel|git) ;; *) echo "DETECTRON2 must be 'wheel' or 'git', not '$(DETECTRON2)'" >&2; exit 2;; esac
	@case "$(PANOPTICAPI)" in pypi|git) ;; *) echo "PANOPTICAPI must be 'pypi' or 'git', not '$(PANOPTICAPI)'" >&2; exit 2;; esac
	@test -f requirements/torch-$(ARCH).txt || { echo "no torch pin for machine '$(ARCH)' (requirements/torch-*.txt)" >&2; exit 2; }
	rm -f $(VENV)/.setup-*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/torch-$(ARCH).txt
	$(PIP) install -q $(CONSTRAINTS) -r requirements/detectron2-deps.txt
ifeq ($(DETECTRON2),wheel)
	$(PIP) uninstall -q -y detectron2 2>/dev/null || true
	$(PIP) install -q --no-deps --only-binary=:all: --python-version 3.10 --upgrade \
		--target "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
		--require-hashes -r requirements/detectron2-wheel.txt
else
	$(PIP) uninstall -q -y sal-detectron2 2>/dev/null || true
	$(PIP) install -q $(CONSTRAINTS) --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'
endif
ifeq ($(PANOPTICAPI),pypi)
	$(PIP) install -q --no-deps -r requirements/panopticapi.txt
else
	$(PIP) uninstall -q -y panopticapi-lite 2>/dev/null || true
	$(PIP) install -q --no-deps 'git+https://github.com/cocodataset/panopticapi.git'
endif
	$(PIP) install -q $(CONSTRAINTS) -e '.[test,export]'
	$(PY) -m detr_panoptic_d2.env
	touch $@

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) tools/run_demo.py $(DEMO_ARGS)

env: setup
	$(PY) -m detr_panoptic_d2.env

clean:
	rm -rf $(VENV) output .pytest_cache
