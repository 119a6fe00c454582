# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Results
#
# Reads one results table — a sweep's `results.csv` (one row per finished point, written by `kprune sweep`) or the
# accuracy protocol's `benchmarks/results/accuracy.csv` (`benchmarks/accuracy.py`) — and nothing else but the point
# folders its rows name (and `points_dir`, `latency_results_dir` when given). It draws the paper-style comparison of
# the methods over seeds: the task metric against the FLOPs removed (mean ± sd over seeds), the paired per-seed
# differences of two methods, the kept heads and neurons per layer, the speedup of the most compressed model within
# 3 points of dense (absolute: metric ×100 ≥ dense ×100 − 3), and the pruning time. Metrics are shown ×100
# everywhere. Figures are saved as PNG under `figures_dir`.

# %% tags=["parameters"]
results_csv = "../results/results.csv"  # `kprune sweep GRID.yaml`'s results.csv, or benchmarks/results/accuracy.csv
figures_dir = "../results/figures"  # PNGs go here
grid_file = None  # the sweep's grid YAML (its copy beside results.csv), printed at the top; None: not shown
points_dir = None  # point folders <task>/<method>/c<constraint>/seed<seed>/ for rows without a run_dir (the accuracy
#   protocol's runs/accuracy); None: only the rows' run_dir
compare = ["kprune-plus", "kprune"]  # paired differences A − B on the same seeds
high_constraint = 0.6  # the paired table's summary row: mean over (task, constraint) cells with constraint ≥ this
heatmap_constraint = None  # kept units per layer at this constraint; None: each task's largest
latency_results_dir = None  # folder of `make latency-budget`'s <date>-latency-budget.json; None: a sweep has none
dpi = 120  # PNG resolution

# %%
from pathlib import Path

from kprune_lib.workbook import plots
from kprune_lib.workbook import results as views

results = views.load_results(results_csv)
mean = views.mean_over_seeds(results)
figures = Path(figures_dir)
figures.mkdir(parents=True, exist_ok=True)
print(views.report_header(results, results_csv, grid_file))

# %% [markdown]
# ## The points
# Pruned metric (×100) per task, method and constraint (% of FLOPs removed): mean ± sample sd over seeds, and the
# number of seeds n.

# %%
views.seed_table(results)

# %% [markdown]
# ## Metric vs FLOPs removed
# Each curve: the mean over seeds at each constraint measured (the x ticks), error bars ± one sample standard deviation
# where n > 1 (none for one seed); n = seeds, in the legend. Solid black: the dense model; dashed: dense − 3 points
# (absolute, the threshold of the speedup table). A hollow curve is identical to the method its legend entry names.

# %%
fig = plots.metric_vs_flops(mean)
fig.savefig(figures / "metric_vs_flops.png", dpi=dpi)

# %% [markdown]
# ## Paired differences
# For `compare = [A, B]`: per task and constraint, the mean over seeds of pruned(A) − pruned(B) on the same seed
# (seeds that only one method finished are dropped), its standard error sd/√n and n pairs, in points; the last row
# is the mean over the (task, constraint) cells with constraint ≥ `high_constraint` (standard error over cells).

# %%
views.paired_view(results, compare, min_constraint=high_constraint)

# %% [markdown]
# ## Kept heads and neurons per layer
# At one constraint per task (`heatmap_constraint`, default the largest): rows are methods (n seeds), columns
# layers, each cell the mean over seeds of the % of the layer's heads (left) or FFN neurons (right) kept.
# The counts come from each point's `summary.json` (its `run_dir`, else under `points_dir`).

# %%
kept = views.kept_fractions(results, points_dir=points_dir, constraint=heatmap_constraint)
plots.save(plots.kept_heatmap(kept), figures / "kept_per_layer.png", dpi=dpi)

# %% [markdown]
# ## Speedup within 3 points of dense
# For each task and method, the model with the most FLOPs removed whose mean metric is at least dense − 3 points
# (absolute, `config.ACCURACY_DROP_POINTS`): its FLOPs speedup (1 / (1 − removed)) and, for sweep points, its
# measured dev-set latency speedup (batch 32). Methods with no such model are named below the table.

# %%
views.speedup_table(results)

# %%
views.none_within(results)

# %% [markdown]
# ## Pruning cost
# Wall time of the pruning step alone (sample forward/backward passes, search, tuning), per task and method: mean ±
# sd over the n points (constraints × seeds).

# %%
fig = plots.pruning_time(views.pruning_times(results))
fig.savefig(figures / "pruning_time.png", dpi=dpi)
views.pruning_time_table(results)

# %% [markdown]
# ## Latency budgets met?
# Points pruned to a latency budget: the pruned model measured against its budget. A miss beyond the tolerance
# (`config.LATENCY_STALE_TOLERANCE`) is flagged "over" or "under" (e.g. a latency table timed in another machine state).

# %%
views.latency_budget_misses(results)

# %% [markdown]
# ## Accuracy at equal measured latency
# Only with `latency_results_dir` (a sweep's report has none): the newest record of `make latency-budget`
# (benchmarks/latency_budget.py) there: models pruned to a latency budget (60 / 45 / 30 % of the measured dense
# latency) against FLOPs-constrained K-prune models of the same measured latency, all timed in the same final
# interleaved rounds; one line per seed. The table: means over seeds.

# %%
latency = views.latency_budget_record(latency_results_dir)
plots.save(views.latency_budget_figure(latency), figures / "accuracy_vs_latency.png", dpi=dpi)

# %%
views.latency_budget_means(latency)
