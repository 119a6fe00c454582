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
from kprune_lib.api import check_task_head, compute_batch_tokens, custom_model, resolve_device
from kprune_lib.encoder.arch import TABLES, Arch, base_type
from kprune_lib.method.baselines import run_method
from kprune_lib.data.batching import glue_pruning_sample, make_batches, tokenize
from kprune_lib.config import GLUE_BATCH_SIZE, PruneConfig
from kprune_lib.data.evaluate import evaluate_glue
from kprune_lib.data.files import sources
from kprune_lib.costs.flops import UnitFlops
from kprune_lib.encoder.forward import attention_bias, encode, projection_input, sublayer
from kprune_lib.data.glue import load_glue
from kprune_lib.artifacts.checkpoint import KPRUNE_FILE, load_model
from kprune_lib.encoder.masks import head_dims, masked_model
from kprune_lib.encoder.masks import kept_per_layer as units_per_layer
from kprune_lib.method.measurement import importance_scores
from kprune_lib.method import loop, methods
from kprune_lib.method.loop import PruneResult
from kprune_lib.method.search import kpms_step
from kprune_lib.method.tuning import NormalEquations
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


def resolve_inputs(model: str, data_dir: str | None, fallback_model: str | None = None,
                   base: str | Path = ".") -> tuple[str, str | None]:
    """The notebooks' model and data: the local folders where they exist; without them (no ../shared), the hub id
    `fallback_model` and the hub's GLUE, announced in one line. The sweep's rule (`sources.resolve_sources`)."""
    from kprune_lib.workbook.sources import NO_FALLBACK, resolve_sources

    src = resolve_sources("", model, data_dir, base, fallback_model,
                          None if fallback_model is not None else NO_FALLBACK)
    if src.model_missing is not None or src.data_missing is not None:
        print(f"{src.model_missing or src.data_missing} not found: using model {src.model}, data "
              f"{src.data_dir or 'from the hub (nyu-mll/glue)'} (needs the hub or its local cache)")
    return src.model, src.data_dir


def prepare(model: str, task: str, config: PruneConfig, data_dir: str | None = None, device: str = "auto",
            tokenizer: str | None = None) -> Setup:
    """Load the checkpoint and data; draw the sample (same seed, same draw, same batches as `api.prune`)."""
    t = get_glue_task(task)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    m, tok = load_model(model, device=dev, tokenizer=tokenizer)
    check_task_head(m, t)
    drawn = glue_pruning_sample(tok, t, data_dir, config, device=dev, batch_tokens=compute_batch_tokens(config, dev),
                                examples=methods.get(config.method).sample_examples)
    return Setup(m, tok, t, drawn.batches, drawn.seq_len, drawn.eval_splits, drawn.max_length, config, dev)


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
    flops = UnitFlops.of(arch)
    fh, fn = flops.head(seq_len), flops.neuron(seq_len)
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
    rows = []
    for lam in lam_rep_values:
        for s in sorted(result.knowledge):
            per_t = result.knowledge[s]
            scores = {t: importance_scores(k["k_rep"], k["k_pred"], lam, config.lam_pred, flops[t],
                                           Sublayer(t).pick(config.mu, 1.0)) for t, k in per_t.items()}
            keep, _, _ = kpms_step(scores, flops, s, budget_before(result, s, config.constraint))
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


# ---- one iteration s recomputed from the loop's record (01, 02, 03) ---------------------------------------------
def budget_before(result: PruneResult, s: int, constraint: float) -> float:
    """KPMS's budget at iteration s: (1 − constraint) · F_model at s = 0, then what iteration s − 1 left."""
    return (1.0 - constraint) * result.flops_dense if s == 0 else result.sublayers[s - 1]["budget_left"]


def kept_units(result: PruneResult, s: int) -> torch.Tensor:
    """(units_s,) bool: the units of sublayer s that the loop kept."""
    s = Sublayer(s)
    return s.pick(result.head_mask, result.neuron_mask)[s.layer].bool().cpu()


def kept_dims(arch: Arch, s: int, keep: torch.Tensor) -> torch.Tensor:
    """Unit keep-mask of sublayer s -> indices (k,) of its output projection's kept input dims (a head: d_h dims)."""
    mask = head_dims(keep, arch.head_size) if Sublayer(s).is_mha else keep
    return mask.nonzero().flatten()


