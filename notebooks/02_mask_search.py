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
# # 02 · Knowledge-preserving mask search (KPMS)
#
# K-prune decides one sublayer at a time, bottom-up (spec §(2)). At iteration s it scores every undecided unit,
# walks up the sorted scores to the first threshold τ at which the units above τ fit the remaining FLOPs budget,
# keeps the **target sublayer's** units above τ, and pays for them: `budget −= kept · F_unit`.
# The units above it are re-scored at the next iteration, on the already pruned and tuned model.
#
# The contrast is a **one-shot global mask**: the scores of iteration 0 only, one global threshold, no iteration
# (and hence no re-measurement after pruning).

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
tuning = True  # KPWT on
schedule = "cached"  # cached | naive

# %%
from kprune_lib import PruneConfig
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook
from kprune_lib.method.baselines import one_shot_global_masks

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, tuning=tuning, schedule=schedule)

# %% [markdown]
# ## Model and sample

# %%
setup = workbook.prepare(model, task, config, data_dir=data_dir, device=device)
dense = setup.copy_model()  # kept unpruned, to evaluate masks without tuning
workbook.sample_table(setup)

# %% [markdown]
# ## K-prune, step by step

# %%
result = workbook.run(setup, record_knowledge=True)
search = workbook.sublayer_frame(result, constraint)
search[["sublayer", "layer", "kind", "units", "kept", "tau", "budget_before", "spent", "budget_left"]]

# %% [markdown]
# ## Threshold and budget per sublayer
# Left: τ of each step (blue MHA, green FFN). Right: FLOPs paid for the kept units of each sublayer and the budget
# left afterwards, as fractions of the dense model's FLOPs; the budget reaches ≈ 0 at the top.

# %%
fig = plots.search_trace(search, result.flops_dense)

# %% [markdown]
# ## Surviving heads and neurons

# %%
fig = plots.kept_units(result.head_mask, result.neuron_mask, title="K-prune (KPMS)")

# %% [markdown]
# ## One-shot global mask
# Iteration-0 scores of all units (K_pred ≈ 0 there, see notebook 01: effectively K_rep only), one threshold.
# Both mask sets are evaluated on the dense weights without tuning, and K-prune also with its tuned weights.

# %%
one_head, one_neuron, _ = one_shot_global_masks(result, setup.arch, setup.seq_len, constraint)
masks = {"K-prune (KPMS)": (result.head_mask, result.neuron_mask), "one-shot global": (one_head, one_neuron)}
fig = plots.compare_kept(masks)

# %%
workbook.mask_comparison(setup, dense, masks, tuned={"K-prune (KPMS)": setup.model})
