"""OUT/model/README.md: a Hugging Face model card for a pruned model, written from its summary.json.

YAML front matter (library_name, tags, base_model when the checkpoint was a hub id, pipeline_tag, datasets, metrics),
then the task, method and hyper-parameters, FLOPs and parameters dense → pruned, dev metrics dense → pruned, the
measured speedup when the summary has one, the kept heads / neurons per layer, the command that reproduces the model,
how to load it, and the paper.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from kprune_lib.encoder.arch import TABLES, base_type
from kprune_lib.config import PruneConfig

CARD_FILE = "README.md"
PAPER = ("Seungcheol Park, Hojun Choi, U Kang. *Accurate Retraining-free Pruning for Pretrained Encoder-based "
         "Language Models.* ICLR 2024.")
BIBTEX = """@inproceedings{park2024kprune,
  title     = {Accurate Retraining-free Pruning for Pretrained Encoder-based Language Models},
  author    = {Park, Seungcheol and Choi, Hojun and Kang, U},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024}
}"""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DATASETS = {"squad": "rajpurkar/squad", "squad_v2": "rajpurkar/squad_v2"}  # GLUE tasks: nyu-mll/glue
_METRIC_IDS = {"matthews": "matthews_correlation", "spearman": "spearmanr", "pearson": "pearsonr"}
_FLAGS = {"tuning": (False, "--no-tuning"), "gold_first": (True, "--gold-first")}  # switches of `kprune prune`
_NO_FLAG = ("ridge",)  # API-only options: the command line cannot express them


def hub_id(model: str) -> str | None:
    """`model` if it names a hub repository (not a local folder), else None."""
    return model if not Path(model).exists() and _HUB_ID.match(model) and ".." not in model else None


def options(call: dict, config: PruneConfig, defaults: dict) -> dict:
    """The arguments of a prune call that differ from their defaults (`defaults`: the function's own; model, task and
    output have none), then the config fields that differ from `PruneConfig()`'s."""
    fields = {k: v for k, v in config.to_dict().items() if v != getattr(PruneConfig(), k)}
    return {**{k: v for k, v in call.items() if k not in defaults or v != defaults[k]}, **fields}


def reproduction(call: dict, config: PruneConfig, defaults: dict, command: str | None = None) -> tuple[str | None, str]:
    """(command line, Python call) for the card: the given command if any, else the equivalent `kprune prune`."""
    opts = options(call, config, defaults)
    return command or command_line(opts), python_call(opts)


def python_call(opts: dict) -> str:
    args = [repr(opts[k]) for k in ("model", "task", "output")]
    args += [f"{k}={v!r}" for k, v in opts.items() if k not in ("model", "task", "output")]
    return "import kprune_lib as kp\n\nsummary = kp.prune(" + ", ".join(args) + ")"


def command_line(opts: dict) -> str | None:
    """The equivalent `kprune prune …` command, or None when an option has no command-line flag."""
    if any(k in opts for k in _NO_FLAG):
        return None
    words = ["kprune", "prune"]
    for k, v in opts.items():
        if k in _FLAGS:
            if v == _FLAGS[k][0]:
                words.append(_FLAGS[k][1])
            continue
        words += ["--" + k.replace("_", "-"), str(v)]
    return shlex.join(words)


def _constraint_text(summary: dict) -> str:
    """What the run was pruned to: a FLOPs fraction, or a latency budget (with the measured latency)."""
    if summary.get("latency_budget_ms") is None:
        return f"remove {100 * summary['constraint']:.0f} % of the FLOPs"
    lat = summary.get("latency", {})
    return (f"a latency budget of {summary['latency_budget_ms']:.4g} ms per batch of {lat.get('batch')} × "
            f"{lat.get('seq')} tokens on {lat.get('device_name', lat.get('device'))} ({lat.get('threads')} threads; "
            f"dense {summary['dense_latency_ms']:.4g} ms, pruned {summary['measured_latency_ms']:.4g} ms measured)")


