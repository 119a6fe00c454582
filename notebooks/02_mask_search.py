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
# K-prune decides one sublayer at a time, bottom-up (spec §(2), paper §4.2; the loop's step 2 in
# `kprune_lib/method/loop.py`). At iteration $s$ every undecided unit $u$ — the heads and neurons of the sublayers
# $t \ge s$ — has an importance score $S_u$ (notebook 01) and a cost $F_u$ ($F_\text{head}$ or $F_\text{neuron}$).
#
# **The budget** — `kprune_lib.costs.flops.model_flops`. The search starts with what the pruned model may spend,
#
# $$B_0 = (1 - c)\,F_\text{model},\qquad F_\text{model} = \sum_\text{layers}\big(H\,F_\text{head} +
# N\,F_\text{neuron}\big),$$
#
# $c$ the constraint (the fraction of FLOPs removed).
#
# **The threshold** — `kprune_lib.method.search.kpms_threshold`. Walk up the candidates' scores in ascending order
# and stop at the first score whose strictly higher-scored candidates fit the budget left:
#
# $$\tau_s = \min\Big\{\, S_u \;:\; \sum_{v:\ S_v > S_u} F_v < B_s \Big\}\qquad(\tau_s = +\infty\ \text{if none
# does}).$$
#
# Dividing by $F$ in the score makes this a knowledge-per-FLOP ranking: what is bought above $\tau$ is the most
# knowledge the budget can hold if the upper sublayers keep their current ranking.
#
# **The target's units and the new budget** — `kprune_lib.method.search.kpms_step`. Only the **target sublayer**
# $s$ is decided now: it keeps its units above the threshold, and pays for them,
#
# $$\mathcal{K}_s = \{\, i \in s : S_i > \tau_s \,\},\qquad B_{s+1} = B_s - |\mathcal{K}_s|\,F_s .$$
#
# The units above it are re-measured and re-scored at the next iteration, on the already pruned and tuned model.
# The contrast is a **one-shot global mask**: the scores of iteration 0 only, one global threshold, no iteration
# (and hence no re-measurement after pruning).

# %% tags=["parameters"]
model = "../../shared/models/minilm-l6-mrpc"  # fine-tuned checkpoint (folder or hub id)
fallback_model = "M-FAC/bert-mini-finetuned-mrpc"  # hub id used when `model` is no local folder (None: none)
task = "mrpc"  # GLUE task
data_dir = "../../shared/data/glue"  # GLUE root (None: the hub; the hub too when it is missing and a fallback is used)
constraint = 0.5  # fraction of FLOPs to remove
num_tokens = 20000  # sample size in tokens (the library's default is 100 000)
seed = 0  # sample seed
device = "auto"  # auto | cpu | cuda
lam_pred = 1.0  # weight of predictive knowledge
lam_rep = 0.00025  # weight of representational knowledge
mu = 64.0  # head score multiplier
temperature = 2.0  # softmax temperature T
tuning = True  # KPWT on
schedule = "cached"  # cached | naive
step = 1  # the iteration s whose search is recomputed below (0 … 2L−1)

# %%
import torch

from kprune_lib import PruneConfig
from kprune_lib.encoder.sublayer import Sublayer
from kprune_lib.method.baselines import one_shot_global_masks
from kprune_lib.method.search import kpms_step
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, tuning=tuning, schedule=schedule)

# %% [markdown]
# ## Model and sample

# %%
model, data_dir = workbook.resolve_inputs(model, data_dir, fallback_model)
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
# ## Iteration `step`, recomputed
# From what the loop recorded at iteration $s$ — the scores $S_u$ of every candidate (`record_knowledge=True`)
# and the budget $B_s$ the previous step left — `kpms_threshold` and `kpms_step` must give the loop's threshold, the
# target's kept units and the budget left, **exactly** (the same scores in, the same comparisons): `kpms_step`
# finds τ with `kpms_threshold` over all candidates (costs in float64), keeps the target's units above it and
# pays for them.

# %%
s = Sublayer(step)
scores = {t: k["score"] for t, k in result.knowledge[s].items()}  # S_u of the candidates, sublayers t ≥ s
costs = workbook.unit_flops(setup.arch, setup.seq_len)  # F_u: F_head or F_neuron
budget = workbook.budget_before(result, s, constraint)  # B_s
keep, tau, budget_left = kpms_step(scores, costs, s, budget)  # τ by kpms_threshold over all candidates
loop_keep = workbook.kept_units(result, s)
assert tau == result.sublayers[s]["tau"], f"iteration {int(s)}: τ = {tau!r}, the loop's {result.sublayers[s]['tau']!r}"
assert torch.equal(keep.cpu(), loop_keep), f"iteration {int(s)}: kept units differ from the loop's mask"
assert budget_left == result.sublayers[s]["budget_left"], (budget_left, result.sublayers[s]["budget_left"])
print(f"iteration {int(s)} ({s.kind} of layer {s.layer}): B_s = {budget:.6g} FLOPs, τ = {tau:.6g}; keeps "
      f"{int(keep.sum())} of {keep.numel()} {s.unit}s, B_s+1 = {budget_left:.6g}: recomputed threshold, mask and "
      "budget equal the loop's record")

# %% [markdown]
# The walk itself, for reading (`workbook.threshold_walk`): the candidates in ascending score order with the cost
# of everything scoring above each one. τ is the first score at which that cost drops below $B_s$ (dashed).

# %%
walk = workbook.threshold_walk(scores, costs, budget)
first_fit = int(walk.fits.to_numpy().argmax())
ax = walk.plot(y="cost_above", legend=False, xlabel="candidate units, ascending score",
               ylabel="FLOPs of the candidates scoring higher", title=f"KPMS walk at iteration {int(s)}")
ax.axhline(budget, ls="--", color="k")
ax.axvline(first_fit, ls=":", color="tab:red")
walk.iloc[max(first_fit - 3, 0):first_fit + 3]

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
