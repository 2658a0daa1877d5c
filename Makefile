# The two README commands: `make demo` (main job on the embedded default) and `make test`.
# Both create or reuse the virtual environment in .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.depthlab-installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow install bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m depthlab demo --out outputs/demo

# The browser tests (tests/test_report_browser.py, tests/test_web_browser.py) need Debian's chromium: installed
# here when missing (as root, or through sudo); without apt they are skipped with the reason, the rest still runs.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    ( $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium ) || \
	    echo "chromium could not be installed: the headless-browser tests will be skipped"; }
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf outputs .pytest_cache