def _metric_value(task: str, value: float) -> str:
    return f"{value:.2f}" if task in _DATASETS else f"{100 * value:.2f}"  # SQuAD scores are percentages already


def _front_matter(summary: dict) -> dict:
    task = summary["task"]
    front = {"library_name": "transformers",
             "tags": ["pruning", "kprune", "structured-pruning", "retraining-free", task]}
    base = hub_id(summary["model"])
    if base:
        front["base_model"] = base
    front["pipeline_tag"] = "question-answering" if task in _DATASETS else \
        "token-classification" if is_token(summary) else "text-classification"
    if not is_token(summary):  # token classification: the user's own files, no hub data set
        front["datasets"] = [_DATASETS.get(task, "nyu-mll/glue")]
    front["metrics"] = [_METRIC_IDS.get(m, m) for m in summary["dense"] if not m.endswith("_mm")]
    return front


def _rows(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _results(summary: dict) -> list[str]:
    """FLOPs, parameters and every dev metric, dense and pruned; the measured speedup if the summary has one."""
    task, metric = summary["task"], summary["metric"]
    rows = [[f"encoder FLOPs per example (GFLOPs, L_seq = {summary['seq_len']:.2f})",
             f"{summary['flops_dense'] / 1e9:.4f}", f"{summary['flops_pruned'] / 1e9:.4f}"],
            ["parameters (whole model)", f"{summary['params_dense']:,}", f"{summary['params_pruned']:,}"]]
    scale = "" if task in _DATASETS else " (×100)"
    rows += [[f"{m}{scale}" + (" (main)" if m == metric else ""), _metric_value(task, summary["dense"][m]),
              _metric_value(task, summary["pruned"][m])] for m in summary["dense"]]
    lines = _rows(["", "dense", "pruned"], rows) + [""]
    if summary.get("neurons_physical", summary["neurons_kept"]) != summary["neurons_kept"]:
        extra = summary["flops_physical"] / summary["flops_pruned"] - 1
        lines += [f"The saved FFN widths are padded up to multiples of {summary['ffn_width_multiple']} with inert "
                  f"neurons (zero weights: the outputs are those of the kept neurons alone), which matrix kernels run "
                  f"faster: widths {summary['neurons_physical']} for {summary['neurons_kept']} kept neurons, "
                  f"{summary['flops_physical'] / 1e9:.4f} GFLOPs per example (+{100 * extra:.2f} %).", ""]
    if "latency_speedup" in summary:
        return lines + [f"Measured speedup: **{summary['latency_speedup']:.2f}×** (dev set, batch "
                        f"{summary.get('latency_batch_size', '?')}, {summary.get('device', 'cpu')}).", ""]
    return lines + ["Speedup: not measured when this model was written (FLOPs ratio "
                    f"{summary['flops_dense'] / summary['flops_pruned']:.2f}×).", ""]


def _architecture_flops_note(config: dict) -> list[str]:
    """DeBERTa and ModernBERT: what their FLOPs count beyond BERT's (`costs.flops.position_flops`, the gated FFN of
    `costs.flops.neuron_flops`); nothing for other models."""
    if base_type(config["model_type"]) == "modernbert":
        return ["ModernBERT's FLOPs count its gated FFN: a neuron has an input row, a gate row and an output column "
                "(6·L·d per neuron); rotary positions, like LayerNorm, are not counted, and a sliding-window layer's "
                "attention is counted over the whole sequence, as its padded kernel computes it.", ""]
    if base_type(config["model_type"]) != "deberta-v2" or not config.get("relative_attention"):
        return []
    terms = " and ".join(config.get("pos_att_type") or []) or "no"
    return [f"DeBERTa's FLOPs include its relative-position terms ({terms}): every kept head projects the "
            "relative-position embeddings and scores each token against them; the projection is counted once per "
            "example (a batch of one).", ""]


def is_token(summary: dict) -> bool:
    """Whether the summary is a token-classification run (its data block says so)."""
    return (summary.get("data") or {}).get("task_type") == "token-classification"


def _usage(task: str, token: bool = False) -> list[str]:
    head = "QuestionAnswering" if task in _DATASETS else "TokenClassification" if token else "SequenceClassification"
    return ["## Use it", "", "With stock transformers (the model code in this folder runs, hence `trust_remote_code`):",
            "", "```python", f"from transformers import AutoModelFor{head}, AutoTokenizer", "",
            'path = "."  # this folder, or its hub repository id',
            "tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)",
            f"model = AutoModelFor{head}.from_pretrained(path, trust_remote_code=True)", "```", "",
            "With kprune installed, `import kprune_lib` registers the model classes (no `trust_remote_code` "
            "needed), and `kprune_lib.load_pruned(path)` or `kprune evaluate --model path` load it too. "
            "`kprune.json` records the kept unit indices and the pruning provenance.", ""]


def model_card(summary: dict, config: dict, command: str | None = None, python: str | None = None) -> str:
    """The card's text. summary: OUT/summary.json; config: OUT/model/config.json (dense head / FFN counts)."""
    task = summary["task"]
    table = TABLES[base_type(config["model_type"])]
    heads, ffn = config[table.heads_attr], config[table.ffn_attr]
    removed = 100 * summary["flops_removed"]
    base = hub_id(summary["model"])
    hp = summary.get("hyperparameters", {})
    lines = ["---", yaml.safe_dump(_front_matter(summary), sort_keys=False).rstrip(), "---", "",
             f"# {Path(summary['model']).name} on {task}, pruned with kprune ({removed:.1f} % of FLOPs removed)", "",
             f"`{summary['model']}` ({'a hub checkpoint' if base else 'a local checkpoint folder'}) fine-tuned on "
             f"**{task}**, with attention heads and FFN neurons removed by kprune (`--method {summary['method']}`) "
             "without retraining: no gradient step was taken" + (
                 "; the surviving output projections were re-fitted by least squares on a small sample of the "
                 "training data" if hp.get("tuning") else "") + ". The layers now have different widths (table "
             "below), so the folder carries its own model code (`modeling_kprune.py`).", "",
             "## Results (dev set)", ""] + _results(summary) + _architecture_flops_note(config)
    lines += ["## Method and hyper-parameters", "",
              f"K-prune ({PAPER}): knowledge measurement, knowledge-preserving mask search and weight tuning, "
              f"sublayer by sublayer; `{summary['method']}` is "
              + ("the paper's method" if summary["method"] == "kprune" else "a variant or baseline, see the kprune "
                 "README") + f". Constraint: {_constraint_text(summary)}; sample: {summary['num_tokens']:,} tokens "
              f"({summary.get('sample_examples', '?')} examples), seed {summary['seed']}; pruning took "
              f"{summary.get('pruning_seconds', float('nan')):.0f} s on {summary.get('device', '?')}.", ""]
    lines += _rows(["hyper-parameter", "value"], [[k, f"`{v}`"] for k, v in hp.items()]) + [""]
    lines += ["## Kept attention heads and FFN neurons per layer", ""]
    lines += _rows(["layer", f"heads (of {heads})", f"neurons (of {ffn})"],
                   [[i, h, n] for i, (h, n) in enumerate(zip(summary["heads_kept"], summary["neurons_kept"]))]) + [""]
    lines += ["## Reproduce", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    if python:
        lines += ["The same run from Python:" if command else "From Python:", "", "```python", python, "```", ""]
    lines += _usage(task, is_token(summary)) + ["## Citation", "", "```bibtex", BIBTEX, "```", ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, summary: dict, command: str | None = None,
                     python: str | None = None) -> Path:
    """Write model_dir/README.md (rewrite it, e.g. after measuring latency, with the summary's latency keys)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    path = model_dir / CARD_FILE
    path.write_text(model_card(summary, config, command, python))
    return path
