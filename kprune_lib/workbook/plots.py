"""Figures of the workbook. Each function takes tables / masks and returns a matplotlib Figure."""
from __future__ import annotations

import math
from typing import NamedTuple

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl", "inline")):
    matplotlib.use("Agg")  # headless (sweeps, tests); notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from kprune_lib import config  # noqa: E402
from kprune_lib.data.tasks import GLUE_TASKS  # noqa: E402
from kprune_lib.method.methods import METHOD_NAMES  # noqa: E402


Style = NamedTuple("Style", [("color", str), ("marker", str), ("linestyle", str)])
# One colour, marker and line style per method of the registry, the same in every figure (tests/test_figures.py
# checks that every registered method has its own). A method an older results table names that the registry no
# longer has is drawn in FALLBACK_STYLE.
METHOD_STYLE: dict[str, Style] = {
    "kprune": Style("#d62728", "o", "-"), "kprune-plus": Style("#2ca02c", "P", "-"),
    "kprune-no-tuning": Style("#ff7f0e", "s", "--"), "kprune-pred-only": Style("#9467bd", "^", "--"),
    "kprune-rep-only": Style("#8c564b", "v", "--"), "kprune-fisher": Style("#bcbd22", "X", "-."),
    "kprune-gn": Style("#17becf", "<", "-."), "kprune-gold": Style("#e377c2", ">", "-."),
    "kprune-damp": Style("#7f7f7f", "d", ":"), "kwon": Style("#1f77b4", "D", "-"),
    "fisher-greedy": Style("#6baed6", "h", "--"), "kwon-fisher": Style("#08519c", "*", "--"),  # (its old name)
    "kcm": Style("#e6550d", "p", "-"),
}
FALLBACK_STYLE = Style("#393b79", "x", ":")
# Task names as the GLUE and SQuAD papers write them (figure titles, table headers), metric names as words.
TASK_NAMES = {name: t.folder for name, t in GLUE_TASKS.items()} | {"squad": "SQuAD v1.1", "squad_v2": "SQuAD v2.0"}
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "spearman": "Spearman ρ", "pearson": "Pearson r",
                "matthews": "Matthews corr.", "exact_match": "exact match"}


def method_style(method: str) -> Style:
    return METHOD_STYLE.get(method, FALLBACK_STYLE)


def task_name(task: str) -> str:  # 'stsb' -> 'STS-B'; a name the task table lacks is returned unchanged
    return TASK_NAMES.get(task, task)


def metric_name(metric: str) -> str:  # 'spearman' -> 'Spearman ρ'
    return METRIC_NAMES.get(metric, str(metric).replace("_", " "))


def ordered(names, order) -> list:
    """The distinct `names` in the order of `order` (the registry's, the GLUE papers'), any others after, sorted."""
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def legend_outside(fig: plt.Figure, handles, labels, title: str | None = None, where: str = "lower center"):
    """One legend for the whole figure, outside every axes: the figure's constrained layout makes room for it."""
    ncol = min(len(labels), max(1, int(fig.get_figwidth() / 2.8))) if "center" in where else 1
    return fig.legend(handles, labels, loc=f"outside {where}", ncol=ncol, fontsize="small", title=title,
                      title_fontsize="small", frameon=False)


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


def _sd_bars(ax, x, y, sd, n, color, method: str) -> None:
    """± sd error bars at the points with n > 1 only (no bar, no cap for one seed), labelled '_sd <method>'."""
    spread = np.asarray(n) > 1
    if spread.any():
        ax.errorbar(np.asarray(x)[spread], np.asarray(y, dtype=float)[spread], yerr=np.asarray(sd, dtype=float)[spread],
                    fmt="none", ecolor=color, elinewidth=1, capsize=3, label=f"_sd {method}", zorder=2)


