"""The method registry: every method, ablation and baseline `--method` offers, declared once with its traits.

The CLI (choices and help), the API (what a method accepts, how its sample is batched), the loop's dispatch
(`baselines.run_method`), the sweeps (grid validation) and the tests (one end-to-end run per entry) all read
`REGISTRY`; nothing else names a method. Adding a method = one `Method(...)` entry here (and, for a new
algorithm, its branch in `baselines.run_method`); tests/test_methods_e2e.py then runs it end to end.

A method's `settings` are the `PruneConfig` fields it fixes (`resolve`): e.g. kprune-pred-only is the paper's
loop with λ_rep = 0. `algorithm` names the code that runs it: "kprune" (the paper's Algorithm 1,
`prune.kprune`), "kwon" (Kwon et al.'s pipeline, `kwon.kwon`), "kcm" (Nova et al.'s KCM, `kcm.kcm`) or
"fisher-greedy" (`baselines.kwon_fisher`).

`ALIASES`: deprecated names still accepted for one release (`get` gives the entry under the old name, so a run
asked for by it is recorded and reported under it, exactly as before).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any

from kprune_lib.config import Budget, PruneConfig

PROBLEMS = ("classification", "regression", "qa", "token")  # token: token classification (NER), per labelled token
BUDGET_KINDS = ("flops", "latency")


@dataclass(frozen=True)
class Method:
    name: str
    role: str  # "method" (the paper's), "plus" (K-prune+), "candidate" (a K-prune+ candidate), "ablation", "baseline"
    summary: str  # one line: what it changes, for --help and the docs
    algorithm: str = "kprune"  # "kprune" | "kwon" (kwon.kwon) | "kcm" (kcm.kcm) | "fisher-greedy" (baselines.kwon_fisher)
    settings: dict[str, Any] = field(default_factory=dict)  # the PruneConfig fields it fixes
    needs_labels: bool = False  # the sample must carry gold labels (class, score or answer span)
    budgets: tuple[str, ...] = BUDGET_KINDS  # budget kinds it accepts
    problems: tuple[str, ...] = PROBLEMS  # task kinds it supports
    dense_only: bool = False  # refuses a model pruned before
    batches_as_drawn: bool = False  # computes on the sample batches as drawn (its signal depends on the batching)
    sample_examples: int | None = None  # draws exactly this many examples, whatever num_tokens (kwon: its main.py's)
    # what a latency budget is met by: "table" (the latency table's prediction, `LatencyTable.predict`) or "fit"
    # (kwon: its piecewise-linear fits of the table, `kwon.fit_latency_fn`; the table's prediction may exceed it)
    latency_model: str = "table"

    def check(self, problem: str, budget: str) -> None:
        """One-line errors for a task kind or budget kind this method does not take."""
        if problem not in self.problems:
            why = (f"gold labels of a {' / '.join(self.problems)} task" if self.needs_labels
                   else "a classification or regression head")
            raise ValueError(f"--method {self.name} needs {why}, so it does not support {problem} tasks; use one of "
                             f"{supporting(problem=problem)}")
        if budget not in self.budgets:
            raise ValueError(f"--method {self.name} takes a FLOPs --constraint only; a latency budget needs one of "
                             f"{supporting(budget=budget)}")


_K_PLUS_SETTINGS = {"damping": 0.01}  # what the accuracy protocol kept for K-prune+ (benchmarks/ACCURACY.md)

REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("kprune", "method", "the paper's method (KPRUNE_SPEC.md)"),
    Method("kprune-plus", "plus", "K-prune+: KPWT damped toward the current weights (δ = 1 % of mean diag AᵀA)",
           settings=_K_PLUS_SETTINGS),
    Method("kprune-no-tuning", "ablation", "KPWT off: masks from KPMS, weights untouched", settings={"tuning": False}),
    Method("kprune-pred-only", "ablation", "λ_rep = 0: scores from predictive knowledge only",
           settings={"lam_rep": 0.0}),
    Method("kprune-rep-only", "ablation", "λ_pred = 0: scores from representational knowledge only",
           settings={"lam_pred": 0.0}),
    Method("kprune-fisher", "candidate", "per-example empirical Fisher Σ_i ½ g_i² for predictive knowledge",
           settings={"pred_knowledge": "example"}),
    Method("kprune-gn", "candidate", "Gauss-Newton curvature ½ JᵀHJ of the predictive loss, per example",
           settings={"pred_knowledge": "gauss-newton"}, problems=("classification", "regression")),
    Method("kprune-gold", "candidate", "gold-label loss at s = 0, where the teacher's gradient vanishes",
           settings={"gold_first": True}, needs_labels=True, problems=("classification", "regression")),
    Method("kprune-damp", "candidate", "KPWT damped toward the current weights (δ = 1 % of mean diag AᵀA)",
           settings=_K_PLUS_SETTINGS),
    # KPWT off (tuning False): kwon's own weight update is its mask rescaling, folded into the weights
    Method("kwon", "baseline", "Kwon et al. (2022) as its authors run it: gold-label Fisher of head/neuron masks on "
           "2048 examples, search over the head/neuron split (teacher at √kept), per-layer rearrangement, LSMR mask "
           "rescaling folded into the weights (docs/baselines.md)",
           algorithm="kwon", settings={"tuning": False}, needs_labels=True,
           problems=("classification", "regression", "qa"), dense_only=True, batches_as_drawn=True,
           sample_examples=2048,
           latency_model="fit"),
    Method("fisher-greedy", "ablation", "kwon's Fisher scores, one global greedy Fisher/FLOPs selection: no split "
           "search, no rearrangement, no rescaling, no tuning (was kwon-fisher)",
           algorithm="fisher-greedy", settings={"tuning": False}, needs_labels=True, budgets=("flops",),
           problems=("classification", "regression"), dense_only=True, batches_as_drawn=True),
    Method("kcm", "baseline", "KCM (Nova et al., 2023): FFN neurons ranked per layer without gradients or labels by "
           "R2 (greedy kernelized convex hull of their weights) merged with D2 (votes of unlabeled examples), pruned "
           "neurons merged into the kept ones; uniform per layer, heads only beyond the FFNs' reach "
           "(docs/baselines.md)",
           algorithm="kcm", settings={"tuning": False}, budgets=("flops",), dense_only=True),
)}
ALIASES: dict[str, str] = {"kwon-fisher": "fisher-greedy"}  # deprecated name -> registry name; kept for one release
METHOD_NAMES = tuple(REGISTRY) + tuple(ALIASES)  # every name --method accepts, the deprecated aliases last


def get(name: str) -> Method:
    """The registry entry of `name`; a deprecated alias gives its entry under the alias (same algorithm, settings
    and traits), with a DeprecationWarning."""
    if name in ALIASES:
        warnings.warn(f"--method {name} is deprecated and will be removed in the next release: it is "
                      f"{ALIASES[name]}", DeprecationWarning, stacklevel=2)
        return replace(REGISTRY[ALIASES[name]], name=name)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}") from None


def supporting(problem: str | None = None, budget: str | None = None) -> str:
    """The names of the methods that support a task kind and / or a budget kind (for error messages)."""
    ok = [m.name for m in REGISTRY.values() if (problem is None or problem in m.problems)
          and (budget is None or budget in m.budgets)]
    return ", ".join(ok)


def configure(config: PruneConfig | None = None, **settings) -> PruneConfig:
    """`config` (default `PruneConfig()`) with keyword settings of its fields: how every entry that takes a config
    also takes its fields by name (`api.prune`, `loop.kprune`). A constraint given by name beside a latency budget is
    refused (`Budget.of`: exactly one of the two), though it equals the default constraint."""
    configured = replace(config or PruneConfig(), **settings)
    if "constraint" in settings:
        Budget.of(settings["constraint"], configured.latency_budget_ms)
    return configured


def resolve(config):
    """The PruneConfig a method really runs with: its settings applied (e.g. kprune-pred-only -> λ_rep = 0).
    kprune with tuning=False is kprune-no-tuning (the same run, named for what it is)."""
    method = get(config.method)
    if method.name == "kprune" and not config.tuning:
        return replace(config, method="kprune-no-tuning")
    names = {f.name for f in fields(config)}
    unknown = set(method.settings) - names
    if unknown:  # a registry entry naming a field PruneConfig lacks: a programming error, caught by the tests
        raise TypeError(f"method {method.name}: settings {sorted(unknown)} are not PruneConfig fields")
    return replace(config, **method.settings)


def check(config, problem: str) -> None:
    """One-line errors, before any work, for a resolved config its task kind cannot run: the method's traits
    (task kinds, budget kinds), then settings given by hand that need a GLUE head (--gold-first, gauss-newton)."""
    get(config.method).check(problem, "flops" if config.latency_budget_ms is None else "latency")
    if problem in ("qa", "token") and (config.gold_first or config.pred_knowledge == "gauss-newton"):
        raise ValueError("--gold-first and --pred-knowledge gauss-newton need a classification or regression head; "
                         f"for {'SQuAD' if problem == 'qa' else 'token classification'} use --pred-knowledge "
                         "batch|example")


def require_dense(arch, name: str) -> None:
    """The one-line refusal of a method that prunes dense models only (`Method.dense_only`: kwon, fisher-greedy,
    kcm), given a model pruned before (`Arch.is_dense`)."""
    if not arch.is_dense:
        raise ValueError(f"{name} prunes dense models only and this one was pruned before: use --method kprune, "
                         f"or give {name} the original checkpoint")


def same_settings(name: str) -> str | None:
    """Another registered method that runs exactly `name`'s settings with the same algorithm (kprune-plus ->
    kprune-damp), if any: its runs can be shared."""
    m = get(name)
    for other in REGISTRY.values():
        if other.name != name and other.algorithm == m.algorithm and other.settings == m.settings \
                and other.role == "candidate":
            return other.name
    return None


def methods_by_role() -> str:
    """The registry's names grouped by role (`kprune prune --help`)."""
    roles = {"method": "the paper's", "plus": "K-prune+", "candidate": "K-prune+ candidates", "ablation": "ablations",
             "baseline": "baseline"}
    groups = [f"{label}: {', '.join(m.name for m in REGISTRY.values() if m.role == role)}"
              for role, label in roles.items() if any(m.role == role for m in REGISTRY.values())]
    groups += [f"deprecated: {alias} (= {name})" for alias, name in ALIASES.items()]
    return "; ".join(groups)


def format_methods() -> str:
    """`kprune methods`: one line per registered method."""
    rows = [("method", "role", "labels", "budgets", "tasks", "what it is")]
    for m in REGISTRY.values():
        tasks = "all" if set(m.problems) == set(PROBLEMS) else "GLUE"
        rows.append((m.name, m.role, "gold" if m.needs_labels else "none", "+".join(m.budgets), tasks, m.summary))
    for alias, name in ALIASES.items():
        rows.append((alias, "alias", "", "", "", f"deprecated name of {name}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)
