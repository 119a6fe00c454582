"""The workbook's steps: one call per notebook section; plots live in `plots.py`, sweeps in `sweep.py`.

Every function takes models, tensors, plain numbers and a `PruneConfig`; none reads notebook globals.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kprune_lib._atomic import write_json
from kprune_lib.api import check_task_head, compute_batch_tokens, resolve_device
from kprune_lib.encoder.arch import TABLES, Arch, base_type
from kprune_lib.method.baselines import run_method
from kprune_lib.data.batching import glue_sample, make_batches, mean_length, tokenize
from kprune_lib.config import GLUE_BATCH_SIZE, PruneConfig
from kprune_lib.data.evaluate import evaluate_glue
from kprune_lib.costs.flops import head_flops, neuron_flops
from kprune_lib.encoder.forward import encode
from kprune_lib.data.glue import load_glue
from kprune_lib.artifacts.checkpoint import KPRUNE_FILE, load_model
from kprune_lib.encoder.masks import masked_model
from kprune_lib.encoder.masks import kept_per_layer as units_per_layer
from kprune_lib.method.measurement import importance_scores
from kprune_lib.method import loop
from kprune_lib.method.loop import PruneResult
from kprune_lib.method.search import kpms_step
from kprune_lib.encoder.sublayer import Sublayer, sublayers
from kprune_lib.data.tasks import get_glue_task


# ---- setup ----------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """A model, its task data and the pruning sample, built exactly as `api.prune` builds them."""

    model: torch.nn.Module
    tokenizer: object
    task: object  # GlueTask
    batches: list[dict]  # the pruning sample, with gold labels
    seq_len: float  # L_seq (dev-set average tokenized length)
    eval_splits: dict
    max_length: int
    config: PruneConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def arch(self) -> Arch:
        return Arch(self.model)

    def copy_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.model)


def prepare(model: str, task: str, config: PruneConfig, data_dir: str | None = None, device: str = "auto") -> Setup:
    """Load the checkpoint and data; draw the sample (same seed, same draw, same batches as `api.prune`)."""
    t = get_glue_task(task)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    m, tok = load_model(model, device=dev)
    check_task_head(m, t)
    max_length = config.max_length or t.max_length
    eval_splits = {split: load_glue(t, split, data_dir) for split in t.eval_splits}
    seq_len = mean_length(tokenize(tok, next(iter(eval_splits.values())), max_length))
    batches, _ = glue_sample(tok, load_glue(t, "train", data_dir), num_tokens=config.num_tokens, seq_len=seq_len,
                             seed=config.seed, batch_size=config.batch_size or GLUE_BATCH_SIZE,
                             max_length=max_length, device=dev, batch_tokens=compute_batch_tokens(config, dev))
    return Setup(m, tok, t, batches, seq_len, eval_splits, max_length, config, dev)


def sample_table(setup: Setup) -> pd.DataFrame:
    arch = setup.arch
    rows = {"task": setup.task.name, "examples": sum(b["input_ids"].shape[0] for b in setup.batches),
            "tokens": int(sum(b["attention_mask"].sum() for b in setup.batches)), "batches": len(setup.batches),
            "L_seq (dev mean length)": round(setup.seq_len, 2), "layers": arch.num_layers, "heads": arch.num_heads,
            "neurons": arch.ffn_size, "hidden": arch.hidden, "device": str(setup.device)}
    return pd.DataFrame([rows])


def run(setup: Setup, config: PruneConfig | None = None, model: torch.nn.Module | None = None,
        record_knowledge: bool = False) -> PruneResult:
    """Prune `model` (default: setup.model) in place with `config.method` on the setup's sample."""
    return run_method(model if model is not None else setup.model, setup.batches, setup.task.problem,
                      config or setup.config, setup.seq_len, progress=False, record_knowledge=record_knowledge)


