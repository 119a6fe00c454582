"""Token classification (issue #27 part 2): a tiny `BertForTokenClassification` on the tagging corpus built from the
shared MRPC sentences (benchmarks/ner_corpus.py) through the real loop: prune -> the physically pruned model gives
the masked model's logits -> saved folder -> stock transformers (trust_remote_code, kprune not imported) gives the
same logits -> ONNX export with onnxruntime parity -> the seqeval scores equal an independent conlleval computation.
Data: labels on first sub-words only; each bad input is one `kprune: error:` line with nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import GLUE_DIR, ROOT, needs_shared
from kprune_lib import api
from kprune_lib.artifacts.checkpoint import load_model
from kprune_lib.cli import main
from kprune_lib.config import PruneConfig
from kprune_lib.data.batching import glue_pruning_sample, pad_batch, tokenize
from kprune_lib.data.evaluate import predict_tokens
from kprune_lib.data.tokens import IGNORE, TokenExamples, align_labels, token_task
from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.physical import prune_physically
from kprune_lib.method.baselines import run_method
from kprune_lib.method.measurement import labelled_token_weights, predictive_loss, teacher_signal
from squad_helpers import MINILM, ner_corpus_module, one_thread, tiny_checkpoint  # noqa: F401 (one_thread: autouse)

ner_corpus = ner_corpus_module()

pytestmark = [needs_shared(MINILM), needs_shared(GLUE_DIR / "MRPC")]
COMMON = ["--constraint", "0.5", "--num-tokens", "1500", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny token classifier (the corpus's five IOB tags) and the corpus as JSON Lines (train: 240 sentences,
    validation: 80)."""
    root = tmp_path_factory.mktemp("ner")
    return {"root": root, "model": tiny_checkpoint(root / "ckpt", "token", label_names=ner_corpus.LABELS),
            "train": ner_corpus.write(ner_corpus.corpus(GLUE_DIR, "train", 240), root / "train.jsonl"),
            "dev": ner_corpus.write(ner_corpus.corpus(GLUE_DIR, "validation", 80), root / "dev.jsonl")}


@pytest.fixture(scope="module")
def run(data):
    out = data["root"] / "run"
    assert main(["prune", "--model", str(data["model"]), "--train-file", str(data["train"]), "--validation-file",
                 str(data["dev"]), *COMMON, "--output", str(out)]) == 0
    return out


def test_corpus_rule():
    ws = ner_corpus.words('Shares of Microsoft Corp. rose 1.5 percent to $27.20 in New York.')
    assert ws == ["Shares", "of", "Microsoft", "Corp", ".", "rose", "1.5", "percent", "to", "$", "27.20", "in", "New",
                  "York", "."]
    assert ner_corpus.tags(ws) == ["O", "O", "B-CAP", "I-CAP", "O", "O", "B-NUM", "O", "O", "O", "B-NUM", "O", "B-CAP",
                                   "I-CAP", "O"]


def test_labels_on_first_subwords():
    assert align_labels([None, 0, 0, 1, 2, 2, 2, None], [3, 1, 4]) == [IGNORE, 3, IGNORE, 1, 4, IGNORE, IGNORE, IGNORE]
    tok = api.load_model(str(MINILM))[1]
    ex = TokenExamples([["Yucaipa", "owned", "Dominick's"]], [[0, 4, 1]])
    f = tokenize(tok, ex, 64)[0]
    pieces = tok.convert_ids_to_tokens(f["input_ids"])
    labelled = [(p, y) for p, y in zip(pieces, f["label"]) if y != IGNORE]
    assert labelled == [("yu", 0), ("owned", 4), ("dominic", 1)]  # each word's first piece, nothing else
    assert len(pieces) > 5  # the words were split into several pieces


