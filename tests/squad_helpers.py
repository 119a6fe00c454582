"""Helpers of the SQuAD and fine-tuning tests: slices of the real dev file, tiny models with a real tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from conftest import GLUE_DIR, MODELS_DIR, SHARED, spread_weights

DEV = SHARED / "data" / "squad" / "dev-v1.1.json"
MINILM = MODELS_DIR / "minilm-l6-mrpc"  # its tokenizer (BERT uncased WordPiece, fast) is all the tests use


def write_slice(path: Path, n_articles: int = 4, n_paragraphs: int = 3, start: int = 0) -> Path:
    """An official-format SQuAD file with the first paragraphs of some articles of the real dev file."""
    raw = json.loads(DEV.read_text())
    data = [{"title": a["title"], "paragraphs": a["paragraphs"][:n_paragraphs]}
            for a in raw["data"][start:start + n_articles]]
    path.write_text(json.dumps({"version": raw["version"], "data": data}))
    return path


def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MINILM)


def tiny_checkpoint(path: Path, head: str = "qa", seed: int = 0, init_std: float | None = 0.2,
                    num_labels: int = 2, label_names: tuple[str, ...] | None = None) -> Path:
    """A tiny random BERT (2 layers, 4 heads of 8, FFN 24, 512 positions) with the MiniLM vocabulary and
    tokenizer, saved as a Hugging Face folder. head: "qa", "classification" (num_labels; 1 = regression), "token"
    (token classification; label_names: its id2label) or "base" (no head)."""
    tok = tokenizer()
    names = dict(id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)}) \
        if label_names else {}
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                  intermediate_size=24, max_position_embeddings=512,
                                  num_labels=len(label_names) if label_names else num_labels,
                                  problem_type="regression" if num_labels == 1 else None, **names)
    auto = {"qa": transformers.AutoModelForQuestionAnswering, "classification": transformers.AutoModelForSequenceClassification,
            "token": transformers.AutoModelForTokenClassification, "base": transformers.AutoModel}[head]
    torch.manual_seed(seed)
    model = auto.from_config(cfg)
    if init_std is not None:
        spread_weights(model, init_std)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def prune_checkpoint_cli(tmp_path: Path, config, task: str, tok=None) -> tuple[dict, Path]:
    """`kprune prune` end to end on a random checkpoint of `config` (weights ~ N(0, 0.2), the MiniLM tokenizer or
    `tok`) saved on disk: an MRPC slice (120 train / 40 dev rows) or a SQuAD slice ("squad": one paragraph per
    article, half the articles the sample), 1000 tokens, 50 % removed. Checks the exit status, the constraint met
    and that the saved folder evaluates to the reported metric; returns (summary, output folder)."""
    from kprune_lib import api, cli

    ckpt, tok = tmp_path / "ckpt", tok or tokenizer()
    torch.manual_seed(0)
    auto = transformers.AutoModelForQuestionAnswering if task == "squad" else \
        transformers.AutoModelForSequenceClassification
    model = auto.from_config(config)
    spread_weights(model)
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    if task == "squad":
        data = dict(eval_file=str(write_slice(tmp_path / "squad.json", n_paragraphs=1)), split_articles=0.5)
        args = ["--eval-file", data["eval_file"], "--split-articles", "0.5"]
    else:
        glue = tmp_path / "glue" / "MRPC"
        glue.mkdir(parents=True)
        for name, n in (("train.tsv", 120), ("dev.tsv", 40)):
            lines = (GLUE_DIR / "MRPC" / name).read_text(encoding="utf-8-sig").splitlines(keepends=True)
            (glue / name).write_text("".join(lines[:n + 1]))
        data = dict(data_dir=str(glue.parent))
        args = ["--data-dir", data["data_dir"]]
    out = tmp_path / "out"
    rc = cli.main(["prune", "--model", str(ckpt), "--task", task, *args, "--num-tokens", "1000", "--constraint",
                   "0.5", "--device", "cpu", "--output", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flops_removed"] >= 0.5 - 1e-9
    again = api.evaluate(str(out / "model"), task, device="cpu", progress=False, **data)
    assert again[summary["metric"]] == pytest.approx(summary["pruned"][summary["metric"]], abs=1e-6)
    return summary, out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and far faster on a busy 2-core machine); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
