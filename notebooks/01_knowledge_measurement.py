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
# # 01 · Knowledge measurement
#
# K-prune scores every attention head and FFN neuron by the knowledge it carries (spec §(1)):
#
# - **predictive** knowledge `K_pred(i) = Σ ½ (∂loss/∂m_i)²` — how much the output distribution moves when unit *i*
#   is masked, the loss being `T²·KL(teacher ‖ student)` (MSE for regression);
# - **representational** knowledge `K_rep(i) = Σ_tokens a_i² · mean_j W_{j,i}²` — how much the unit writes into the
#   residual stream;
# - score `S = (μ for heads) · (λ_rep K_rep + λ_pred K_pred) / F_unit`.
#
# **Why iteration 0 is special.** At the unpruned model the student *is* the teacher: the KL is at its minimum and
# its gradient is (numerically) zero, so `K_pred ≈ 0` for every unit and the first sublayer is ranked by `K_rep`
# alone. Predictive knowledge appears once something below has been pruned. This notebook therefore records
# the knowledge **at every iteration s** (`record_knowledge=True`) and shows, for each sublayer, the values
# measured at the iteration that pruned it — the numbers KPMS actually decided with.

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
lam_rep_grid = [0.0, 2.5e-05, 0.00025, 0.0025, 0.025]  # λ_rep values to re-rank with
temperature_grid = [1.0, 2.0, 4.0, 8.0]  # T values to re-measure with

# %%
from kprune_lib import PruneConfig
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, tuning=tuning, schedule=schedule)

# %% [markdown]
# ## Model and sample

# %%
setup = workbook.prepare(model, task, config, data_dir=data_dir, device=device)
teacher_logits = workbook.model_outputs(setup.model, setup.batches)  # the dense model, before pruning
workbook.sample_table(setup)

# %% [markdown]
# ## Run K-prune, recording the knowledge of every undecided unit at every iteration

# %%
result = workbook.run(setup, record_knowledge=True)
knowledge = workbook.knowledge_frame(result)
at_target = workbook.knowledge_at_target(knowledge)
print(f"{1 - result.flops_pruned / result.flops_dense:.1%} of FLOPs removed; {len(knowledge)} measurements")

# %% [markdown]
# ## Predictive knowledge is ~0 at iteration 0
# Total K_pred and K_rep over the undecided units at each iteration. K_pred jumps by many orders of magnitude
# after the first sublayer is pruned.

# %%
signal = workbook.predictive_signal_by_iteration(knowledge)
fig = plots.predictive_signal(signal)
signal

# %% [markdown]
# ## Heads: layer × head
# Each layer's heads as measured at the iteration that pruned that layer's MHA (log10; layer 0 is iteration 0,
# where K_pred is numerically zero).

# %%
fig = plots.knowledge_heatmaps(at_target)

# %% [markdown]
# ## Distributions per layer
# Heads (top) and neurons (bottom); K_rep spans a few orders of magnitude, K_pred many more.

# %%
fig = plots.knowledge_distributions(at_target)

# %% [markdown]
# ## How λ_rep changes the ranking
# The recorded K_pred and K_rep of each iteration are re-combined with other λ_rep (same model state, same
# budget) and that iteration's KPMS step is redone: Spearman correlation of the target sublayer's scores with
# the run's own, and the fraction of its keep/prune decisions that flip. λ_rep = 0 at iteration 0 leaves all
# scores ≈ 0 (ties), which is why the method needs representational knowledge.

# %%
lam_sens = workbook.lambda_rep_sensitivity(result, setup.arch, setup.seq_len, config, lam_rep_grid)
fig = plots.lambda_rep_sensitivity(lam_sens, default=lam_rep)
lam_sens.pivot_table(index="iteration", columns="lam_rep", values="flipped").round(3)

# %% [markdown]
# ## How the temperature T changes the ranking
# T only enters K_pred. At one fixed state — the pruned, tuned model above — K_pred and K_rep of the surviving
# units are re-measured against the dense teacher at each T; Spearman correlation of K_pred and of the score with
# those at the default T.

# %%
t_sens = workbook.temperature_sensitivity(setup.model, setup.batches, teacher_logits, setup.task.problem, result,
                                          config, temperature_grid, setup.seq_len)
fig = plots.temperature_sensitivity(t_sens)
t_sens.round(4)
