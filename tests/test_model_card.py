"""OUT/model/README.md: Hugging Face model-card front matter, numbers equal to summary.json, a runnable command."""
import ast
import json
import re
import shlex

import yaml

from kprune_lib.cli import build_parser
from kprune_lib.config import PruneConfig
from kprune_lib.artifacts.model_card import command_line, model_card, options, python_call
from test_notebooks import make_tiny_checkpoint, make_tiny_glue, needs_fixtures

BERT_CONFIG = {"model_type": "kprune-bert", "num_attention_heads": 4, "intermediate_size": 48}


def front_matter(card: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert m, "the card must start with YAML front matter"
    return yaml.safe_load(m.group(1))


def table_row(card: str, label: str) -> list[str]:
    """The cells after the first one of the table row whose first cell starts with label."""
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(label):
            return cells[1:]
    raise AssertionError(f"no row {label!r}")


def summary_for(task="mrpc", model="/nonexistent/local-looking/../ckpt", **kw):
    s = {"task": task, "model": model, "method": "kprune", "constraint": 0.5, "num_tokens": 1000, "seed": 0,
         "sample_examples": 18, "seq_len": 54.14, "flops_dense": 2.3e6, "flops_pruned": 1.2e6, "flops_removed": 0.48,
         "params_dense": 1009346, "params_pruned": 1000726, "metric": "accuracy",
         "dense": {"accuracy": 0.8125, "f1": 0.75}, "pruned": {"accuracy": 0.796875, "f1": 0.7},
         "heads_kept": [0, 3], "neurons_kept": [13, 31], "pruning_seconds": 9.0, "device": "cpu",
         "hyperparameters": PruneConfig().to_dict()}
    return {**s, **kw}


def test_front_matter_and_base_model():
    hub = front_matter(model_card(summary_for(model="M-FAC/bert-mini-finetuned-mrpc"), BERT_CONFIG))
    assert hub["library_name"] == "transformers" and {"pruning", "kprune"} <= set(hub["tags"])
    assert hub["base_model"] == "M-FAC/bert-mini-finetuned-mrpc"
    assert hub["pipeline_tag"] == "text-classification" and hub["datasets"] == ["nyu-mll/glue"]
    assert hub["metrics"] == ["accuracy", "f1"]
    local = front_matter(model_card(summary_for(model="/tmp"), BERT_CONFIG))  # an existing local folder
    assert "base_model" not in local
    qa = front_matter(model_card(summary_for(task="squad", model="/tmp", metric="f1", dense={"exact_match": 40.0,
                                                                                          "f1": 56.0},
                                             pruned={"exact_match": 38.0, "f1": 53.3}), BERT_CONFIG))
    assert qa["pipeline_tag"] == "question-answering" and qa["datasets"] == ["rajpurkar/squad"]


def test_numbers_and_tables_come_from_the_summary():
    card = model_card(summary_for(latency_speedup=1.734, latency_batch_size=32), BERT_CONFIG)
    assert table_row(card, "accuracy") == ["81.25", "79.69"] and table_row(card, "f1") == ["75.00", "70.00"]
    assert table_row(card, "parameters") == ["1,009,346", "1,000,726"]
    assert table_row(card, "encoder FLOPs") == ["0.0023", "0.0012"]
    assert table_row(card, "0") == ["0", "13"] and table_row(card, "1") == ["3", "31"]
    assert "heads (of 4)" in card and "neurons (of 48)" in card
    assert "**1.73×**" in card and "batch 32" in card
    assert "ICLR 2024" in card and "Accurate Retraining-free Pruning" in card
    assert "trust_remote_code=True" in card
    squad = model_card(summary_for(task="squad", metric="f1", dense={"exact_match": 40.78, "f1": 55.99},
                                   pruned={"exact_match": 38.0, "f1": 53.28}), BERT_CONFIG)
    assert table_row(squad, "exact_match") == ["40.78", "38.00"]  # SQuAD scores are percentages already


def test_command_line_and_python_call_are_equivalent_and_valid():
    defaults = {"data_dir": None, "device": "auto", "split_seed": 0, "seq_len": None}
    call = {"model": "ckpt", "task": "stsb", "output": "out dir", "data_dir": "glue", "device": "auto", "split_seed": 0,
            "seq_len": None}
    opts = options(call, PruneConfig(constraint=0.7, tuning=False, gold_first=True, batch_tokens=0), defaults)
    cmd = command_line(opts)
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert (args.model, args.task, args.output, args.data_dir, args.constraint, args.no_tuning, args.gold_first,
            args.batch_tokens, args.device) == ("ckpt", "stsb", "out dir", "glue", 0.7, True, True, 0, "auto")
    kwargs = {k.arg: ast.literal_eval(k.value) for k in ast.parse(python_call(opts)).body[1].value.keywords}
    assert kwargs == {"data_dir": "glue", "constraint": 0.7, "tuning": False, "gold_first": True, "batch_tokens": 0}
    assert command_line(options(call, PruneConfig(ridge=1e-3), defaults)) is None  # no such flag: Python only


@needs_fixtures
def test_prune_writes_the_card(tmp_path):
    import kprune_lib as kp

    ckpt, glue = make_tiny_checkpoint(tmp_path / "ckpt"), make_tiny_glue(tmp_path / "glue")
    out = tmp_path / "out"
    summary = kp.prune(str(ckpt), "mrpc", str(out), data_dir=str(glue), device="cpu", progress=False,
                       num_tokens=1000, constraint=0.6)
    card = (out / "model" / "README.md").read_text()
    assert json.loads((out / "summary.json").read_text())["heads_kept"] == summary["heads_kept"]
    front = front_matter(card)
    assert front["pipeline_tag"] == "text-classification" and "base_model" not in front  # a local checkpoint
    for m in ("accuracy", "f1"):
        assert table_row(card, m) == [f"{100 * summary['dense'][m]:.2f}", f"{100 * summary['pruned'][m]:.2f}"]
    assert table_row(card, "parameters") == [f"{summary['params_dense']:,}", f"{summary['params_pruned']:,}"]
    for i, (h, n) in enumerate(zip(summary["heads_kept"], summary["neurons_kept"])):
        assert table_row(card, str(i)) == [str(h), str(n)]
    cmd = re.search(r"```bash\n(.*?)\n```", card, re.S).group(1)
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert (args.model, args.output, args.data_dir, args.num_tokens, args.constraint, args.device) == \
        (str(ckpt), str(out), str(glue), 1000, 0.6, "cpu")
    assert f"{summary['flops_removed'] * 100:.1f} % of FLOPs removed" in card
    # the saved FFN widths are the kept counts padded to multiples of 16 (inert neurons), and the card says so
    from kprune_lib.encoder.physical import aligned_width

    assert summary["neurons_physical"] == [aligned_width(n, 48) for n in summary["neurons_kept"]]
    assert summary["neurons_physical"] != summary["neurons_kept"]  # this run's counts are not all multiples of 16
    assert f"widths {summary['neurons_physical']} for {summary['neurons_kept']} kept neurons" in card
    assert json.loads((out / "model" / "config.json").read_text())["intermediate_sizes"] == summary["neurons_physical"]