def student_at(dense: torch.nn.Module, pruned: torch.nn.Module, s: int) -> torch.nn.Module:
    """The student of iteration s, rebuilt from the loop's end state: the dense model with the output projections of
    the sublayers t < s taken from the pruned (dense-shaped) model. KPWT writes only those (pruned columns zeroed,
    which masks them; the bias dropped where nothing is left) and a decided sublayer never changes again, so this is
    the model iteration s measured and tuned, before its own search."""
    student = copy.deepcopy(dense)
    src, dst = Arch(pruned), Arch(student)
    with torch.no_grad():
        for t in range(s):
            for name in ("weight", "bias"):
                if getattr(dst.out_proj(t), name) is not None:
                    getattr(dst.out_proj(t), name).copy_(getattr(src.out_proj(t), name))
    return student


def importance(knowledge: dict[int, dict[str, torch.Tensor]], arch: Arch, seq_len: float,
               config: PruneConfig) -> dict[int, torch.Tensor]:
    """{t: (units_t,) importance scores} from per-unit K_pred and K_rep, with F_unit of the FLOPs formula
    (`measurement.importance_scores`: μ for heads, 1 for neurons)."""
    flops = unit_flops(arch, seq_len)
    return {t: importance_scores(k["k_rep"], k["k_pred"], config.lam_rep, config.lam_pred, flops[t],
                                 Sublayer(t).pick(config.mu, 1.0)) for t, k in knowledge.items()}


def score_terms(record: dict[str, torch.Tensor], t: int, arch: Arch, seq_len: float,
                config: PruneConfig) -> pd.DataFrame:
    """One sublayer's recorded knowledge term by term: K_pred, K_rep, their weighted sum, F_unit, the multiplier
    (μ for heads) and the score S, one row per unit, highest score first."""
    t = Sublayer(t)
    f = unit_flops(arch, seq_len)[t]
    frame = pd.DataFrame({"unit": np.arange(record["score"].numel()), "K_pred": record["k_pred"].double().numpy(),
                          "K_rep": record["k_rep"].double().numpy()})
    frame["λ_pred·K_pred"] = config.lam_pred * frame.K_pred
    frame["λ_rep·K_rep"] = config.lam_rep * frame.K_rep
    frame["F_unit"] = f
    frame["multiplier"] = t.pick(config.mu, 1.0)
    frame["S (recorded)"] = record["score"].double().numpy()
    return frame.sort_values("S (recorded)", ascending=False, ignore_index=True)


def knowledge_check(recorded: dict[int, dict[str, torch.Tensor]], recomputed: dict[int, dict[str, torch.Tensor]],
                    rtol: float = 1e-5, atol_rel: float = 1e-6, atol_zero: float = 1e-12) -> pd.DataFrame:
    """Recorded vs recomputed knowledge of every sublayer t of one iteration, per quantity (k_pred, k_rep, score):
    the largest absolute difference and whether |a − b| ≤ atol + rtol·|b| holds for every unit, with atol =
    atol_rel × the largest recorded value of that quantity over the iteration, or atol_zero where that is 0 (K_pred at
    s = 0: the loop records the vanishing gradient as 0 without computing it; recomputed it is rounding noise)."""
    keys = [k for k in ("k_pred", "k_rep", "score") if all(k in recomputed[t] for t in recorded)]
    rows = []
    for key in keys:
        scale = max(float(recorded[t][key].abs().max()) if recorded[t][key].numel() else 0.0 for t in recorded)
        atol = atol_rel * scale if scale > 0 else atol_zero
        for t in sorted(recorded):
            a, b = recomputed[t][key].double().cpu(), recorded[t][key].double().cpu()
            rows.append({"sublayer": int(t), "quantity": key, "units": b.numel(),
                         "max |recorded|": float(b.abs().max()) if b.numel() else 0.0,
                         "max |difference|": float((a - b).abs().max()) if b.numel() else 0.0,
                         "atol": atol, "close": bool(torch.allclose(a, b, rtol=rtol, atol=atol))})
    return pd.DataFrame(rows)