def test_token_kl_is_the_mean_kl_over_each_examples_labelled_tokens():
    g = torch.Generator().manual_seed(0)
    teacher_z, student_z = torch.randn(3, 6, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    labels = torch.full((3, 6), IGNORE)
    labels[0, [1, 2, 4]] = torch.tensor([0, 3, 1])
    labels[1, [1]] = 2
    labels[2, [1, 3]] = torch.tensor([4, 4])
    T = 2.0
    target = teacher_signal(teacher_z, "token", T, labels)
    by_hand = []
    for i in range(3):
        pos = (labels[i] != IGNORE).nonzero().flatten().tolist()
        kls = []
        for t in pos:
            p, q = torch.softmax(teacher_z[i, t] / T, -1), torch.softmax(student_z[i, t] / T, -1)
            kls.append(float((p * (p / q).log()).sum()))
        by_hand.append(T * T * sum(kls) / len(kls))
    assert float(predictive_loss(student_z, target, "token", T, "sum")) == pytest.approx(sum(by_hand), rel=1e-5)
    assert float(predictive_loss(student_z, target, "token", T)) == pytest.approx(np.mean(by_hand), rel=1e-5)
    assert float(predictive_loss(teacher_z, target, "token", T)) == pytest.approx(0.0, abs=1e-6)
    assert labelled_token_weights(labels).sum(-1).tolist() == [1.0, 1.0, 1.0]


def test_prune_pruned_equals_masked_and_reload_and_onnx(data, tmp_path):
    """The loop on the token sample; the physically pruned model gives the masked (dense-shaped) model's logits."""
    model, tok = load_model(str(data["model"]))
    names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    task = token_task(data["train"], data["dev"], label_names=names, label2id=model.config.label2id)
    cfg = PruneConfig(constraint=0.5, num_tokens=1500)
    sample = glue_pruning_sample(tok, task, None, cfg)
    assert all(b["labels"].shape == b["input_ids"].shape for b in sample.batches)
    arch = Arch(model)
    result = run_method(arch, sample.batches, "token", cfg, sample.seq_len, progress=False, record_knowledge=True)
    assert 0 < result.flops_pruned <= 0.5 * result.flops_dense + 1e-6
    assert float(result.knowledge[1][1]["k_pred"].sum()) > 0  # the per-token KL's gradients reach the masks
    assert any(r["kept"] < r["units"] for r in result.sublayers)
    dev = [pad_batch(f, tok.pad_token_id) for f in (tokenize(tok, task.split("validation").take(list(range(16))), 128),)]
    with torch.no_grad():
        masked = [model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in dev]
    prune_physically(arch, result.head_mask, result.neuron_mask)
    assert sum(arch.heads_in_layer(i) for i in range(arch.num_layers)) < arch.num_layers * arch.num_heads
    with torch.no_grad():
        for b, ref in zip(dev, masked):
            got = model(**{k: v for k, v in b.items() if k != "labels"}).logits
            assert (got - ref).abs().max() <= 1e-5


def _conlleval_chunks(tags: list[str]) -> set[tuple[int, int, str]]:
    """Entities of one sentence by conlleval's rules: a chunk starts at B-X, or at I-X after another type or O,
    and runs over the following I-X."""
    chunks, start, kind = set(), None, None
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, t = tag.partition("-")
        if kind is not None and not (prefix == "I" and t == kind):
            chunks.add((start, i, kind))
            kind = None
        if prefix in ("B", "I") and kind is None:
            start, kind = i, t
    return chunks


def test_end_to_end_cli(data, run, tmp_path, capsys):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "custom" and summary["metric"] == "f1" and summary["flops_removed"] >= 0.5 - 1e-9
    assert summary["data"]["task_type"] == "token-classification"
    assert summary["data"]["label_names"] == list(ner_corpus.LABELS)
    assert set(summary["pruned"]) == {"f1", "precision", "recall", "accuracy"}
    assert isinstance(summary["collapsed"]["pruned"], bool)

    # stock transformers in a process that never imports kprune: the folder's own code, the same logits
    model_dir = run / "model"
    pruned, tok = load_model(str(model_dir))
    assert type(pruned).__name__ == "KPruneBertForTokenClassification"
    feats = tokenize(tok, token_task(None, data["dev"], label_names=ner_corpus.LABELS).split("validation")
                     .take(list(range(8))), 128)
    batch = {k: v for k, v in pad_batch(feats, tok.pad_token_id).items() if k != "labels"}
    torch.save(batch, tmp_path / "inputs.pt")
    child = ("import sys, torch, transformers\n"
             "m = transformers.AutoModelForTokenClassification.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
             "assert 'kprune_lib' not in sys.modules, 'kprune imported'\n"
             "with torch.no_grad(): out = m.eval()(**torch.load(sys.argv[2])).logits\n"
             "torch.save({'logits': out, 'module': type(m).__module__}, sys.argv[3])\n")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", child, str(model_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "o.pt")],
                   check=True, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    stock = torch.load(tmp_path / "o.pt")
    assert stock["module"].startswith("transformers_modules.")
    with torch.no_grad():
        ours = pruned(**batch).logits
    assert (stock["logits"] - ours).abs().max() <= 1e-5

    # ONNX: the export's own parity check, and onnxruntime on these real inputs
    pytest.importorskip("onnxruntime")
    from kprune_lib.artifacts.onnx import session

    record = api.export_onnx(str(model_dir), str(tmp_path / "m.onnx"))
    assert record["outputs"] == ["logits"] and record["max_abs_diff"] <= 1e-4
    got = session(tmp_path / "m.onnx").run(None, {k: v.numpy() for k, v in batch.items()})[0]
    assert np.abs(got - ours.numpy()).max() <= 1e-4

    # the model card says what it is
    card = (model_dir / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "AutoModelForTokenClassification" in card

    # seqeval's scores = an independent conlleval computation on the pruned model's predictions
    task = token_task(None, data["dev"], label_names=ner_corpus.LABELS)
    gold, pred = predict_tokens(pruned, tokenize(tok, task.split("validation"), 128), tok.pad_token_id)
    names = ner_corpus.LABELS
    tp = n_pred = n_gold = right = words = 0
    for g, p in zip(gold, pred):
        gc, pc = _conlleval_chunks([names[i] for i in g]), _conlleval_chunks([names[i] for i in p])
        tp, n_pred, n_gold = tp + len(gc & pc), n_pred + len(pc), n_gold + len(gc)
        right, words = right + sum(a == b for a, b in zip(g, p)), words + len(g)
    precision, recall = (tp / n_pred if n_pred else 0.0), (tp / n_gold if n_gold else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert n_gold > 50 and words == sum(len(t) for t in task.split("validation").tags)  # nothing truncated here
    expected = {"precision": precision, "recall": recall, "f1": f1, "accuracy": right / words}
    assert summary["pruned"] == pytest.approx(expected, abs=1e-12)

    # kprune evaluate on the pruned folder gives the summary's pruned scores
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_dir), "--validation-file", str(data["dev"]), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(summary["pruned"], abs=1e-12)


@pytest.mark.parametrize("ext", [".parquet", ".csv"])
def test_parquet_and_csv_give_the_jsonl_run(data, run, tmp_path, ext):
    """The same rows as Parquet (list columns) and CSV (lists as pandas writes them), other column names and the
    tags as class ids: the same masks and scores."""
    frames = {}
    for split, path in (("train", data["train"]), ("dev", data["dev"])):
        df = pd.read_json(path, lines=True)
        df = pd.DataFrame({"words": df["tokens"], "tags": [[ner_corpus.LABELS.index(t) for t in r]
                                                           for r in df["ner_tags"]]})
        frames[split] = tmp_path / f"{split}{ext}"
        ner_corpus.write({"words": df["words"].tolist(), "tags": df["tags"].tolist()}, frames[split])
    out = tmp_path / "run"
    assert main(["prune", "--model", str(data["model"]), "--train-file", str(frames["train"]), "--validation-file",
                 str(frames["dev"]), "--text-columns", "words", "--label-column", "tags",
                 "--task-type", "token-classification", *COMMON, "--output", str(out)]) == 0
    got, ref = (json.loads((d / "summary.json").read_text()) for d in (out, run))
    assert got["heads_kept"] == ref["heads_kept"] and got["neurons_kept"] == ref["neurons_kept"]
    assert got["pruned"] == ref["pruned"] and got["seq_len"] == ref["seq_len"]


def test_finetune_makes_a_token_classifier(data, tmp_path, capsys):
    base = tiny_checkpoint(tmp_path / "base", "base")
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(base), "--task-type", "token-classification", "--train-file",
                 str(data["train"]), "--validation-file", str(data["dev"]), "--epochs", "1", "--batch-size", "16",
                 "--max-train-examples", "64", "--output", str(out), "--quiet"]) == 0
    record = json.loads((out / "finetune.json").read_text())
    assert record["steps"] == 4 and record["metric"] == "f1" and record["data"]["task_type"] == "token-classification"
    model, _ = load_model(str(out))
    assert type(model).__name__ == "BertForTokenClassification"
    seen = sorted({t for f in (data["train"], data["dev"]) for r in pd.read_json(f, lines=True)["ner_tags"] for t in r})
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == seen  # the data's, sorted
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--validation-file", str(data["dev"]), "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got == pytest.approx(record["dev_metrics"], abs=1e-6)


