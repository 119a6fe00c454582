"""Figures of the workbook. Each function takes tables / masks and returns a matplotlib Figure."""
from __future__ import annotations

import math

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl", "inline")):
    matplotlib.use("Agg")  # headless (sweeps, tests); notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

METHOD_STYLE = {  # colour and marker per method, stable across figures
    "kprune": ("tab:red", "o"), "kprune-no-tuning": ("tab:orange", "s"), "kprune-pred-only": ("tab:purple", "^"),
    "kprune-rep-only": ("tab:brown", "v"), "kwon-fisher": ("tab:blue", "D"), "kprune-plus": ("tab:green", "P"),
    "kprune-fisher": ("tab:olive", "X"), "kprune-gn": ("tab:cyan", "<"), "kprune-gold": ("tab:pink", ">"),
}


class Note(str):
    """A message that a notebook cell shows as Markdown (plain text elsewhere), e.g. why a view is skipped."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(str(self))

    def __repr__(self) -> str:
        return str(self)


def save(view, path, dpi: int = 120):
    """Write a Figure as PNG to `path` (folders made) and return None: the notebook shows the figure itself.
    Anything else (a `Note`) is returned unchanged and nothing is written."""
    if isinstance(view, plt.Figure):
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        view.savefig(path, dpi=dpi)
        return None
    return view


def _log10(values, floor_rel: float = 1e-12) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    floor = max(float(np.nanmax(v)) * floor_rel, 1e-300) if v.size and np.nanmax(v) > 0 else 1e-300
    return np.log10(np.maximum(v, floor))


def knowledge_heatmaps(at_target: pd.DataFrame) -> plt.Figure:
    """Heads: layer × head heatmaps of log10 K_pred, log10 K_rep and log10 score (each measured at its own iteration)."""
    heads = at_target[at_target.kind == "head"]
    L, H = heads.layer.max() + 1, heads.unit.max() + 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * L + 2), constrained_layout=True)
    for ax, col, title in zip(axes, ("k_pred", "k_rep", "score"), ("predictive K_pred", "representational K_rep",
                                                                    "importance score")):
        grid = np.full((L, H), np.nan)
        grid[heads.layer.to_numpy(), heads.unit.to_numpy()] = _log10(heads[col])
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set(title=f"log10 {title}", xlabel="head", ylabel="layer", xticks=range(H), yticks=range(L))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Heads: knowledge measured at the iteration that pruned their layer's MHA")
    return fig


def knowledge_distributions(at_target: pd.DataFrame) -> plt.Figure:
    """Per layer: distribution (box plot) of log10 K_pred and log10 K_rep, for heads and for neurons."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), constrained_layout=True)
    for row, kind in enumerate(("head", "neuron")):
        part = at_target[at_target.kind == kind]
        layers = sorted(part.layer.unique())
        for col, (k, name) in enumerate((("k_pred", "K_pred"), ("k_rep", "K_rep"))):
            ax = axes[row, col]
            logs = _log10(part[k])
            ax.boxplot([logs[(part.layer == i).to_numpy()] for i in layers], tick_labels=[str(i) for i in layers])
            ax.set(title=f"{kind}s: log10 {name}", xlabel="layer", ylabel=f"log10 {name}")
    return fig


def predictive_signal(signal: pd.DataFrame) -> plt.Figure:
    """Σ K_pred and Σ K_rep of the undecided units per iteration (log scale)."""
    fig, ax = plt.subplots(figsize=(8, 3.5), constrained_layout=True)
    for col in ("sum K_pred", "sum K_rep"):
        ax.plot(signal.index, np.maximum(signal[col].to_numpy(), 1e-30), marker="o", label=col)
    ax.set(yscale="log", xlabel="iteration s (sublayer being pruned)", ylabel="total over undecided units",
           title="Predictive knowledge is ~0 at iteration 0 (student = teacher)")
    ax.legend()
    return fig


