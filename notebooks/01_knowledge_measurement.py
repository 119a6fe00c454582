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
# K-prune scores every attention head and FFN neuron by the knowledge it carries (spec §(1), paper §4.1), then
# prunes bottom-up, one sublayer $s = 0 \dots 2L-1$ at a time (even $s$: attention of layer $s/2$, odd $s$: its FFN;
# the loop is `kprune_lib/method/loop.py`, which reads like the paper's Algorithm 1). At iteration $s$ the current,
# partially pruned model is the **student**; the dense model is the **teacher**.
#
# **Soft predictions and the predictive loss** — `kprune_lib.method.measurement.predictive_loss`. With the
# teacher's logits $z_t$, the student's $z$ and temperature $T$, $p = \mathrm{softmax}(z/T)$:
#
# $$\ell_\text{pred} = T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\big\|\,\mathrm{softmax}(z/T)\big)
# \quad\text{(classification)},\qquad \ell_\text{pred} = (z - z_t)^2 \quad\text{(regression)},$$
#
# each the mean over a sample batch (the teacher's targets: `measurement.teacher_signal`).
#
# **Predictive knowledge** — `kprune_lib.method.measurement.predictive_knowledge`. A mask variable $m_i = 1$
# multiplies unit $i$'s slice of its output projection's input; over the $n$ sample examples,
#
# $$K_\text{pred}(i) = \frac{1}{n} \sum_{\text{batches}} \frac{1}{2}
# \left(\frac{\partial \ell_\text{pred}}{\partial m_i}\right)^{2}$$
#
# — how far the predictions move when unit $i$ goes (a second-order estimate).
#
# **Representational knowledge** — `kprune_lib.method.measurement.representational_knowledge`. With $a_i$ the
# unit's input to the output projection $W_s \in \mathbb{R}^{d \times w}$ and $n_\text{tok}$ the real tokens,
#
# $$K_\text{rep}(i) = \frac{1}{n_\text{tok}} \sum_{\text{tokens}} a_i^2 \cdot \frac{1}{d}\sum_{j=1}^{d} W_{j,i}^2$$
#
# — how much the unit writes into the residual stream. A head has $d_h$ such dims and takes the **mean** of both
# quantities over them (`measurement.per_unit`).
#
# **Importance score** — `kprune_lib.method.measurement.importance_scores`. Knowledge per FLOP, with the cost of a
# unit from the FLOPs formula (`kprune_lib.costs.flops.head_flops`, `neuron_flops`; $L_\text{seq}$ the task's mean
# length):
#
# $$S_\text{head} = \mu\,\frac{\lambda_\text{rep} K_\text{rep} + \lambda_\text{pred} K_\text{pred}}{F_\text{head}},
# \qquad S_\text{neuron} = \frac{\lambda_\text{rep} K_\text{rep} + \lambda_\text{pred} K_\text{pred}}{F_\text{neuron}},
# \qquad F_\text{head} = 8 L_\text{seq} d\, d_h + 4 L_\text{seq}^2 d_h,\quad F_\text{neuron} = 4 L_\text{seq} d$$
#
# (the paper's $Z$; defaults $\lambda_\text{pred} = 1$, $\lambda_\text{rep} = 2.5\cdot10^{-4}$, $\mu = 64$, $T = 2$).
# One pass over the sample measures every undecided sublayer $t \ge s$ at once: the loop's step 1,
# `kprune_lib.method.loop.measure_knowledge` (the workbook's `measure_knowledge` calls it).
#
# **Why iteration 0 is special.** At the unpruned model the student *is* the teacher: the KL is at its minimum and
# its gradient is (numerically) zero, so `K_pred ≈ 0` for every unit and the first sublayer is ranked by `K_rep`
# alone (the loop does not even back-propagate there, and records 0). Predictive knowledge appears once something
# below has been pruned. This notebook therefore records the knowledge **at every iteration s**
# (`record_knowledge=True`), recomputes one iteration from scratch against that record, and shows, for each
# sublayer, the values measured at the iteration that pruned it — the numbers KPMS actually decided with.

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
step = 1  # the iteration s recomputed below (0 … 2L−1; 1: the first FFN, the first with a predictive signal)
lam_rep_grid = [0.0, 2.5e-05, 0.00025, 0.0025, 0.025]  # λ_rep values to re-rank with (recorded knowledge: cheap)
temperature_grid = [1.0, 2.0, 8.0]  # T values to re-measure with (one measurement pass each)