def threshold_walk(scores: dict[int, torch.Tensor], costs: dict[int, float], budget: float) -> pd.DataFrame:
    """KPMS's walk as a table, for reading (the search itself is `search.kpms_threshold`): every candidate unit of
    the sublayers t ≥ s in ascending score order, with the cost of the candidates scoring strictly above it and
    whether that fits the budget. τ is the score of the first row that fits."""
    frame = pd.concat([pd.DataFrame({"sublayer": int(t), "kind": Sublayer(t).unit, "unit": np.arange(v.numel()),
                                     "score": v.double().cpu().numpy(), "cost": float(costs[t])})
                       for t, v in sorted(scores.items())], ignore_index=True)
    frame = frame.sort_values("score", kind="stable", ignore_index=True)
    per_score = frame.groupby("score").cost.sum()
    above = per_score[::-1].cumsum()[::-1] - per_score  # Σ cost of the units with S > this score
    frame["cost_above"] = frame.score.map(above)
    frame["fits"] = frame.cost_above < budget
    return frame


@torch.no_grad()
def tuning_equations(student: torch.nn.Module, dense: torch.nn.Module, batches: list[dict], s: int,
                     idx: torch.Tensor) -> NormalEquations:
    """KPWT's normal equations of sublayer s rebuilt by plain forward passes (no schedule, nothing cached): A = the
    kept dims idx of the student's projection input a_s, X = the student's input to sublayer s, Y_s = the dense
    teacher's pre-LayerNorm sum, R = Y_s − X − b_s, summed over the real tokens by `NormalEquations.add`."""
    st, te = Arch(student), Arch(dense)
    bias_s = st.out_proj(s).bias
    eqs = NormalEquations.zeros(len(idx), st.hidden, next(student.parameters()).device)
    for b in batches:
        mask = attention_bias(b["attention_mask"], student.dtype)
        x, x_t = st.embed(b["input_ids"], b.get("token_type_ids")), te.embed(b["input_ids"], b.get("token_type_ids"))
        for t in range(s):
            x, x_t = sublayer(st, t, x, mask)[0], sublayer(te, t, x_t, mask)[0]
        y_teacher = sublayer(te, s, x_t, mask)[1]
        residual = y_teacher - x if bias_s is None else y_teacher - x - bias_s
        eqs.add(projection_input(st, s, x, mask)[..., idx.to(x.device)], residual, b["attention_mask"])
    return eqs


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


def latency(dense_model: str, pruned_model: str, task: str | None, data_dir: str | None = None, device: str = "auto",
            batch_size: int = GLUE_BATCH_SIZE, repeats: int = 3, max_length: int | None = None,
            tokenizer: str | None = None, validation_file: str | None = None, text_columns: str | None = None,
            label_column: str | None = None, train_file: str | None = None, dataset: str | None = None,
            dataset_config: str | None = None, train_split: str | None = None, validation_split: str | None = None,
            metric: str | None = None) -> dict:
    """Measured inference time over the whole dev set, dense vs pruned, same batches (dataset order). Your own
    data (task None): the validation_file, or the data set's validation_split, read as `api.prune` reads it
    (sequence or token classification, as the checkpoint is; the training data and the metric are not read)."""
    dev = resolve_device(device)
    if task is None:
        _, validation = sources(None, validation_file, dataset, dataset_config, None, validation_split)
        dense, tok, t = custom_model(dense_model, dev, tokenizer, None, validation, text_columns, label_column)
        split = t.split("validation")
    else:
        dense, tok = load_model(dense_model, device=dev, tokenizer=tokenizer)
        t = get_glue_task(task)
        split = load_glue(t, t.eval_splits[0], data_dir)
    pruned, _ = load_model(pruned_model, device=dev)
    inputs = [{k: v for k, v in f.items() if k != "label"} for f in tokenize(tok, split, max_length or t.max_length)]
    batches = make_batches(inputs, batch_size, tok.pad_token_id, dev)
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


def stages_table(summary: dict) -> pd.DataFrame:
    """One row per recorded stage of a method with stages (kwon, kcm): heads and neurons kept, units that changed
    state at that stage, and its dev metrics (empty for a method without stages)."""
    rows = {}
    for s in summary.get("stages") or []:
        rows[s["stage"]] = {"heads kept": sum(s["heads_kept"]), "neurons kept": sum(s["neurons_kept"]),
                            "heads changed": s.get("changed_heads"), "neurons changed": s.get("changed_neurons"),
                            **(s.get("dev") or {})}
    return pd.DataFrame(rows).T


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
