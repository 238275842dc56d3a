# BiFusion: two commands do all set-up.
#   make demo   -- create/refresh .venv, install, run the demo on the embedded synthetic recording
#   make test   -- create/refresh .venv, install, run the test suite
# Optional:
#   make minkowski -- build (once, cached in ~/.cache/bifusion/wheels) and install MinkowskiEngine 0.5.4 (CPU)
#   make bench     -- run the benchmarks (JSON under bench_results/)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.bifusion-installed
WHEELDIR ?= $(HOME)/.cache/bifusion/wheels
ME_VERSION := 0.5.4
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: venv demo test minkowski bench clean help

help:
	@echo "make demo | make test | make minkowski | make bench | make clean"

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade -qq pip wheel
	$(PIP) install -qq -r requirements.txt
	$(PIP) install -qq --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m bifusion_ros.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest test $(PYTEST_ARGS)

# MinkowskiEngine's setup.py uninstalls an installed copy whenever it runs, so it is run only when no
# wheel is cached; installing the cached wheel is cheap and idempotent.
minkowski: $(STAMP)
	@if ! ls $(WHEELDIR)/[Mm]inkowski[Ee]ngine-$(ME_VERSION)-*.whl >/dev/null 2>&1; then \
	  if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libopenblas-dev; \
	  fi; \
	  mkdir -p $(WHEELDIR); \
	  $(PIP) install -qq ninja; \
	  SETUPTOOLS_USE_DISTUTILS=stdlib MAX_JOBS=2 $(PIP) wheel --no-build-isolation --no-deps \
	    MinkowskiEngine==$(ME_VERSION) -w $(WHEELDIR); \
	fi
	@if ! $(PY) -c "import bifusion_core.sparse.minkowski_backend as m; m.import_minkowski()" >/dev/null 2>&1; then \
	  $(PIP) install -qq --no-deps --force-reinstall $(WHEELDIR)/[Mm]inkowski[Ee]ngine-$(ME_VERSION)-*.whl; \
	fi
	$(PY) -c "import bifusion_core.sparse.minkowski_backend as m; print('MinkowskiEngine', m.import_minkowski().__version__)"

bench: $(STAMP)
	$(PY) -m bifusion_core.bench all --json bench_results/bench.json

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