# %%
from kprune_lib import PruneConfig
from kprune_lib.encoder.sublayer import Sublayer
from kprune_lib.method.measurement import importance_scores
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, tuning=tuning, schedule=schedule)

# %% [markdown]
# ## Model and sample

# %%
model, data_dir = workbook.resolve_inputs(model, data_dir, fallback_model)
setup = workbook.prepare(model, task, config, data_dir=data_dir, device=device)
dense = setup.copy_model()  # the teacher, kept unpruned
teacher_logits = workbook.model_outputs(setup.model, setup.batches)  # z_t of every sample batch
workbook.sample_table(setup)

# %% [markdown]
# ## Run K-prune, recording the knowledge of every undecided unit at every iteration

# %%
result = workbook.run(setup, record_knowledge=True)
knowledge = workbook.knowledge_frame(result)
at_target = workbook.knowledge_at_target(knowledge)
print(f"{1 - result.flops_pruned / result.flops_dense:.1%} of FLOPs removed; {len(knowledge)} measurements")

# %% [markdown]
# ## Iteration `step`, recomputed
# The student of iteration $s$ is the dense model with the output projections of the sublayers below $s$ as the loop
# left them (they never change again once decided; `workbook.student_at`). Measuring it against the teacher's
# logits with the library's measurement — the loop's step 1, run again outside the loop — must give what the loop
# recorded at iteration $s$ for every sublayer $t \ge s$, and the scores $S$ recomputed from that knowledge with
# `importance_scores` must be the recorded ones. Tolerance: $|a - b| \le 10^{-6}\max|b| + 10^{-5}|b|$ per unit
# (on the CPU the two are bit for bit equal).

# %%
s = Sublayer(step)
student = workbook.student_at(dense, setup.model, s)
recomputed = workbook.measure_knowledge(student, setup.batches, teacher_logits, setup.task.problem, temperature)
recomputed = {t: recomputed[t] for t in result.knowledge[s]}  # the undecided sublayers t ≥ s
recomputed_scores = workbook.importance(recomputed, setup.arch, setup.seq_len, config)
check = workbook.knowledge_check(result.knowledge[s],
                                 {t: {**k, "score": recomputed_scores[t]} for t, k in recomputed.items()})
assert check.close.all(), \
    f"iteration {int(s)}: recomputed knowledge differs from the loop's record:\n{check[~check.close]}"
print(f"iteration {int(s)} ({s.kind} of layer {s.layer}): recomputed K_pred, K_rep and S of the {len(recomputed)} "
      f"sublayers t ≥ {int(s)} equal the loop's record")
check

# %% [markdown]
# The target sublayer's units term by term: the two kinds of knowledge, their weights, the cost $F$ of one unit and
# the score, highest first. KPMS (notebook 02) keeps the target's units whose score is above its threshold.

# %%
F_unit = workbook.unit_flops(setup.arch, setup.seq_len)[s]
target_scores = importance_scores(recomputed[s]["k_rep"], recomputed[s]["k_pred"], lam_rep, lam_pred, F_unit,
                                  s.pick(mu, 1.0))
print(f"F_{s.unit} = {F_unit:.4g} FLOPs; S of the target recomputed: {target_scores.numel()} units, "
      f"max {float(target_scores.max()):.3e}")
workbook.score_terms(result.knowledge[s][s], s, setup.arch, setup.seq_len, config).head(10)

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
# scores ≈ 0 (ties), which is why the method needs representational knowledge. No new measurement: cheap.

# %%
lam_sens = workbook.lambda_rep_sensitivity(result, setup.arch, setup.seq_len, config, lam_rep_grid)
fig = plots.lambda_rep_sensitivity(lam_sens, default=lam_rep)
lam_sens.pivot_table(index="iteration", columns="lam_rep", values="flipped").round(3)

# %% [markdown]
# ## How the temperature T changes the ranking
# T only enters K_pred. At one fixed state — the pruned, tuned model above — K_pred and K_rep of the surviving
# units are re-measured against the dense teacher at each T (one pass over the sample per T); Spearman correlation
# of K_pred and of the score with those at the default T.

# %%
t_sens = workbook.temperature_sensitivity(setup.model, setup.batches, teacher_logits, setup.task.problem, result,
                                          config, temperature_grid, setup.seq_len)
fig = plots.temperature_sensitivity(t_sens)
t_sens.round(4)