# ---- bad inputs: one line, nothing written ----------------------------------------------------------------------
def _fails(tmp_path, capsys, argv) -> str:
    out = tmp_path / "out"
    capsys.readouterr()
    code = main([*argv, "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    errors = [line for line in err if line.startswith("kprune: error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not out.exists()
    return errors[0]


def _prune(data, train, dev, *extra):
    return ["prune", "--model", str(data["model"]), "--train-file", str(train), "--validation-file", str(dev),
            "--num-tokens", "200", *extra]


def _jsonl(tmp_path, rows, name="bad.jsonl"):
    path = tmp_path / name
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


def test_missing_column(data, tmp_path, capsys):
    f = _jsonl(tmp_path, {"words": [["A", "b"]], "ner_tags": [["B-CAP", "O"]]})
    msg = _fails(tmp_path, capsys, _prune(data, f, f))
    assert "'tokens'" in msg and "--text-columns" in msg
    msg = _fails(tmp_path, capsys, _prune(data, f, f, "--text-columns", "words", "--label-column", "tags"))
    assert "'tags'" in msg and "--label-column" in msg


def test_unknown_label_and_length_mismatch(data, tmp_path, capsys):
    f = _jsonl(tmp_path, {"tokens": [["A", "b"]], "ner_tags": [["B-PER", "O"]]})
    msg = _fails(tmp_path, capsys, _prune(data, f, f))
    assert "'B-PER'" in msg and "'B-CAP'" in msg
    f = _jsonl(tmp_path, {"tokens": [["A", "b", "c"]], "ner_tags": [["B-CAP", "O"]]})
    msg = _fails(tmp_path, capsys, _prune(data, f, f))
    assert "3 words" in msg and "2 tags" in msg


@pytest.mark.parametrize("content", ["", "tokens,ner_tags\n"])
def test_empty_file(data, tmp_path, capsys, content):
    empty = tmp_path / "empty.csv"
    empty.write_text(content)
    msg = _fails(tmp_path, capsys, _prune(data, empty, data["dev"]))
    assert str(empty) in msg and ("is empty" in msg or "has no examples" in msg)


def test_wrong_kind_and_methods_that_need_sequence_labels(data, tmp_path, capsys):
    msg = _fails(tmp_path, capsys, _prune(data, data["train"], data["dev"], "--task-type", "sequence-classification"))
    assert "--task-type sequence-classification" in msg and "token-classification model" in msg
    for method in ("kwon", "fisher-greedy", "kprune-gold"):
        msg = _fails(tmp_path, capsys, _prune(data, data["train"], data["dev"], "--method", method))
        assert f"--method {method}" in msg and "token tasks" in msg
    base = tiny_checkpoint(tmp_path / "base", "base")
    msg = _fails(tmp_path, capsys, ["finetune", "--model", str(base), "--train-file", str(data["train"]),
                                    "--validation-file", str(data["dev"])])
    assert "--task-type token-classification" in msg


def test_tag_names_must_be_iob(data, tmp_path, capsys):
    plain = tiny_checkpoint(tmp_path / "plain", "token", num_labels=5)  # id2label LABEL_0 … LABEL_4
    msg = _fails(tmp_path, capsys, ["prune", "--model", str(plain), "--train-file", str(data["train"]),
                                    "--validation-file", str(data["dev"]), "--num-tokens", "200"])
    assert "'LABEL_0'" in msg and "IOB" in msg


def test_dense_token_checkpoint_exports(data, tmp_path):
    """A dense (not pruned) token-classification folder exports as a token classifier: per-token logits."""
    pytest.importorskip("onnxruntime")
    from kprune_lib.artifacts.onnx import example_inputs, session

    record = api.export_onnx(str(data["model"]), str(tmp_path / "dense.onnx"))
    assert record["outputs"] == ["logits"] and record["max_abs_diff"] <= 1e-4
    model, _ = load_model(str(data["model"]))
    feed = example_inputs(model, 2, 7)
    got = session(tmp_path / "dense.onnx").run(None, {k: v.numpy() for k, v in feed.items()})[0]
    with torch.no_grad():
        ref = model(**feed).logits.numpy()
    assert got.shape == (2, 7, len(ner_corpus.LABELS)) and np.abs(got - ref).max() <= 1e-4


def test_notebook_04_prunes_and_times_your_token_files(data, run, tmp_path):
    """Notebook 04 (the sweep's notebook) with your own token-classification files: it prunes them as the CLI does
    (the same kept units as the `run` fixture) and times the dense and pruned models on every validation sentence."""
    from test_notebooks import TINY_PARAMS, execute

    out = tmp_path / "point"
    execute(ROOT / "notebooks" / "04_prune_and_evaluate.py", tmp_path / "04.ipynb",
            {**TINY_PARAMS, "model": str(data["model"]), "task": "ner", "data_dir": None, "output_dir": str(out),
             "train_file": str(data["train"]), "validation_file": str(data["dev"]), "constraint": 0.5,
             "num_tokens": 1500, "seed": 0, "latency_repeats": 1})
    summary = json.loads((out / "summary.json").read_text())
    reference = json.loads((run / "summary.json").read_text())
    assert summary["heads_kept"] == reference["heads_kept"] and summary["neurons_kept"] == reference["neurons_kept"]
    assert summary["pruned"] == reference["pruned"] and summary["metric"] == "f1"
    assert summary["latency_examples"] == 80 and summary["latency_speedup"] > 0


def test_a_dataset_with_classlabel_tags_equals_the_files(data, run, tmp_path, capsys):
    """--dataset on a data-set folder written by `datasets` (tags a Sequence(ClassLabel) in an order other than the
    checkpoint's): the tags are read through their names, so the run equals the JSON Lines run."""
    import datasets

    names = list(reversed(ner_corpus.LABELS))
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    folder = tmp_path / "ner-dataset"
    folder.mkdir()
    for split, path in (("train", data["train"]), ("validation", data["dev"])):
        rows = pd.read_json(path, lines=True)
        datasets.Dataset.from_dict({"tokens": rows["tokens"].tolist(),
                                    "ner_tags": [[names.index(t) for t in tags] for tags in rows["ner_tags"]]},
                                   features=features).to_parquet(str(folder / f"{split}.parquet"))
    out = tmp_path / "run"
    assert main(["prune", "--model", str(data["model"]), "--dataset", str(folder), *COMMON, "--output", str(out)]) == 0
    ours, ref = (json.loads((d / "model" / "kprune.json").read_text()) for d in (out, run))
    assert ours["kept_heads"] == ref["kept_heads"] and ours["kept_neurons"] == ref["kept_neurons"]
    s, r = (json.loads((d / "summary.json").read_text()) for d in (out, run))
    assert s["pruned"] == r["pruned"] and s["dense"] == r["dense"]
