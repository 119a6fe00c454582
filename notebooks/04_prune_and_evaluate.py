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
# # 04 · Prune and evaluate
#
# The whole pipeline on one (task, constraint, method): prune the fine-tuned checkpoint to the FLOPs budget,
# evaluate dense and pruned on the dev set, count FLOPs and parameters, and time both models on the dev set.
# Writes `output_dir/pruned/model/` (the physically pruned model) and `output_dir/summary.json`
# (the library's summary plus latency). **This is the notebook the sweep runs** (`kprune sweep GRID.yaml`).

# %% tags=["parameters"]
model = "../../shared/models/minilm-l6-mrpc"  # fine-tuned checkpoint (folder or hub id)
tokenizer = None  # the tokenizer's folder or hub id when the model folder has none (None: the model's)
task = "mrpc"  # GLUE task; with validation_file or dataset: only the name the sweep and the report give your data
data_dir = "../../shared/data/glue"  # GLUE root in the official layout (None: the hub)
train_file = None  # your own data (docs/own-data.md): the file the pruning sample is drawn from
validation_file = None  # your own data: the file evaluated on (set: `task` is a name, `data_dir` is not used)
text_columns = None  # your own data: "a" or "a,b" (None: as run_glue.py)
label_column = None  # your own data: the label column (None: "label")
dataset = None  # your own data as a data set (hub id or local data-set folder; instead of train_file/validation_file)
dataset_config = None  # its configuration (None: the default)
train_split = None  # its split the pruning sample is drawn from (None: "train")
validation_split = None  # its split evaluated on (None: "validation")
metric = None  # your own data: the primary metric (None: accuracy; spearman for a regression model)
output_dir = "../runs/notebook04"  # where pruned/model/ and summary.json go
method = "kprune"  # a method of `kprune methods` (kprune_lib/method/methods.py)
constraint = 0.5  # fraction of FLOPs to remove, in (0, 1) (ignored when latency_budget_ms is set)
latency_budget_ms = None  # instead of constraint: ms per forward of latency_batch × latency_seq tokens
latency_batch = 32  # examples per batch of the latency budget
latency_seq = 128  # tokens per example of the latency budget
latency_device = None  # cpu | cuda (None: the pruning device)
threads = None  # CPU threads of the latency measurements (None: torch's)
latency_table_policy = "remeasure"  # a cached latency table timed in another machine state: remeasure | keep
num_tokens = 20000  # sample size in tokens (the library's default is 100 000; 20 000 runs in minutes)
seed = 0  # seed of the sample draw
device = "auto"  # auto | cpu | cuda
lam_pred = 1.0  # weight of predictive knowledge
lam_rep = 0.00025  # weight of representational knowledge
mu = 64.0  # head score multiplier
temperature = 2.0  # softmax temperature T
tuning = True  # knowledge-preserving weight tuning (KPWT)
schedule = "cached"  # cached | naive (same masks)
batch_size = None  # sample batch size (None: 32)
max_length = None  # max tokens per example (None: task default)
ridge = 1e-06  # ridge used only when AᵀA is singular
latency_batch_size = 32  # batch size of the latency measurement (examples)
latency_repeats = 3  # timed passes over the dev set (median reported)

# %%
from pathlib import Path

from kprune_lib import PruneConfig, api
from kprune_lib.workbook import plots
from kprune_lib.workbook import steps as workbook

config = PruneConfig(constraint=constraint, num_tokens=num_tokens, seed=seed, lam_pred=lam_pred, lam_rep=lam_rep,
                     mu=mu, temperature=temperature, tuning=tuning, schedule=schedule, batch_size=batch_size,
                     max_length=max_length, ridge=ridge, method=method, latency_budget_ms=latency_budget_ms,
                     latency_batch=latency_batch, latency_seq=latency_seq, latency_device=latency_device,
                     threads=threads, latency_table_policy=latency_table_policy)
pruned_dir = Path(output_dir) / "pruned"

# %% [markdown]
# ## Prune
# `api.prune` draws the sample, evaluates the dense model, prunes with the chosen method, shrinks the model
# physically, evaluates it again and saves it (atomically) with its own `summary.json`.

# %%
own_data = dict(train_file=train_file, validation_file=validation_file, text_columns=text_columns,
                label_column=label_column, dataset=dataset, dataset_config=dataset_config, train_split=train_split,
                validation_split=validation_split, metric=metric) if validation_file or dataset else {}
summary = api.prune(model, None if own_data else task, str(pruned_dir), data_dir=None if own_data else data_dir,
                    device=device, overwrite=True, progress=False, config=config, tokenizer=tokenizer, **own_data)
print(f"{summary['method']} on {summary['task']}: {summary['flops_removed']:.1%} of FLOPs removed "
      f"in {summary['pruning_seconds']:.1f} s; model saved to {pruned_dir / 'model'}")

# %% [markdown]
# ## Latency budget
# With `latency_budget_ms`, the units were priced by the latency table measured on the device (README "Latency
# budgets"): the table (measured medians and the monotone costs the search used), and the budget against the
# table's prediction and the pruned model's measured latency.

# %%
plots.latency_budget_view(summary)

# %% [markdown]
# ## Stage by stage
# Methods made of stages record the masks and the dev metric after each (Kwon et al.: the Fisher search, the
# per-layer rearrangement, the mask rescaling folded into the weights; KCM: the R2D2 selection, the merge): what each
# stage changed and what it bought. Other methods have a single stage.

# %%
workbook.stages_table(summary)

# %%
plots.stages_view(summary)

# %% [markdown]
# ## Latency
# The whole dev set through the dense and the pruned model (Hugging Face forward, batch 32, same batches);
# median of `latency_repeats` passes after a warm-up batch.

# %%
timing = workbook.latency(model, str(pruned_dir / "model"), None if own_data else task,
                          data_dir=None if own_data else data_dir, device=device, batch_size=latency_batch_size,
                          repeats=latency_repeats, max_length=max_length, tokenizer=tokenizer, **own_data)
summary.update(timing, model_dir=str(pruned_dir / "model"))
print(f"dev set ({timing['latency_examples']} examples, batch {latency_batch_size}, {timing['latency_threads']} threads): "
      f"dense {timing['latency_dense_s']:.2f} s, pruned {timing['latency_pruned_s']:.2f} s, "
      f"speedup ×{timing['latency_speedup']:.2f}")

# %% [markdown]
# ## Dense vs pruned

# %%
workbook.metrics_table({"dense": summary["dense"], "pruned": summary["pruned"]})

# %%
workbook.cost_table(summary)

# %%
fig = plots.kept_units(*workbook.saved_masks(pruned_dir / "model"),
                       title=f"{summary['task']} · {summary['method']} · {summary['flops_removed']:.0%} FLOPs removed")

# %% [markdown]
# ## Summary
# Written last: its existence marks the sweep point as finished.

# %%
print(workbook.write_summary(output_dir, summary))
