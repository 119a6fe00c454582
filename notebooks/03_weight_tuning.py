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
# (spec §(3), paper §4.3; the loop's step 3 in `kprune_lib/method/loop.py`) so that, on the sample tokens, the pruned
# sublayer reproduces the teacher's pre-LayerNorm sum — including the distortion of its input caused by the
# pruning below. The same run without tuning shows how the error accumulates layer after layer.
#
# **The least-squares problem** — accumulated by `kprune_lib.method.tuning.NormalEquations.add`. A sublayer computes
# $\mathrm{LayerNorm}(X + W_s a + b_s)$. Over the $n_\text{tok}$ real sample tokens, let $A \in
# \mathbb{R}^{n_\text{tok} \times k}$ be the **kept** units' inputs $a$ to the output projection in the current
# (student) model, $X$ the student's input to sublayer $s$, $Y_s$ the dense teacher's pre-LayerNorm sum and
# $R = Y_s - X - b_s$ what the projection should add. KPWT solves
#
# $$\min_{W'} \big\lVert A\,W'^{\top} - R \big\rVert_F^2,\qquad R = Y_s - X - b_s .$$
#
# Only sums over tokens are kept: the Gram matrix of the kept inputs, the right-hand side and $\lVert R\rVert^2$,
#
# $$G = A^{\top} A = \sum_\text{tokens} a\,a^{\top} \in \mathbb{R}^{k\times k},\qquad
# C = A^{\top} R = \sum_\text{tokens} a\,r^{\top} \in \mathbb{R}^{k\times d},\qquad \rho = \lVert R\rVert_F^2 .$$
#
# **The normal equations** — solved by `kprune_lib.method.tuning.NormalEquations.solve` (Cholesky in float64,
# `tuning.solve_normal_equations`):
#
# $$G\,W'^{\top} = C .$$
#
# If $G$ is singular, a ridge is added and recorded (never silently): $(G + \epsilon\,\bar g\, I)\,W'^{\top} = C$
# with $\bar g$ the mean of $\mathrm{diag}\,G$ and $\epsilon = 10^{-6}$ (config `ridge`), ×10 until the Cholesky
# factorisation succeeds. K-prune+ (`damping` $\delta_0 > 0$, notebook 04's `kprune-plus`) shrinks the fit toward the
# current weights $W_\text{old}$: $(G + \delta I)\,W'^{\top} = C + \delta\,W_\text{old}^{\top}$ with $\delta =
# \delta_0\,\bar g$; the paper's K-prune has $\delta_0 = 0$.
#
# **Writing the weights** — `kprune_lib.method.tuning.kpwt_step`: $W'$ goes into the kept columns, zeros into the
# pruned ones, the bias stays; a sublayer with no unit left drops its bias too and becomes $\mathrm{LayerNorm}(X)$.
# The error it reports, from the sums alone (`NormalEquations.error`):
#
# $$\lVert A W^{\top} - R\rVert_F^2 = \mathrm{tr}(W G W^{\top}) - 2\,\mathrm{tr}(W C) + \rho,$$
#
# shown relative to $\rho$, before (the old weights of the kept units) and after the solve.

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
schedule = "cached"  # cached | naive
step = 1  # the iteration s whose tuning is recomputed below (0 … 2L−1)

# %%
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from kprune_lib import PruneConfig
from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.sublayer import Sublayer
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, schedule=schedule)

# %% [markdown]
# ## Model and sample

# %%
model, data_dir = workbook.resolve_inputs(model, data_dir, fallback_model)
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
# ## Iteration `step`, recomputed
# The inputs of iteration $s$'s least squares are rebuilt without the loop: the student of iteration $s$ (the dense
# model with the output projections below $s$ as the loop left them, `workbook.student_at`) and the dense teacher
# are run forward from the embeddings, and $A$ (the loop's kept units of $s$), $X$, $Y_s$ and $b_s$ are summed into
# $G$, $C$, $\rho$ by `NormalEquations.add` (`workbook.tuning_equations`; the loop itself reuses inputs it held from
# its measurement pass). Solving $G W'^\top = C$ must give the weights the loop wrote into the kept columns:
# `allclose` with $|W' - W_\text{loop}| \le 10^{-6}\max|W_\text{loop}| + 10^{-5}|W_\text{loop}|$ (float32 sums in
# another order; the solve amplifies their rounding by at most the condition number of $G$, printed below), and
# the relative errors before and after must be the recorded ones.

# %%
s = Sublayer(step)
idx = workbook.kept_dims(setup.arch, s, workbook.kept_units(with_tuning, s))  # the kept input dims of W_s
student = workbook.student_at(dense, setup.model, s)
eqs = workbook.tuning_equations(student, dense, setup.batches, s, idx)  # G, C, ρ over the sample's real tokens
w_old = Arch(student).out_proj(s).weight[:, idx.to(setup.device)].detach()  # the kept columns before tuning
w_new, ridge_used = eqs.solve(ridge=config.ridge, damping=config.damping, prior=w_old)  # G W'ᵀ = C
w_loop = Arch(setup.model).out_proj(s).weight[:, idx.to(setup.device)].detach().double()
atol = 1e-6 * float(w_loop.abs().max()) if w_loop.numel() else 0.0
assert torch.allclose(w_new, w_loop, rtol=1e-5, atol=atol), \
    f"iteration {int(s)}: max |W' − W_loop| = {float((w_new - w_loop).abs().max()):.3g} > tolerance"
rho = float(eqs.rr) or 1.0
recomputed_errors = [eqs.error(w_old) / rho, eqs.error(w_new) / rho]
recorded_errors = [errors.rel_error_before_tuning[s], errors.rel_error_after_tuning[s]]
assert np.allclose(recomputed_errors, recorded_errors, rtol=1e-5, atol=1e-9), (recomputed_errors, recorded_errors)
print(f"iteration {int(s)} ({s.kind} of layer {s.layer}): recomputed tuned weights and errors equal the loop's record")
pd.Series({"kept input dims k": len(idx), "tokens": eqs.tokens,
           "cond(G)": float(torch.linalg.cond(eqs.gram)) if len(idx) else np.nan, "ridge used": ridge_used,
           "max |W' − W_loop|": float((w_new - w_loop).abs().max()) if len(idx) else 0.0, "atol": atol,
           "max |G W'ᵀ − C| / max |C|": float((eqs.gram @ w_new.T - eqs.cross).abs().max()
                                              / eqs.cross.abs().max().clamp_min(1e-300)) if len(idx) else 0.0,
           "relative error before (recorded)": recorded_errors[0],
           "relative error after (recorded)": recorded_errors[1],
           "relative error after, recomputed": recomputed_errors[1]})

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