def evaluate(setup: Setup, model: torch.nn.Module | None = None, head_mask=None, neuron_mask=None) -> dict:
    """Dev metrics of a dense-shaped model (default: setup.model), optionally with (L, H) / (L, N) masks applied."""
    m = model if model is not None else setup.model
    if head_mask is None:
        return evaluate_glue(m, setup.tokenizer, setup.task, setup.eval_splits, setup.max_length)
    dtype = next(m.parameters()).dtype
    hm, nm = ([r.to(setup.device, dtype) for r in mask] for mask in (head_mask, neuron_mask))
    with masked_model(Arch(m), hm, nm):
        return evaluate_glue(m, setup.tokenizer, setup.task, setup.eval_splits, setup.max_length)


def unit_flops(arch: Arch, seq_len: float) -> dict[int, float]:
    fh, fn = head_flops(seq_len, arch.hidden, arch.head_size), neuron_flops(seq_len, arch.hidden)
    return {s: s.pick(fh, fn) for s in sublayers(arch.num_layers)}


def mask_flops_removed(arch: Arch, seq_len: float, head_mask, neuron_mask) -> float:
    f = unit_flops(arch, seq_len)
    dense = sum(arch.heads_in_layer(i) * f[0] + arch.neurons_in_layer(i) * f[1] for i in range(arch.num_layers))
    return 1.0 - (sum(units_per_layer(head_mask)) * f[0] + sum(units_per_layer(neuron_mask)) * f[1]) / dense


# ---- 01 knowledge ---------------------------------------------------------------------------------------------
def knowledge_frame(result: PruneResult) -> pd.DataFrame:
    """Long table of recorded knowledge: one row per (iteration s, sublayer t ≥ s, unit)."""
    if not result.knowledge:
        raise ValueError("no knowledge recorded: run with record_knowledge=True")
    frames = []
    for s, per_t in result.knowledge.items():
        for t, k in per_t.items():
            n = k["score"].numel()
            frames.append(pd.DataFrame({
                "iteration": s, "sublayer": t, "layer": Sublayer(t).layer, "kind": Sublayer(t).unit,
                "unit": np.arange(n), "k_pred": k["k_pred"].double().numpy(), "k_rep": k["k_rep"].double().numpy(),
                "score": k["score"].double().numpy()}))
    return pd.concat(frames, ignore_index=True)


def knowledge_at_target(frame: pd.DataFrame) -> pd.DataFrame:
    """Each sublayer's knowledge as measured at its own iteration (s = t): what KPMS decided with."""
    return frame[frame.iteration == frame.sublayer].reset_index(drop=True)