def lambda_rep_sensitivity(sens: pd.DataFrame, default: float) -> plt.Figure:
    """Spearman correlation with the default ranking and fraction of flipped decisions, per iteration and λ_rep."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    for lam, g in sens.groupby("lam_rep"):
        style = "-" if lam == default else "--"
        axes[0].plot(g.iteration, g.spearman, style, marker="o", label=f"λ_rep={lam:g}")
        axes[1].plot(g.iteration, g.flipped, style, marker="o", label=f"λ_rep={lam:g}")
    axes[0].set(xlabel="iteration s", ylabel="Spearman vs default", title="Ranking of the target sublayer's units",
                ylim=(-1.05, 1.05))
    axes[1].set(xlabel="iteration s", ylabel="fraction flipped", title="KPMS keep/prune decisions that change",
                ylim=(-0.02, 1.02))
    axes[1].legend(fontsize="small")
    return fig


def temperature_sensitivity(sens: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    kinds = list(sens.kind.unique())
    temps = sorted(sens.temperature.unique())
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        g = sens[sens.kind == kind].set_index("temperature").loc[temps]
        ax.bar(np.arange(len(temps)) + j * width, g["spearman score"], width, label=f"{kind}s")
    ax.set_xticks(np.arange(len(temps)) + 0.4 - width / 2, [f"T={t:g}" for t in temps])
    ax.set(ylabel="Spearman vs default T", ylim=(-1.05, 1.05), title="Ranking of surviving units under other T")
    ax.legend()
    return fig


def search_trace(search: pd.DataFrame, flops_dense: float) -> plt.Figure:
    """KPMS per sublayer: the threshold τ, the FLOPs the kept units consume and the budget left."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), constrained_layout=True)
    x = search.sublayer.to_numpy()
    colors = ["tab:blue" if k == "mha" else "tab:green" for k in search.kind]
    tau = search.tau.replace([np.inf], np.nan).to_numpy(dtype=float)
    axes[0].scatter(x, np.where(tau > 0, tau, np.nan), c=colors)
    axes[0].plot(x, np.where(tau > 0, tau, np.nan), color="grey", lw=0.8)
    axes[0].set(yscale="log", xlabel="sublayer s (even: MHA, odd: FFN)", ylabel="τ", title="Threshold per sublayer")
    axes[1].bar(x, search.spent.to_numpy(dtype=float) / flops_dense, color=colors, label="spent by kept units")
    axes[1].plot(x, search.budget_left.to_numpy(dtype=float) / flops_dense, color="k", marker=".", label="budget left")
    axes[1].set(xlabel="sublayer s", ylabel="fraction of dense FLOPs", title="Budget consumption per sublayer")
    axes[1].legend()
    return fig


def kept_units(head_mask, neuron_mask, title: str = "") -> plt.Figure:
    """Surviving heads (layer × head map) and surviving neurons per layer (bars)."""
    hm, nm = np.asarray(head_mask, dtype=float), np.asarray(neuron_mask, dtype=float)
    L, H = hm.shape
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * L + 2.5), constrained_layout=True)
    axes[0].imshow(hm, aspect="auto", cmap="Greens", vmin=0, vmax=1)
    axes[0].set(title="heads kept (green)", xlabel="head", ylabel="layer", xticks=range(H), yticks=range(L))
    axes[1].barh(range(L), nm.sum(1), color="tab:green")
    axes[1].set(title=f"neurons kept (of {nm.shape[1]})", xlabel="neurons", ylabel="layer", yticks=range(L),
                xlim=(0, nm.shape[1]))
    axes[1].invert_yaxis()
    if title:
        fig.suptitle(title)
    return fig


