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
# # 03 · Knowledge-preserving weight tuning (KPWT)
#
# After each sublayer's mask is chosen, K-prune re-fits that sublayer's output projection by least squares
# (spec §(3)) so that, on the sample tokens, the pruned sublayer reproduces the teacher's pre-LayerNorm sum —
# including the distortion of its input caused by the pruning below. The error reported is
# `‖A W'ᵀ − (Y_s − X − b_s)‖² / ‖Y_s − X − b_s‖²` for the kept units' inputs A, before and after the solve.
# The same run without tuning shows how that error accumulates layer after layer.

# %% tags=["parameters"]
model = "../../shared/models/minilm-l6-mrpc"  # fine-tuned checkpoint
task = "mrpc"  # GLUE task
data_dir = "../../shared/data/glue"  # GLUE root (None: the hub)
constraint = 0.5  # fraction of FLOPs to remove
num_tokens = 100000  # sample size in tokens
seed = 0  # sample seed
device = "auto"  # auto | cpu | cuda
lam_pred = 1.0  # weight of predictive knowledge
lam_rep = 0.00025  # weight of representational knowledge
mu = 64.0  # head score multiplier
temperature = 2.0  # softmax temperature T
schedule = "cached"  # cached | naive

# %%
from dataclasses import replace

from kprune_lib import PruneConfig
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, schedule=schedule)

# %% [markdown]
# ## Model and sample

# %%
setup = workbook.prepare(model, task, config, data_dir=data_dir, device=device)
dense = setup.copy_model()
untuned = setup.copy_model()
workbook.sample_table(setup)

# %% [markdown]
# ## K-prune with and without KPWT (same sample, same budget)

# %%
with_tuning = workbook.run(setup, replace(config, tuning=True))
without_tuning = workbook.run(setup, replace(config, tuning=False), model=untuned)
errors = workbook.sublayer_frame(with_tuning, constraint)
errors_off = workbook.sublayer_frame(without_tuning, constraint)

# %% [markdown]
# ## Reconstruction error per sublayer

# %%
fig = plots.tuning_errors(errors, errors_off)
errors[["sublayer", "kind", "kept", "rel_error_before_tuning", "rel_error_after_tuning", "ridge"]].assign(
    rel_error_without_tuning=errors_off.rel_error_after_tuning)

# %% [markdown]
# ## Accuracy with vs without tuning

# %%
metrics = {"dense": workbook.evaluate(setup, dense), "K-prune": workbook.evaluate(setup),
           "K-prune, no tuning": workbook.evaluate(setup, untuned)}
fig = plots.metric_bars(metrics, setup.task.main_metric)
workbook.metrics_table(metrics)