def predictive_signal_by_iteration(frame: pd.DataFrame) -> pd.DataFrame:
    """Total K_pred and K_rep over all undecided units, per iteration: K_pred ≈ 0 at iteration 0 (student = teacher)."""
    g = frame.groupby("iteration")
    return pd.DataFrame({"sum K_pred": g.k_pred.sum(), "sum K_rep": g.k_rep.sum(), "max K_pred": g.k_pred.max()})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def lambda_rep_sensitivity(result: PruneResult, arch: Arch, seq_len: float, config: PruneConfig,
                           lam_rep_values: list[float]) -> pd.DataFrame:
    """Re-score each iteration's recorded knowledge with other λ_rep (same model state) and redo that KPMS step.

    Per (λ_rep, iteration s): Spearman correlation of the target's scores with the run's own, and the fraction of the
    target's keep/prune decisions that flip.
    """
    flops = unit_flops(arch, seq_len)
    budget0 = (1.0 - config.constraint) * result.flops_dense
    rows = []
    for lam in lam_rep_values:
        for s in sorted(result.knowledge):
            per_t = result.knowledge[s]
            scores = {t: importance_scores(k["k_rep"], k["k_pred"], lam, config.lam_pred, flops[t],
                                           Sublayer(t).pick(config.mu, 1.0)) for t, k in per_t.items()}
            budget = budget0 if s == 0 else result.sublayers[s - 1]["budget_left"]
            keep, _, _ = kpms_step(scores, flops, s, budget)
            target = Sublayer(s)
            ref_keep = target.pick(result.head_mask, result.neuron_mask)[target.layer]
            rows.append({"lam_rep": lam, "iteration": s, "kind": target.unit,
                         "spearman": _spearman(scores[s].numpy(), per_t[s]["score"].numpy()),
                         "flipped": float((keep.cpu() != ref_keep.cpu()).float().mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def model_outputs(model: torch.nn.Module, batches: list[dict]) -> list:
    """The model's head outputs (logits) on every batch, e.g. the dense teacher before pruning."""
    arch = Arch(model)
    return [arch.head(encode(arch, b)) for b in batches]


def measure_knowledge(model: torch.nn.Module, batches: list[dict], teacher_logits: list, problem: str,
                      temperature: float, pred_knowledge: str = "batch") -> dict[int, dict[str, torch.Tensor]]:
    """Per-unit K_pred and K_rep of every sublayer of a (pruned, dense-shaped) model in its current state, against a
    teacher's logits at temperature T: the loop's own measurement (`method.loop.measure_knowledge`)."""
    return loop.measure_knowledge(model, batches, problem, temperature=temperature, teacher_outputs=teacher_logits,
                                  pred_knowledge=pred_knowledge)


def temperature_sensitivity(model: torch.nn.Module, batches: list[dict], teacher_logits: list, problem: str,
                            result: PruneResult, config: PruneConfig, temperatures: list[float],
                            seq_len: float) -> pd.DataFrame:
    """Rankings of the surviving units of a pruned model under several T (same state, same teacher).

    Per (T, sublayer kind): Spearman correlation of K_pred and of the combined score with those at config.temperature.
    """
    arch = Arch(model)
    flops = unit_flops(arch, seq_len)
    kept = {s: s.pick(result.head_mask, result.neuron_mask)[s.layer].bool() for s in sublayers(arch.num_layers)}

    def collect(T):
        k = measure_knowledge(model, batches, teacher_logits, problem, T)
        out = {}
        for kind in ("head", "neuron"):
            ss = [s for s in sublayers(arch.num_layers) if s.unit == kind]
            kp = torch.cat([k[s]["k_pred"][kept[s]] for s in ss])
            sc = torch.cat([importance_scores(k[s]["k_rep"][kept[s]], k[s]["k_pred"][kept[s]], config.lam_rep,
                                              config.lam_pred, flops[s], s.pick(config.mu, 1.0)) for s in ss])
            out[kind] = (kp.numpy(), sc.numpy())
        return out

    ref = collect(config.temperature)
    rows = []
    for T in temperatures:
        cur = ref if T == config.temperature else collect(T)
        for kind in ("head", "neuron"):
            rows.append({"temperature": T, "kind": kind, "units": len(cur[kind][0]),
                         "mean K_pred": float(np.mean(cur[kind][0])) if len(cur[kind][0]) else float("nan"),
                         "spearman K_pred": _spearman(cur[kind][0], ref[kind][0]),
                         "spearman score": _spearman(cur[kind][1], ref[kind][1])})
    return pd.DataFrame(rows)


# ---- 02 mask search / 03 tuning ------------------------------------------------------------------------------
def sublayer_frame(result: PruneResult, constraint: float) -> pd.DataFrame:
    """One row per sublayer: kept units, τ, budget before / left, FLOPs spent by its kept units, errors."""
    df = pd.DataFrame(result.sublayers)
    if "budget_left" in df:
        before = [(1.0 - constraint) * result.flops_dense] + df.budget_left.tolist()[:-1]
        df.insert(df.columns.get_loc("budget_left"), "budget_before", before)
        df["spent"] = df.budget_before - df.budget_left
    return df


def mask_comparison(setup: Setup, dense: torch.nn.Module, masks: dict[str, tuple],
                    tuned: dict[str, torch.nn.Module] | None = None) -> pd.DataFrame:
    """Named (head_mask, neuron_mask) pairs side by side: FLOPs removed, units kept, the main metric with the masks
    on the dense weights (no tuning) and, where given, of the tuned model that produced them."""
    arch, m = Arch(dense), setup.task.main_metric
    rows = [{"masks": "dense", "flops_removed": 0.0, "heads_kept": arch.num_layers * arch.num_heads,
             "neurons_kept": arch.num_layers * arch.ffn_size, f"{m} (dense weights)": evaluate(setup, dense)[m],
             f"{m} (tuned weights)": np.nan}]
    for name, (hm, nm) in masks.items():
        rows.append({"masks": name, "flops_removed": mask_flops_removed(arch, setup.seq_len, hm, nm),
                     "heads_kept": int(hm.sum()), "neurons_kept": int(nm.sum()),
                     f"{m} (dense weights)": evaluate(setup, dense, hm, nm)[m],
                     f"{m} (tuned weights)": evaluate(setup, tuned[name])[m] if tuned and name in tuned else np.nan})
    return pd.DataFrame(rows).set_index("masks")


def metrics_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """{model name: {metric: value}} -> one row per model."""
    return pd.DataFrame(metrics).T


# ---- 04 prune and evaluate -----------------------------------------------------------------------------------
@torch.no_grad()
@torch.inference_mode()
def time_forward(model: torch.nn.Module, batches: list[dict], repeats: int = 3) -> float:
    """Median wall time (s) of one pass over `batches` (after one warm-up batch), no autograd."""
    model.eval()
    cuda = next(model.parameters()).device.type == "cuda"
    model(**batches[0])
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in batches:
            model(**b)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def latency(dense_model: str, pruned_model: str, task: str, data_dir: str | None = None, device: str = "auto",
            batch_size: int = GLUE_BATCH_SIZE, repeats: int = 3, max_length: int | None = None) -> dict:
    """Measured inference time over the whole dev set, dense vs pruned, same batches (dataset order)."""
    t = get_glue_task(task)
    dev = resolve_device(device)
    dense, tok = load_model(dense_model, device=dev)
    pruned, _ = load_model(pruned_model, device=dev)
    split = load_glue(t, t.eval_splits[0], data_dir)
    batches = make_batches(tokenize(tok, split, max_length or t.max_length), batch_size, tok.pad_token_id, dev)
    t_dense = time_forward(dense, batches, repeats)
    t_pruned = time_forward(pruned, batches, repeats)
    return {"latency_dense_s": t_dense, "latency_pruned_s": t_pruned, "latency_speedup": t_dense / t_pruned,
            "latency_batch_size": batch_size, "latency_examples": len(split), "latency_repeats": repeats,
            "latency_threads": torch.get_num_threads()}


def saved_masks(model_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, H) and (L, N) keep-masks of a pruned model folder, from the kept unit indices in its kprune.json."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / KPRUNE_FILE).read_text())
    config = json.loads((model_dir / "config.json").read_text())  # the dense model's config
    table = TABLES[base_type(config["model_type"])]  # "kprune-bert" is laid out as "bert"
    L = len(meta["kept_heads"])
    hm = torch.zeros(L, int(config[table.heads_attr]), dtype=torch.bool)
    nm = torch.zeros(L, int(config[table.ffn_attr]), dtype=torch.bool)
    for i, (h, n) in enumerate(zip(meta["kept_heads"], meta["kept_neurons"])):
        hm[i, h] = True
        nm[i, n] = True
    return hm, nm


def cost_table(summary: dict) -> pd.DataFrame:
    """Dense vs pruned: main metric, FLOPs, parameters and (if measured) latency."""
    m = summary["metric"]
    rows = {"dense": {m: summary["dense"][m], "GFLOPs / example": summary["flops_dense"] / 1e9,
                      "parameters (M)": summary["params_dense"] / 1e6},
            "pruned": {m: summary["pruned"][m], "GFLOPs / example": summary["flops_pruned"] / 1e9,
                       "parameters (M)": summary["params_pruned"] / 1e6}}
    if "latency_dense_s" in summary:
        rows["dense"]["dev-set latency (s)"] = summary["latency_dense_s"]
        rows["pruned"]["dev-set latency (s)"] = summary["latency_pruned_s"]
    return pd.DataFrame(rows).T


def write_summary(output_dir: str | Path, summary: dict) -> Path:
    """Write OUTPUT/summary.json atomically (the sweep treats its existence as 'point finished')."""
    return write_json(Path(output_dir) / "summary.json", summary)


# ---- 05 results -----------------------------------------------------------------------------------------------
# Convention: every table returned here holds metrics ×1 (fractions: 0.853, not 85.3), the sweep's scale;
# figures and the paired-difference view show them ×100 ("points").
_SUBLAYER_KIND = {"mha": "heads", "ffn": "neurons"}  # summary sublayer kind -> heatmap panel


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results table into one convention: metrics ×1 (fractions), one row per point.

    Two formats are accepted:
    - the sweep's `results.csv` (`kprune sweep`): metrics ×1, a `run_dir` per point, latency columns;
    - the accuracy protocol's csv (`benchmarks/accuracy.py`, `benchmarks/results/accuracy.csv`): metrics ×100 and a
      `delta` column, recognised by `delta` without `run_dir`; its dense, pruned and delta are divided by 100.
    The result always has `delta` (pruned − dense), `run_dir` and `latency_speedup` (NaN where the format lacks them);
    `df.attrs["source"]` is "sweep" or "accuracy".
    """
    df = pd.read_csv(path)
    if df.empty:
        raise ValueError(f"{path} has no rows: run a sweep first (kprune sweep GRID.yaml)")
    missing = {"task", "method", "constraint", "seed", "metric", "dense", "pruned"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a results table: no column(s) {', '.join(sorted(missing))}")
    source = "accuracy" if "delta" in df.columns and "run_dir" not in df.columns else "sweep"
    if source == "accuracy":
        for col in ("dense", "pruned", "delta"):
            df[col] = df[col] / 100.0
    df["delta"] = df["pruned"] - df["dense"]
    for col in ("run_dir", "latency_speedup", "flops_removed", "pruning_seconds"):
        if col not in df.columns:
            df[col] = np.nan
    df.attrs["source"] = source
    return df


def mean_over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd (0 for one seed) of the main metric, and mean costs, per (task, method, constraint);
    `seeds` is the number of rows (seeds) averaged."""
    g = df.groupby(["task", "method", "constraint"], as_index=False)
    out = g.agg(metric=("metric", "first"), dense=("dense", "mean"), pruned=("pruned", "mean"),
                pruned_std=("pruned", "std"), flops_removed=("flops_removed", "mean"),
                pruning_seconds=("pruning_seconds", "mean"), latency_speedup=("latency_speedup", "mean"),
                seeds=("seed", "count"))
    out["pruned_std"] = out["pruned_std"].fillna(0.0)
    return out


def seed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method) × constraint: the pruned metric ×100 as 'mean ± sd (n=seeds)'; 'mean (n=1)' for one."""
    mean = mean_over_seeds(df)
    text = [f"{100 * m:.2f}" + (f" ± {100 * s:.2f}" if n > 1 else "") + f" (n={n})"
            for m, s, n in zip(mean.pruned, mean.pruned_std, mean.seeds)]
    return mean.assign(pruned=text).pivot(index=["task", "method"], columns="constraint", values="pruned").fillna("–")


def speedup_table(df: pd.DataFrame, within: float = 0.03) -> pd.DataFrame:
    """Per task and method, the most compressed model whose metric is within `within` (3 points) of dense."""
    mean = mean_over_seeds(df)
    ok = mean[mean.pruned >= mean.dense - within]
    rows = []
    for (task, method), g in mean.groupby(["task", "method"]):
        good = ok[(ok.task == task) & (ok.method == method)]
        row = {"task": task, "method": method, "dense": g.dense.iloc[0]}
        if good.empty:
            row.update(constraint=np.nan, pruned=np.nan, flops_removed=np.nan, flops_speedup=np.nan,
                       latency_speedup=np.nan)
        else:
            best = good.loc[good.flops_removed.idxmax()]
            row.update(constraint=best.constraint, pruned=best.pruned, flops_removed=best.flops_removed,
                       flops_speedup=1.0 / (1.0 - best.flops_removed), latency_speedup=best.latency_speedup)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["task", "method"])


def pruning_time_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean pruning time (s) per task and method."""
    return df.pivot_table(index="task", columns="method", values="pruning_seconds", aggfunc="mean")


def _rounded(constraint) -> pd.Series | float:
    return np.round(constraint, 6)


def paired_differences(df: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per (task, constraint): mean, standard error and n of the per-seed differences pruned(a) − pruned(b).

    Only seeds that both methods have in that (task, constraint) are paired; unmatched seeds are dropped, and cells
    without a single pair are left out. se = sample sd / √n (NaN for n = 1). Metrics on the scale of `df`
    (×1 after load_results). Columns: task, constraint, mean, se, n.
    """
    if a == b:
        raise ValueError(f"paired differences need two different methods, got {a!r} twice")
    part = df[df.method.isin([a, b])].assign(constraint=lambda d: _rounded(d.constraint))
    wide = part.groupby(["task", "constraint", "seed", "method"]).pruned.mean().unstack("method")
    if a not in wide.columns or b not in wide.columns:
        return pd.DataFrame(columns=["task", "constraint", "mean", "se", "n"])
    g = (wide[a] - wide[b]).dropna().groupby(level=["task", "constraint"])
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count()), "n": g.count()})
    return out.reset_index()


def paired_summary(paired: pd.DataFrame, min_constraint: float = 0.6) -> dict:
    """Over the cells of `paired_differences` with constraint ≥ min_constraint: the mean of their mean differences,
    its standard error (sd of the cell means / √k) and k, the number of (task, constraint) cells (as
    benchmarks/accuracy.py summarises)."""
    means = paired[paired.constraint >= min_constraint - 1e-9]["mean"].astype(float)
    k = len(means)
    se = float(means.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    return {"mean": float(means.mean()) if k else float("nan"), "se": se, "n": k}


def paired_view(df: pd.DataFrame, compare: list[str], min_constraint: float = 0.6):
    """The notebook's paired-difference table for compare = [A, B], in points (×100): one row per (task, constraint)
    with the mean of the per-seed differences A − B, its standard error and n seed pairs, then one row with the
    mean over the cells with constraint ≥ min_constraint (n = cells); rounded to 3 decimals. A Markdown `Note`
    instead when A or B has no rows, or no seed has both."""
    from kprune_lib.workbook.plots import Note

    if len(compare) != 2 or compare[0] == compare[1]:
        return Note(f"**Paired differences skipped**: `compare` must name two different methods, got {compare!r}.")
    a, b = compare
    present = sorted(df.method.unique())
    missing = [m for m in (a, b) if m not in present]
    if missing:
        return Note(f"**Paired differences {a} − {b} skipped**: no rows of {', '.join(missing)} in the results table "
                    f"(methods present: {', '.join(present)}).")
    paired = paired_differences(df, a, b)
    if paired.empty:
        return Note(f"**Paired differences {a} − {b} skipped**: no seed has both methods in any (task, constraint).")
    s = paired_summary(paired, min_constraint)
    label = f"{a} − {b}"
    table = pd.DataFrame({"task": paired.task, "constraint": paired.constraint.map(lambda c: f"{c:g}"),
                          f"{label}: mean (points)": 100 * paired["mean"].astype(float),
                          "standard error (points)": 100 * paired.se.astype(float), "n": paired.n.astype(int),
                          "n counts": "seed pairs"})
    summary = {"task": "all tasks", "constraint": f"≥ {min_constraint:g}", f"{label}: mean (points)": 100 * s["mean"],
               "standard error (points)": 100 * s["se"], "n": s["n"], "n counts": "(task, constraint) cells"}
    out = pd.concat([table, pd.DataFrame([summary])], ignore_index=True).set_index(["task", "constraint"])
    return out.round(3)


def point_summaries(df: pd.DataFrame, points_dir: str | Path | None = None) -> list[dict]:
    """The summary.json of each point (row) of `df` that can be found, with task/method/constraint/seed set from
    the row: the row's `run_dir`/summary.json when it exists, else
    points_dir/<task>/<method>/c<constraint>/seed<seed>/summary.json (the accuracy protocol's and the sweep's layout).
    Points without a summary are skipped; one summary per (task, method, constraint, seed)."""
    found, seen = [], set()
    for row in df.itertuples(index=False):
        key = (row.task, row.method, round(float(row.constraint), 6), int(row.seed))
        if key in seen:
            continue
        candidates = []
        run_dir = getattr(row, "run_dir", None)
        if isinstance(run_dir, str) and run_dir:
            candidates.append(Path(run_dir) / "summary.json")
        if points_dir is not None:
            candidates.append(Path(points_dir) / row.task / row.method / f"c{float(row.constraint):g}"
                              / f"seed{int(row.seed)}" / "summary.json")
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            continue
        seen.add(key)
        found.append({**json.loads(path.read_text()), "task": row.task, "method": row.method,
                      "constraint": float(row.constraint), "seed": int(row.seed)})
    return found


def kept_per_layer(summaries: list[dict]) -> pd.DataFrame:
    """Long table of kept units per point and layer: task, method, constraint, seed, kind ('heads' | 'neurons'),
    layer, kept, total, fraction = kept / total. Counts from `heads_kept` / `neurons_kept`, totals from the
    summary's per-sublayer records (`units`); NaN total and fraction where a summary has none."""
    rows = []
    for s in summaries:
        totals = {(_SUBLAYER_KIND.get(r.get("kind")), int(r["layer"])): r["units"]
                  for r in s.get("sublayers", []) if "units" in r and "layer" in r}
        for kind, key in (("heads", "heads_kept"), ("neurons", "neurons_kept")):
            for layer, kept in enumerate(s.get(key, [])):
                total = totals.get((kind, layer), np.nan)
                rows.append({"task": s["task"], "method": s.get("method", "kprune"),
                             "constraint": float(s["constraint"]), "seed": int(s["seed"]), "kind": kind,
                             "layer": layer, "kept": int(kept), "total": total, "fraction": kept / total})
    columns = ["task", "method", "constraint", "seed", "kind", "layer", "kept", "total", "fraction"]
    return pd.DataFrame(rows, columns=columns)


def mean_kept(kept: pd.DataFrame, constraint: float | None = None) -> pd.DataFrame:
    """Mean over seeds of `kept_per_layer` at one constraint: `constraint`, or where None each task's largest one.

    Columns: task, constraint, kind, method, layer, fraction (mean), fraction_sd (sample sd, 0 for one seed),
    kept (mean count), total, seeds. Empty when no point has that constraint."""
    columns = ["task", "constraint", "kind", "method", "layer", "fraction", "fraction_sd", "kept", "total", "seeds"]
    if kept.empty:
        return pd.DataFrame(columns=columns)
    kept = kept.assign(constraint=_rounded(kept.constraint))
    if constraint is None:
        chosen = kept.constraint == kept.groupby("task").constraint.transform("max")
    else:
        chosen = np.isclose(kept.constraint, float(constraint))
    g = kept[chosen].groupby(["task", "constraint", "kind", "method", "layer"], as_index=False)
    out = g.agg(fraction=("fraction", "mean"), fraction_sd=("fraction", "std"), kept=("kept", "mean"),
                total=("total", "first"), seeds=("seed", "nunique"))
    out["fraction_sd"] = out["fraction_sd"].fillna(0.0)
    return out[columns]


def kept_matrix(mean: pd.DataFrame, task: str, kind: str) -> pd.DataFrame:
    """Methods × layers matrix of the mean fraction kept, of one task and kind ('heads' | 'neurons') of `mean_kept`."""
    part = mean[(mean.task == task) & (mean.kind == kind)]
    return part.pivot(index="method", columns="layer", values="fraction").sort_index()


def kept_fractions(df: pd.DataFrame, points_dir: str | Path | None = None,
                   constraint: float | None = None) -> pd.DataFrame:
    """The notebook's heatmap data: `mean_kept(kept_per_layer(point_summaries(df, points_dir)), constraint)`."""
    return mean_kept(kept_per_layer(point_summaries(df, points_dir)), constraint)


def latency_budget_record(results_dir: str | Path):
    """The newest full record `<date>-latency-budget.json` of benchmarks/latency_budget.py under results_dir (dict,
    its path under "path"), or a Markdown `Note` saying how to make one."""
    from kprune_lib.workbook.plots import Note

    found = sorted(Path(results_dir).glob("*-latency-budget.json"))  # `--quick` runs end in -latency-budget-quick
    if not found:
        return Note(f"**Accuracy at equal latency skipped**: no `*-latency-budget.json` under `{results_dir}` — run "
                    "`make latency-budget` (benchmarks/latency_budget.py, ~30 min on 2 cores) first.")
    return json.loads(found[-1].read_text()) | {"path": str(found[-1])}


def latency_budget_points(record: dict) -> pd.DataFrame:
    """The latency-budget benchmark's models as points for `plots.accuracy_vs_latency`: kind ("dense", "latency
    budget", "FLOPs constraint": the FLOPs-constrained model matched to each latency-budget one), seed, budget
    fraction, measured_ms (all timed in the benchmark's final interleaved rounds) and metric (×1). The dense point
    needs the record's `dense_metric` (records before 2026-11-26 lack it: no dense point)."""
    rows = record["rows"]
    if not rows:
        raise ValueError(f"the latency-budget record {record.get('path', '')} has no rows; rerun "
                         "benchmarks/latency_budget.py")
    pts = [{"kind": "dense", "seed": None, "budget_fraction": 1.0, "measured_ms": record["dense_ms"],
            "metric": record["dense_metric"]}] if record.get("dense_metric") is not None else []
    pts += [{"kind": "latency budget", "seed": r["seed"], "budget_fraction": r["budget_fraction"],
             "measured_ms": r["measured_ms"], "metric": r["accuracy"]} for r in rows]
    pts += [{"kind": "FLOPs constraint", "seed": r["seed"], "budget_fraction": r["budget_fraction"],
             "measured_ms": r["flops_measured_ms"], "metric": r["flops_accuracy"]} for r in rows]
    return pd.DataFrame(pts)


def latency_budget_figure(record):
    """Accuracy vs measured latency of a latency-budget record, latency budgets against the FLOPs-constrained
    models of the same measured latency, one line per seed (a `Note` is passed through)."""
    from kprune_lib.workbook import plots

    if isinstance(record, plots.Note):
        return record
    fig = plots.accuracy_vs_latency(latency_budget_points(record))
    fig.axes[0].set_title(f"Accuracy vs measured latency ({Path(record['path']).name})", fontsize="small")
    return fig


def latency_budget_means(record):
    """Per budget fraction, the means over seeds: measured / budget (final interleaved rounds), the metric (×100) of
    the latency-budget and FLOPs-constrained models of equal measured latency and their difference, n seeds."""
    from kprune_lib.workbook.plots import Note

    if isinstance(record, Note):
        return record
    rows = pd.DataFrame(record["rows"])
    g = rows.groupby("budget_fraction", sort=False)
    out = pd.DataFrame({"measured / budget": g.measured_over_budget.mean(),
                        "worst measured / budget": g.measured_over_budget.max(),
                        "latency budget (×100)": 100 * g.accuracy.mean(),
                        "FLOPs-constrained (×100)": 100 * g.flops_accuracy.mean(),
                        "Δ (points)": 100 * g.delta_accuracy.mean(),
                        "sd of Δ (points)": 100 * g.delta_accuracy.std(),
                        "n seeds": g.seed.nunique()})
    out.index = [f"{100 * f:.0f} % of dense" for f in out.index]
    return out.round(3)