def compare_kept(masks: dict[str, tuple]) -> plt.Figure:
    """Heads and neurons kept per layer, for several named (head_mask, neuron_mask) pairs."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    n = len(masks)
    width = 0.8 / n
    for j, (name, (hm, nm)) in enumerate(masks.items()):
        hm, nm = np.asarray(hm, dtype=float), np.asarray(nm, dtype=float)
        x = np.arange(hm.shape[0]) + j * width
        axes[0].bar(x, hm.sum(1), width, label=name)
        axes[1].bar(x, nm.sum(1), width, label=name)
    for ax, what in zip(axes, ("heads", "neurons")):
        L = np.asarray(next(iter(masks.values()))[0]).shape[0]
        ax.set_xticks(np.arange(L) + 0.4 - width / 2, [str(i) for i in range(L)])
        ax.set(xlabel="layer", ylabel=f"{what} kept", title=f"{what} kept per layer")
    axes[1].legend(loc="lower right", framealpha=0.9)
    return fig


def tuning_errors(tuned: pd.DataFrame, untuned: pd.DataFrame | None = None) -> plt.Figure:
    """Relative reconstruction error ‖AWᵀ − R‖² / ‖R‖² of each sublayer, before and after KPWT."""
    fig, ax = plt.subplots(figsize=(11, 3.8), constrained_layout=True)
    x = tuned.sublayer.to_numpy()
    w = 0.27
    ax.bar(x - w, tuned.rel_error_before_tuning, w, label="K-prune: before KPWT")
    ax.bar(x, tuned.rel_error_after_tuning, w, label="K-prune: after KPWT")
    if untuned is not None:
        ax.bar(x + w, untuned.rel_error_after_tuning, w, label="no tuning at all")
    ax.set(yscale="log", xlabel="sublayer s (even: MHA, odd: FFN)", ylabel="relative error",
           title="Sublayer reconstruction error against the teacher", xticks=x)
    ax.legend()
    return fig


def metric_bars(metrics: dict[str, dict], metric: str, reference: str | None = "dense") -> plt.Figure:
    names = list(metrics)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 3.5), constrained_layout=True)
    vals = [metrics[n][metric] for n in names]
    ax.bar(names, vals, color=["grey" if n == reference else "tab:red" for n in names])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set(ylabel=metric, title=f"dev {metric}")
    return fig


def _seeds_label(seeds) -> str:
    """'n=3', or 'n=2–3' when the points of a curve have different numbers of seeds."""
    lo, hi = int(np.min(seeds)), int(np.max(seeds))
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def metric_vs_flops(mean: pd.DataFrame, ratio: float = 0.97) -> plt.Figure:
    """Paper-style figure from `views.mean_over_seeds` (metrics ×1, drawn ×100): main metric vs FLOPs removed,
    one panel per task, one curve per method with the mean over seeds and ± sample-sd error bars, the number of
    seeds in the legend (n=…), the dense value and the `ratio`-of-dense line."""
    tasks = sorted(mean.task.unique())
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False, constrained_layout=True)
    for ax, task in zip(axes.flat, tasks):
        part = mean[mean.task == task]
        for method, g in part.groupby("method"):
            g = g.sort_values("flops_removed")
            color, marker = METHOD_STYLE.get(method, (None, "x"))
            seeds = g["seeds"] if "seeds" in g else [1]
            std = g["pruned_std"] if "pruned_std" in g else 0.0 * g.pruned
            ax.errorbar(100 * g.flops_removed, 100 * g.pruned, yerr=100 * std, color=color, marker=marker,
                        capsize=3, label=f"{method} ({_seeds_label(seeds)})")
        dense = float(part.dense.mean())
        ax.axhline(100 * dense, color="k", lw=1, label="dense")
        ax.axhline(100 * ratio * dense, color="k", ls="--", lw=1, label=f"{ratio:.0%} of dense")
        ax.set(title=f"{task.upper()}: mean ± sd over seeds", xlabel="FLOPs removed (%)",
               ylabel=f"{part.metric.iloc[0]} (×100)")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    return fig


def kept_heatmap(mean_kept: pd.DataFrame):
    """Per task (one row of panels): heads and neurons side by side, rows = methods (n seeds), columns = layers,
    colour and label = mean over seeds of the fraction of the layer's units kept (`views.mean_kept`).
    A `Note` instead of a figure when there is nothing to draw."""
    if mean_kept.empty or mean_kept.fraction.isna().all():
        return Note("**No per-layer heatmap**: no point summary (summary.json with heads_kept / neurons_kept and "
                    "per-sublayer unit counts) was found at the chosen constraint; looked at each row's `run_dir`, "
                    "then `points_dir/<task>/<method>/c<constraint>/seed<seed>/`.")
    tasks = sorted(mean_kept.task.unique())
    n_methods = mean_kept.method.nunique()
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, len(tasks) * (0.45 * n_methods + 1.6) + 0.4), squeeze=False,
                             constrained_layout=True)
    for row, task in enumerate(tasks):
        part = mean_kept[mean_kept.task == task]
        seeds = part.groupby("method").seeds.max()
        for col, kind in enumerate(("heads", "neurons")):
            ax = axes[row, col]
            sub = part[part.kind == kind]
            grid = sub.pivot(index="method", columns="layer", values="fraction").sort_index()
            im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="Greens", vmin=0, vmax=1)
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if v > 0.6 else "black")
            ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [f"{m} (n={seeds[m]})" for m in grid.index])
            ax.set(xlabel="layer",
                   title=f"{task.upper()} · {kind} kept (fraction), constraint {part.constraint.iloc[0]:g}")
        fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.9, label="fraction kept (mean over seeds)")
    return fig


def pruning_time(times: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    times.plot.bar(ax=ax, color=[METHOD_STYLE.get(m, ("grey",))[0] for m in times.columns])
    ax.set(ylabel="pruning time (s)", title="Pruning time per method", xlabel="task")
    return fig


def latency_table(rows: pd.DataFrame | list[dict], title: str = "") -> plt.Figure:
    """Latency vs units, one panel per sublayer kind (attention: heads; FFN: neurons): the measured medians (dots) and
    the monotone table the latency model uses (line). rows: `LatencyTable.rows()` (kind, units, measured_ms, cost_ms)."""
    df = pd.DataFrame(rows)
    kinds = [k for k in ("mha", "ffn") if k in set(df.kind)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8), squeeze=False, constrained_layout=True)
    for ax, kind in zip(axes.flat, kinds):
        part = df[df.kind == kind].sort_values("units")
        ax.plot(part.units, part.measured_ms, "o", ms=3, color="tab:grey", label="measured (median)")
        ax.plot(part.units, part.cost_ms, "-", color="tab:red", label="monotone table")
        ax.set(xlabel="heads" if kind == "mha" else "neurons", ylabel="ms per batch",
               title=f"{'attention' if kind == 'attention' else 'FFN'} sublayer" + (f" · {title}" if title else ""))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    return fig


def accuracy_vs_latency(points: pd.DataFrame, metric: str = "metric") -> plt.Figure:
    """Dev metric (×100) vs measured latency, one curve per constraint kind (column `kind`: e.g. "latency budget",
    "FLOPs constraint"), one line per seed where there is a `seed` column; the dense model as a star where a row has
    kind "dense". points: kind, measured_ms, metric[, seed]."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    styles = {"latency budget": ("tab:red", "o"), "FLOPs constraint": ("tab:blue", "s"), "dense": ("k", "*")}
    for kind, g in points.groupby("kind", sort=False):
        color, marker = styles.get(kind, (None, "x"))
        # one line per seed where a `seed` column is given (labelled once)
        runs = g.groupby("seed", dropna=False, sort=True) if "seed" in g else [(None, g)]
        for j, (_, r) in enumerate(runs):
            r = r.sort_values("measured_ms")
            ax.plot(r.measured_ms, 100 * r[metric], marker=marker, color=color, ms=9 if kind == "dense" else 6,
                    ls="none" if kind == "dense" else "-", alpha=1.0 if j == 0 else 0.6,
                    label=kind if j == 0 else None)
    ax.set(xlabel="measured latency (ms per batch)", ylabel=f"{metric} (×100)", title="Accuracy vs measured latency")
    ax.legend(fontsize="small")
    return fig


def latency_budget_view(summary: dict):
    """Notebook 04's view of a latency-budget run: the table its search used (`latency_table`), titled with the budget,
    the prediction and the measured latency; a `Note` for a FLOPs-constrained run."""
    if summary.get("latency_budget_ms") is None:
        return Note("FLOPs-constrained run: no latency table (prune with `latency_budget_ms` to get one).")
    from kprune_lib.costs.latency import load_table

    lat = summary["latency"]
    title = (f"{summary['task']}: budget {summary['latency_budget_ms']:.4g} ms, predicted "
             f"{summary['predicted_latency_ms']:.4g}, measured {summary['measured_latency_ms']:.4g} (dense "
             f"{summary['dense_latency_ms']:.4g}); batch {lat['batch']} × {lat['seq']}, {lat['threads']} threads")
    fig = latency_table(load_table(lat["table"]).rows())
    fig.suptitle(title, fontsize="small")
    return fig