def _seeds_label(seeds) -> str:
    """'n=3', or 'n=2–3' when the points of a curve have different numbers of seeds."""
    lo, hi = int(np.min(seeds)), int(np.max(seeds))
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def metric_vs_flops(mean: pd.DataFrame, panel: tuple[float, float] = (5.0, 4.2)) -> plt.Figure:
    """Paper-style figure from `views.mean_over_seeds` (metrics ×1, drawn ×100): the main metric against the FLOPs
    removed, one panel per task, one curve per method (its `METHOD_STYLE`): the mean over seeds at each constraint,
    ± one sample sd where n > 1 (no bar for one seed), n in the legend. Markers and x ticks only at the constraints
    measured. Solid black: the dense model; dashed: dense − config.ACCURACY_DROP_POINTS (absolute). A curve equal to
    one drawn before it (e.g. two methods with the same settings) is drawn over it with large hollow markers, and its
    legend entry says so. `panel`: inches per panel; at most 3 panels a row; one legend below the panels."""
    tasks, methods = ordered(mean.task, TASK_NAMES), ordered(mean.method, METHOD_NAMES)
    cols, rows = min(3, len(tasks)), math.ceil(len(tasks) / 3)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False,
                             layout="constrained")
    twins: dict[str, list[str]] = {}
    for ax, task in zip(axes.flat, tasks):
        part = mean[mean.task == task]
        drawn: dict[str, tuple] = {}
        for method in methods:
            g = part[part.method == method].sort_values("constraint")
            if g.empty:
                continue
            style = method_style(method)
            x, y = 100 * g.constraint.to_numpy(dtype=float), 100 * g.pruned.to_numpy(dtype=float)
            same = [m for m, (x0, y0) in drawn.items() if len(x0) == len(x) and np.allclose(x0, x)
                    and np.allclose(y0, y, rtol=0, atol=1e-6)]
            look = dict(mfc="none", ms=12, mew=1.8, zorder=4) if same else dict(ms=6, zorder=3)
            ax.plot(x, y, color=style.color, marker=style.marker, ls=style.linestyle, label=method, **look)
            twins[method] = list(dict.fromkeys(twins.get(method, []) + same))
            drawn[method] = (x, y)
            _sd_bars(ax, x, y, 100 * g.pruned_std, g.seeds, style.color, method)
        dense = 100 * float(part.dense.mean())
        ax.axhline(dense, color="k", lw=1, ls="-", label="_dense")
        ax.axhline(dense - config.ACCURACY_DROP_POINTS, color="k", lw=1, ls="--", label="_threshold")
        ticks = sorted(set(np.round(100 * part.constraint.to_numpy(dtype=float), 6)))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set(title=task_name(task), xlabel="FLOPs removed (%)", ylabel=f"{metric_name(part.metric.iloc[0])} (×100)")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = [], []
    for method in methods:
        style = method_style(method)
        handles.append(Line2D([], [], color=style.color, marker=style.marker, ls=style.linestyle))
        note = f"; hollow where equal to {', '.join(twins[method])}" if twins.get(method) else ""
        labels.append(f"{method} ({_seeds_label(mean[mean.method == method].seeds)}{note})")
    handles += [Line2D([], [], color="k", lw=1, ls="-"), Line2D([], [], color="k", lw=1, ls="--")]
    labels += ["dense", f"dense − {config.ACCURACY_DROP_POINTS:g} points"]
    legend_outside(fig, handles, labels, title="mean ± sd over n seeds (no bar where n = 1)")
    return fig


def kept_heatmap(mean_kept: pd.DataFrame):
    """Per task (one row of panels): heads and neurons side by side, rows = methods (n seeds; labels in the method's
    colour), columns = layers, colour and label = the mean over seeds of the % of the layer's units kept
    (`views.mean_kept`). A `Note` instead of a figure when there is nothing to draw."""
    if mean_kept.empty or mean_kept.fraction.isna().all():
        return Note("**No per-layer heatmap**: no point summary (summary.json with heads_kept / neurons_kept and "
                    "per-sublayer unit counts) was found at the chosen constraint; looked at each row's `run_dir`, "
                    "then `points_dir/<task>/<method>/c<constraint>/seed<seed>/`.")
    tasks = ordered(mean_kept.task, TASK_NAMES)
    n_methods = mean_kept.method.nunique()
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, len(tasks) * (0.45 * n_methods + 1.6) + 0.4), squeeze=False,
                             layout="constrained")
    for row, task in enumerate(tasks):
        part = mean_kept[mean_kept.task == task]
        seeds = part.groupby("method").seeds.max()
        methods = ordered(part.method, METHOD_NAMES)
        for col, kind in enumerate(("heads", "neurons")):
            ax = axes[row, col]
            sub = part[part.kind == kind]
            grid = 100 * sub.pivot(index="method", columns="layer", values="fraction").reindex(methods)
            im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="Greens", vmin=0, vmax=100)
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if v > 60 else "black")
            ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [f"{m} (n={seeds[m]})" for m in grid.index])
            for label, m in zip(ax.get_yticklabels(), grid.index):
                label.set_color(method_style(m).color)
            ax.set(xlabel="layer", title=f"{task_name(task)}: {kind} kept (%), {100 * part.constraint.iloc[0]:g} % "
                                         "FLOPs removed")
        fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.9, label="units kept (%, mean over seeds)")
    return fig


