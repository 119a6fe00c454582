# kprune workbook — `make demo` and `make test` install into .venv first (idempotent `make setup`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first, on its own: a CPU wheel here; on a CUDA machine use e.g. TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0
DEMO_GRID ?= papermill_runs/grid_demo.yaml
GRID ?= papermill_runs/grid_minilm.yaml
# points at a time (sweep, demo); empty: the executor's default (one worker per GPU, 1 without any)
WORKERS ?=
WORKERS_FLAG := $(if $(WORKERS),--workers $(WORKERS))

.PHONY: setup test demo sweep report clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[workbook,dev]'
	touch $@

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -rs -p no:cacheprovider

# a small sweep on the default models (grid_demo.yaml: MRPC and STS-B × 3 constraints); DEMO_GRID=… to change.
# Offline (HF_HUB_OFFLINE=1) only where the local fixtures exist; without them the grid's hub fallbacks need the hub.
DEMO_FIXTURES := ../shared/models/minilm-l6-mrpc ../shared/models/minilm-l6-stsb ../shared/data/glue
DEMO_OFFLINE := $(if $(filter-out $(wildcard $(DEMO_FIXTURES)),$(DEMO_FIXTURES)),,HF_HUB_OFFLINE=1)
demo: setup
	$(DEMO_OFFLINE) $(VENV)/bin/kprune sweep $(DEMO_GRID) $(WORKERS_FLAG)
	@echo "results: runs/demo/results/results.csv  report: runs/demo/results/report.html  runs: runs/demo/"

# notebook 04 for every unfinished point of GRID (resumable), then results/results.csv and results/report.html
sweep: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/kprune sweep $(GRID) $(WORKERS_FLAG)

# re-aggregate the finished points of GRID and re-render the report, running no point; then the teaching notebooks
# 01-04 executed on the MRPC fixture (20 000 tokens) -> $(NOTEBOOKS_HTML)/<name>.html, inputs shown (about 9 minutes
# on 2 CPU cores). Without ../shared they fall back to the hub (M-FAC/bert-mini-finetuned-mrpc, nyu-mll/glue).
NOTEBOOKS_HTML ?= results/notebooks
NOTEBOOK_FIXTURES := ../shared/models/minilm-l6-mrpc ../shared/data/glue
NOTEBOOK_OFFLINE := $(if $(filter-out $(wildcard $(NOTEBOOK_FIXTURES)),$(NOTEBOOK_FIXTURES)),,HF_HUB_OFFLINE=1)
report: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/kprune sweep $(GRID) --report-only
	$(NOTEBOOK_OFFLINE) $(PY) -m kprune_lib.workbook.render --out $(NOTEBOOKS_HTML) --work-dir runs/notebooks

clean:
	rm -rf runs .pytest_cache

.PHONY: bench bench-quick table
# the README's measured table (MiniLM-L6 MRPC and STS-B × 40–80 %, 20 000 tokens); points are reused from runs/table
table: setup
	$(PY) benchmarks/glue_table.py

# pruning cost in dense passes, padding ratios, sorted / drawn / naive runs (identical masks), latency on sorted dev
# batches: every case (MiniLM mrpc, stsb, sst2 at 20k; mrpc-100k; BERT-base-, DistilBERT-shaped models);
# BENCH_FLAGS=--skip-slow-naive skips the naive run of the slow cases -> benchmarks/RESULTS.md, benchmarks/results/
BENCH_FLAGS ?=
bench: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench.py $(BENCH_FLAGS)

# the MiniLM cases mrpc, stsb, sst2 at 20 000 tokens, with latency
bench-quick: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench.py --quick $(BENCH_FLAGS)

.PHONY: bench-onnx
# ONNX export: MiniLM MRPC dense vs pruned (50 %, runs/onnx-bench, pruned if missing) vs int8 in onnxruntime, beside
# PyTorch: accuracy, parity, latency at batch 32 and 1 (2 threads) -> benchmarks/RESULTS.md, benchmarks/results/
bench-onnx: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/onnx_bench.py

.PHONY: accuracy accuracy-quick
# the accuracy protocol: mrpc,stsb,sst2 × 0.4,0.6,0.8 × seeds 0,1,2 × kprune,kprune-plus,kwon-fisher at 20 000
# tokens (resumable, runs/accuracy) -> benchmarks/ACCURACY.md, results/accuracy.csv, figures/accuracy.png
accuracy: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/accuracy.py

# a few-minute smoke of it: mrpc, 0.8, seeds 0,1, 5000 tokens -> benchmarks/ACCURACY-quick.md
accuracy-quick: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/accuracy.py --quick

.PHONY: latency-budget latency-budget-quick
# issue #14: MiniLM MRPC pruned to 60/45/30 % of its measured dense latency (CPU, 2 threads, batch 32 × 128 tokens,
# 20 000 sample tokens) and FLOPs-constrained K-prune at the same measured latency (resumable, runs/latency-budget)
# -> benchmarks/LATENCY.md, figures/latency_budget.png, results/*-latency-budget.json. Run on an idle machine.
latency-budget: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/latency_budget.py

# a few-minute smoke of it (batch 4 × 32 tokens, 1 000 sample tokens) -> runs/latency-budget-quick/
latency-budget-quick: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/latency_budget.py --quick
