"""Helpers of the SQuAD and fine-tuning tests: slices of the real dev file, tiny models with a real tokenizer."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers

from conftest import GLUE_DIR, MODELS_DIR, ROOT, SHARED, spread_weights

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


CLI_TASKS = ("mrpc", "stsb", "squad", "ner")  # one of each task kind: classification, regression, QA, token


def prune_checkpoint_cli(tmp_path: Path, config, task: str, tok=None) -> tuple[dict, Path]:
    """`kprune prune` end to end on a random checkpoint of `config` (weights ~ N(0, 0.2), the MiniLM tokenizer or
    `tok`) saved on disk, for one task of each kind (`CLI_TASKS`): an MRPC or STS-B slice (120 train / 40 dev rows;
    STS-B: the config made a regressor), a SQuAD slice ("squad": one paragraph per article, half the articles the
    sample) or token-classification files ("ner": benchmarks/ner_corpus.py's IOB tags, 240 / 80 sentences; the
    config made a token classifier with those tag names); 1000 tokens, 50 % removed. Checks the exit status, the
    constraint met and that the saved folder evaluates to the reported metric; returns (summary, output folder)."""
    from kprune_lib import api, cli

    ckpt, tok = tmp_path / "ckpt", tok or tokenizer()
    config = copy.deepcopy(config)
    auto = {"squad": transformers.AutoModelForQuestionAnswering,
            "ner": transformers.AutoModelForTokenClassification}.get(task, transformers.AutoModelForSequenceClassification)
    if task == "stsb":
        config.num_labels, config.problem_type = 1, "regression"
    if task == "ner":
        ner = ner_corpus_module()
        config.id2label, config.label2id = dict(enumerate(ner.LABELS)), {n: i for i, n in enumerate(ner.LABELS)}
    torch.manual_seed(0)
    model = auto.from_config(config)
    spread_weights(model)
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    if task == "squad":
        data = dict(eval_file=str(write_slice(tmp_path / "squad.json", n_paragraphs=1)), split_articles=0.5)
        args = ["--task", task, "--eval-file", data["eval_file"], "--split-articles", "0.5"]
    elif task == "ner":
        train = ner.write(ner.corpus(GLUE_DIR, "train", 240), tmp_path / "train.jsonl")
        data = dict(validation_file=str(ner.write(ner.corpus(GLUE_DIR, "validation", 80), tmp_path / "dev.jsonl")))
        args = ["--train-file", str(train), "--validation-file", data["validation_file"]]
    else:
        folder = {"mrpc": "MRPC", "stsb": "STS-B"}[task]
        glue = tmp_path / "glue" / folder
        glue.mkdir(parents=True)
        for name, n in (("train.tsv", 120), ("dev.tsv", 40)):
            lines = (GLUE_DIR / folder / name).read_text(encoding="utf-8-sig").splitlines(keepends=True)
            (glue / name).write_text("".join(lines[:n + 1]))
        data = dict(data_dir=str(glue.parent))
        args = ["--task", task, "--data-dir", data["data_dir"]]
    out = tmp_path / "out"
    rc = cli.main(["prune", "--model", str(ckpt), *args, "--num-tokens", "1000", "--constraint", "0.5",
                   "--device", "cpu", "--output", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flops_removed"] >= 0.5 - 1e-9
    again = api.evaluate(str(out / "model"), None if task == "ner" else task, device="cpu", progress=False, **data)
    assert again[summary["metric"]] == pytest.approx(summary["pruned"][summary["metric"]], abs=1e-6)
    return summary, out


def ner_corpus_module():
    """benchmarks/ner_corpus.py as a module (the token-classification corpus built from MRPC's sentences)."""
    spec = importlib.util.spec_from_file_location("ner_corpus", ROOT / "benchmarks" / "ner_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and far faster on a busy 2-core machine); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