def pruning_time(times: pd.DataFrame) -> plt.Figure:
    """Bars per task and method of `views.pruning_times` (task, method, mean, sd, n): the mean pruning time over the
    points (constraints × seeds), ± one sample sd where n > 1, n in the legend."""
    tasks, methods = ordered(times.task, TASK_NAMES), ordered(times.method, METHOD_NAMES)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(tasks) * max(1, len(methods)) / 2 + 2), 4.2),
                           layout="constrained")
    width = 0.8 / len(methods)
    handles, labels = [], []
    for j, method in enumerate(methods):
        g = times[times.method == method].set_index("task").reindex(tasks)
        x = np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width
        ok, style = g["mean"].notna().to_numpy(), method_style(method)
        bars = ax.bar(x[ok], g["mean"][ok], width, color=style.color, label=method)
        _sd_bars(ax, x[ok], g["mean"][ok], g["sd"][ok], g.n[ok], "k", method)
        handles.append(bars)
        labels.append(f"{method} ({_seeds_label(g.n[ok])})")
    ax.set_xticks(range(len(tasks)), [task_name(t) for t in tasks])
    ax.set(ylabel="pruning time (s)", xlabel="task", title="Pruning time per task and method")
    legend_outside(fig, handles, labels, title="mean ± sd over n points (constraints × seeds); no bar where n = 1")
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
               title=f"{'attention' if kind == 'mha' else 'FFN'} sublayer" + (f" · {title}" if title else ""))
        ax.set_ylim(bottom=0)
    legend_outside(fig, *axes.flat[0].get_legend_handles_labels(), where="right")
    return fig


def accuracy_vs_latency(points: pd.DataFrame, metric: str = "metric", label: str = "accuracy") -> plt.Figure:
    """Dev metric `label` (column `metric`, ×1, drawn ×100) vs measured latency, one curve per constraint kind
    (column `kind`: e.g. "latency budget", "FLOPs constraint"), one line per seed where there is a `seed` column (n in
    the legend); the dense model as a star where a row has kind "dense". points: kind, measured_ms, metric[, seed]."""
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    styles = {"latency budget": ("tab:red", "o"), "FLOPs constraint": ("tab:blue", "s"), "dense": ("k", "*")}
    for kind, g in points.groupby("kind", sort=False):
        color, marker = styles.get(kind, (None, "x"))
        # one line per seed where a `seed` column is given (labelled once, with n)
        runs = list(g.groupby("seed", dropna=False, sort=True)) if "seed" in g else [(None, g)]
        name = f"{kind} (n={len(runs)} seeds, a line each)" if kind != "dense" and len(runs) > 1 else kind
        for j, (_, r) in enumerate(runs):
            r = r.sort_values("measured_ms")
            ax.plot(r.measured_ms, 100 * r[metric], marker=marker, color=color, ms=9 if kind == "dense" else 6,
                    ls="none" if kind == "dense" else "-", alpha=1.0 if j == 0 else 0.6, label=name if j == 0 else None)
    ax.set(xlabel="measured latency (ms per batch)", ylabel=f"{metric_name(label)} (×100)",
           title="Accuracy vs measured latency")
    legend_outside(fig, *ax.get_legend_handles_labels(), where="right")
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


def stages_view(summary: dict):
    """Notebook 04's view of a method that records stages (kwon: search → rearrange → rescale; kcm: select →
    merge): the dev metric after each stage against the dense model's, and how many heads and neurons changed
    state (kept ↔ pruned) at each stage; a `Note` for a method without stages."""
    stages = summary.get("stages")
    if not stages:
        return Note(f"{summary['method']} records no stages (kwon and kcm do).")
    metric = summary["metric"]
    names = [s["stage"] for s in stages]
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4), layout="constrained")
    style = method_style(summary["method"])
    dev = [s["dev"][metric] if "dev" in s else np.nan for s in stages]
    left.plot(x, dev, color=style.color, marker=style.marker, linestyle=style.linestyle, label=summary["method"])
    left.axhline(summary["dense"][metric], color="black", linestyle="--", linewidth=1, label="dense")
    left.set(xticks=x, xticklabels=names, xlabel="after stage", ylabel=f"dev {metric_name(metric)}")
    left.legend(frameon=False, fontsize="small")
    width = 0.38
    for offset, key, label, color in ((-width / 2, "changed_heads", "heads", "#4c72b0"),
                                      (width / 2, "changed_neurons", "neurons", "#dd8452")):
        right.bar(x + offset, [s.get(key, 0) for s in stages], width, label=label, color=color)
    right.set(xticks=x, xticklabels=names, xlabel="stage", ylabel="units that changed state",
              yscale="symlog")
    right.legend(frameon=False, fontsize="small")
    fig.suptitle(f"{task_name(summary['task'])} · {summary['method']} · {summary['flops_removed']:.0%} of FLOPs "
                 "removed: stage by stage", fontsize="medium")
    return fig
