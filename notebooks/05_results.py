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
# Reads the sweep's `results.csv` (one row per finished point, written by `kprune sweep`) and draws the
# paper-style comparison: the task metric against the fraction of FLOPs removed, per task and method, with
# the dense model and the 97 %-of-dense line; then the speedup of the most compressed model that stays within
# 3 points of dense. Figures are saved as PNG under `figures_dir`.

# %% tags=["parameters"]
results_csv = "../results/results.csv"  # written by `kprune sweep GRID.yaml`
figures_dir = "../results/figures"  # PNGs go here
ratio_of_dense = 0.97  # the horizontal reference line, as a fraction of the dense metric
within_points = 0.03  # speedup table: best model within this many (metric ×1) points of dense
dpi = 120  # PNG resolution

# %%
from pathlib import Path

from kprune_lib import plots, workbook

results = workbook.load_results(results_csv)
mean = workbook.mean_over_seeds(results)
figures = Path(figures_dir)
figures.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The sweep
# Points per task and method (each row of `results.csv` is one executed notebook 04).

# %%
results.pivot_table(index=["task", "method"], columns="constraint", values="pruned", aggfunc="mean").round(4)

# %% [markdown]
# ## Metric vs FLOPs removed
# Solid black: the dense model; dashed: 97 % of it. Error bars: standard deviation over seeds (when several).

# %%
fig = plots.metric_vs_flops(mean, ratio=ratio_of_dense)
fig.savefig(figures / "metric_vs_flops.png", dpi=dpi)

# %% [markdown]
# ## Speedup within 3 points of dense
# For each task and method, the model with the most FLOPs removed whose metric is at least dense − 3 points:
# its FLOPs speedup (1 / (1 − removed)) and its measured dev-set latency speedup (batch 32).

# %%
workbook.speedup_table(results, within=within_points).round(3)

# %% [markdown]
# ## Pruning cost
# Wall time of the pruning step alone (sample forward/backward passes, search, tuning), per task and method.

# %%
times = workbook.pruning_time_table(results)
fig = plots.pruning_time(times)
fig.savefig(figures / "pruning_time.png", dpi=dpi)
times.round(1)
