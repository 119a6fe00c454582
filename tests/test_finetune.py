"""`kprune finetune`: tiny random BERTs (MiniLM tokenizer) trained on slices of MRPC, STS-B and the SQuAD dev file."""
import json
import math

import pytest
import torch
import transformers
from safetensors.torch import load_file

from conftest import GLUE_DIR, needs_shared
from kprune_lib import api, cli
from kprune_lib.finetune import FinetuneConfig, linear_warmup_decay, param_groups
from squad_helpers import one_thread  # noqa: F401 (autouse)
from squad_helpers import DEV, MINILM, tiny_checkpoint, write_slice

pytestmark = needs_shared(GLUE_DIR / "MRPC")
FAST = dict(epochs=4, batch_size=16, lr=1e-3, max_train_examples=64, max_length=64)  # 4 x 4 steps


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("base") / "base", head="base", init_std=None)


@pytest.fixture(scope="module")
def mrpc(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "mrpc"
    rc = cli.main(["finetune", "--model", str(base), "--task", "mrpc", "--data-dir", str(GLUE_DIR), "--output", str(out),
                   "--epochs", "4", "--batch-size", "16", "--lr", "1e-3", "--max-train-examples", "64",
                   "--max-length", "64", "--device", "cpu", "--quiet"])
    assert rc == 0
    return out


def test_mrpc_checkpoint_is_a_standard_hf_folder(mrpc):
    assert {"config.json", "model.safetensors", "tokenizer.json", "finetune.json"} <= {p.name for p in mrpc.iterdir()}
    config = json.loads((mrpc / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}  # the nyu-mll/glue order
    assert config["label2id"] == {"not_equivalent": 0, "equivalent": 1}
    assert config["problem_type"] == "single_label_classification"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(mrpc)
    assert model.config.num_labels == 2


def test_mrpc_loss_decreases_and_metrics_match_the_saved_model(mrpc):
    record = json.loads((mrpc / "finetune.json").read_text())
    assert record["train_examples"] == 64 and record["steps"] == 4 * math.ceil(64 / 16)
    losses = record["train_loss_per_epoch"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (record["lr"], record["weight_decay"], record["warmup_ratio"], record["grad_clip"]) == (1e-3, 0.01, 0.1, 1.0)
    again = api.evaluate(str(mrpc), "mrpc", data_dir=str(GLUE_DIR), max_length=64, device="cpu", progress=False)
    assert again == pytest.approx(record["dev_metrics"])
    assert set(again) == {"accuracy", "f1"}


def test_seeded_runs_are_identical(base, tmp_path):
    kw = dict(data_dir=str(GLUE_DIR), device="cpu", progress=False, **{**FAST, "epochs": 1})
    a = api.finetune(str(base), "mrpc", str(tmp_path / "a"), **kw)
    b = api.finetune(str(base), "mrpc", str(tmp_path / "b"), **kw)
    c = api.finetune(str(base), "mrpc", str(tmp_path / "c"), seed=1, **{k: v for k, v in kw.items()})
    assert a["train_loss_per_epoch"] == b["train_loss_per_epoch"] != c["train_loss_per_epoch"]
    wa, wb = (load_file(str(tmp_path / k / "model.safetensors")) for k in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stsb_is_a_regression(base, tmp_path):
    record = api.finetune(str(base), "stsb", str(tmp_path / "stsb"), data_dir=str(GLUE_DIR), device="cpu",
                          progress=False, save_dtype="float16", **{**FAST, "epochs": 3})
    config = json.loads((tmp_path / "stsb" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "LABEL_0"}
    assert load_file(str(tmp_path / "stsb" / "model.safetensors"))["classifier.weight"].dtype == torch.float16
    losses = record["train_loss_per_epoch"]
    assert losses[-1] < losses[0]
    assert set(record["dev_metrics"]) == {"spearman", "pearson"}


@needs_shared(DEV)
def test_squad_finetune_on_a_split_of_the_dev_file(base, tmp_path):
    sl = write_slice(tmp_path / "slice.json", n_articles=4, n_paragraphs=2)
    record = api.finetune(str(base), "squad", str(tmp_path / "qa"), eval_file=str(sl), split_articles=0.5,
                          device="cpu", progress=False, epochs=6, batch_size=8, lr=2e-3)
    assert record["data"]["train_articles"] == 2 and record["data"]["eval_articles"] == 2
    assert record["train_features"] >= record["train_examples"] > 0
    assert record["train_loss_per_epoch"][-1] < record["train_loss_per_epoch"][0]
    config = json.loads((tmp_path / "qa" / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    again = api.evaluate(str(tmp_path / "qa"), "squad", eval_file=str(sl), split_articles=0.5, device="cpu",
                         progress=False)
    assert again == pytest.approx(record["dev_metrics"]) and set(again) == {"exact_match", "f1"}


def test_schedule_matches_transformers_and_decay_skips_norms_and_biases():
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=8))
    ours = torch.optim.SGD(model.parameters(), lr=1.0)
    ref = torch.optim.SGD(model.parameters(), lr=1.0)
    s1, s2 = linear_warmup_decay(ours, 3, 20), transformers.get_linear_schedule_with_warmup(ref, 3, 20)
    lrs = []
    for _ in range(22):
        lrs.append((s1.get_last_lr()[0], s2.get_last_lr()[0]))
        ours.step()  # no gradients: parameters unchanged; keeps the optimizer-then-scheduler order
        ref.step()
        s1.step()
        s2.step()
    assert [a for a, _ in lrs] == pytest.approx([b for _, b in lrs])
    assert lrs[3][0] == 1.0 and lrs[20][0] == 0.0
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} == {n for n in names.values()
                                                          if n.endswith("bias") or "LayerNorm" in n}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("case", ["exists", "no-model", "squad-option-on-glue", "bad-epochs"])
def test_finetune_cli_errors(case, base, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["finetune", "--model", str(base), "--task", "mrpc", "--data-dir", str(GLUE_DIR), "--quiet",
            "--output", str(out if case == "exists" else tmp_path / "new")]
    args += {"exists": [], "no-model": ["--model", str(tmp_path / "missing")],
             "squad-option-on-glue": ["--eval-file", str(MINILM / "config.json")], "bad-epochs": ["--epochs", "0"]}[case]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kprune: error:"), err
    assert not (tmp_path / "new").exists() and (out / "keep.txt").exists()


def test_defaults_are_the_fixture_recipe():
    recipe = json.loads((MINILM / "FINETUNE.json").read_text())
    d = FinetuneConfig()
    assert (d.epochs, d.lr, d.batch_size, d.seed, d.weight_decay, d.warmup_ratio, d.grad_clip) == (
        recipe["epochs"], recipe["lr"], recipe["batch_size"], recipe["seed"], recipe["weight_decay"],
        recipe["warmup_ratio"], recipe["grad_clip_norm"])



def test_own_files_finetune_equals_the_glue_task(base, mrpc, tmp_path):
    """kprune finetune --task-type sequence-classification on MRPC written as a CSV with other column names and
    string labels ("different" < "equivalent": the sorted names give GLUE's ids) trains the same weights as
    --task mrpc (same examples, same order, same seed); the head's id2label is the data's names, and the record's
    dev metrics are what kprune evaluate computes on the validation file."""
    import pandas as pd

    from kprune_lib.data.glue import load_glue
    from kprune_lib.data.tasks import get_glue_task

    names = ("different", "equivalent")
    files = {}
    for split in ("train", "validation"):
        ex = load_glue(get_glue_task("mrpc"), split, GLUE_DIR)
        files[split] = tmp_path / f"{split}.csv"
        pd.DataFrame({"first": ex.text_a, "second": ex.text_b, "verdict": [names[y] for y in ex.labels]}).to_csv(
            files[split], index=False)
    out = tmp_path / "own"
    assert cli.main(["finetune", "--model", str(base), "--task-type", "sequence-classification", "--train-file",
                     str(files["train"]), "--validation-file", str(files["validation"]), "--text-columns",
                     "first,second", "--label-column", "verdict", "--output", str(out), "--epochs", "4",
                     "--batch-size", "16", "--lr", "1e-3", "--max-train-examples", "64", "--max-length", "64",
                     "--device", "cpu", "--quiet"]) == 0
    ours, glue = load_file(out / "model.safetensors"), load_file(mrpc / "model.safetensors")
    assert ours.keys() == glue.keys() and all(torch.equal(ours[k], glue[k]) for k in ours)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "different", "1": "equivalent"}
    record = json.loads((out / "finetune.json").read_text())
    assert record["task"] == "custom" and record["data"]["label_column"] == "verdict"
    got = api.evaluate(str(out), None, validation_file=str(files["validation"]), text_columns="first,second",
                       label_column="verdict", max_length=64, progress=False)
    assert got["accuracy"] == pytest.approx(record["dev_metrics"]["accuracy"], abs=1e-12)


def test_label_set_is_run_glues():
    """Float labels: regression; otherwise the sorted distinct labels (numbers in numeric order)."""
    import pandas as pd

    from kprune_lib.data.files import label_set

    def frame(tmp, labels):
        path = tmp / f"f{len(list(tmp.iterdir()))}.csv"
        pd.DataFrame({"text": ["x"] * len(labels), "label": labels}).to_csv(path, index=False)
        return path

    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        assert label_set([frame(tmp, [0.5, 4.25])]) == (1, ())
        assert label_set([frame(tmp, [10, 2, 1]), frame(tmp, [2, 0])]) == (4, ("0", "1", "2", "10"))
        assert label_set([frame(tmp, ["b", "a", "b"])]) == (2, ("a", "b"))
