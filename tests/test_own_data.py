"""Your own data files (issue #27 part 1): the shared SST-2 data written as CSV / JSON Lines / Parquet with other column
names and string labels prune to the same masks and dev accuracy as `--task sst2` on the same sample; each bad input
ends in one `kprune: error:` line with nothing written."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import GLUE_DIR, MODELS_DIR, needs_shared
from kprune_lib.cli import main
from kprune_lib.data import metrics
from kprune_lib.data.glue import load_glue
from kprune_lib.data.tasks import get_glue_task

SST2_MODEL = MODELS_DIR / "minilm-l6-sst2"
STSB_MODEL = MODELS_DIR / "minilm-l6-stsb"
SST2_DATA = GLUE_DIR / "SST-2"
NAMES = ("negative", "positive")  # the fixture's config id2label
COMMON = ["--constraint", "0.5", "--num-tokens", "2000", "--seed", "0", "--max-length", "64", "--quiet"]

pytestmark = needs_shared(SST2_DATA)


def _frame(split: str) -> pd.DataFrame:
    ex = load_glue(get_glue_task("sst2"), split, GLUE_DIR)
    return pd.DataFrame({"review": ex.text_a, "sentiment": [NAMES[y] for y in ex.labels]})


def _write(df: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sst2") / "run"
    assert main(["prune", "--model", str(SST2_MODEL), "--task", "sst2", "--data-dir", str(GLUE_DIR),
                 *COMMON, "--output", str(out)]) == 0
    return out


def _masks(out):
    s = json.loads((out / "summary.json").read_text())
    k = json.loads((out / "model" / "kprune.json").read_text())
    return s, k


@needs_shared(SST2_MODEL)
@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_own_files_equal_task_sst2(tmp_path, capsys, sst2_run, ext):
    train, dev = tmp_path / f"train{ext}", tmp_path / f"dev{ext}"
    _write(_frame("train"), train)
    _write(_frame("validation"), dev)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["prune", "--model", str(SST2_MODEL), "--train-file", str(train), "--validation-file", str(dev),
                 "--text-columns", "review", "--label-column", "sentiment", *COMMON, "--output", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["task"] == "custom" and last["metric"] == "accuracy"
    s, k = _masks(out)
    ref_s, ref_k = _masks(sst2_run)
    assert (s["sample_examples"], s["seq_len"]) == (ref_s["sample_examples"], ref_s["seq_len"])
    assert s["heads_kept"] == ref_s["heads_kept"] and s["neurons_kept"] == ref_s["neurons_kept"]
    assert k["kept_heads"] == ref_k["kept_heads"] and k["kept_neurons"] == ref_k["kept_neurons"]
    assert s["dense"]["accuracy"] == ref_s["dense"]["accuracy"]
    assert s["pruned"]["accuracy"] == ref_s["pruned"]["accuracy"]
    assert {"f1_macro", "mcc"} <= set(s["pruned"])
    assert s["data"]["text_columns"] == ["review"] and s["data"]["label_column"] == "sentiment"
    assert s["data"]["label_map"] == {"negative": 0, "positive": 1}
    assert s["data"]["train_file"] == str(train) and s["data"]["validation_file"] == str(dev)
    if ext == ".csv":  # the model card's command reruns it; kprune evaluate on the same file gives the pruned metrics
        card = (out / "model" / "README.md").read_text()
        assert "--task custom" in card and "--validation-file" in card and "--text-columns review" in card
        assert main(["evaluate", "--model", str(out / "model"), "--validation-file", str(dev), "--text-columns",
                     "review", "--label-column", "sentiment", "--max-length", "64", "--quiet"]) == 0
        got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert got["accuracy"] == pytest.approx(s["pruned"]["accuracy"], abs=1e-9)


def _small(tmp_path, rows: dict, name="data.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _fails(tmp_path, capsys, model, train, dev, *extra) -> str:
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["prune", "--model", str(model), "--train-file", str(train), "--validation-file", str(dev),
                 *extra, "--num-tokens", "200", "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    errors = [line for line in err if line.startswith("kprune: error:")]  # (transformers' loading bar may precede)
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()
    return errors[0]


@needs_shared(SST2_MODEL)
def test_unknown_column(tmp_path, capsys):
    f = _small(tmp_path, {"review": ["good", "bad"], "sentiment": ["positive", "negative"]})
    msg = _fails(tmp_path, capsys, SST2_MODEL, f, f, "--text-columns", "text", "--label-column", "sentiment")
    assert "'text'" in msg and "--text-columns" in msg
    msg = _fails(tmp_path, capsys, SST2_MODEL, f, f)  # default label column "label" is not there
    assert "'label'" in msg and "--label-column" in msg


@needs_shared(SST2_MODEL)
def test_unknown_label(tmp_path, capsys):
    f = _small(tmp_path, {"review": ["good", "bad"], "sentiment": ["positive", "neutral"]})
    msg = _fails(tmp_path, capsys, SST2_MODEL, f, f, "--label-column", "sentiment")
    assert "'neutral'" in msg and "'negative'" in msg


@needs_shared(STSB_MODEL)
def test_regression_model_string_labels(tmp_path, capsys):
    f = _small(tmp_path, {"sentence1": ["a cat", "a dog"], "sentence2": ["a cat", "a car"],
                          "label": ["similar", "different"]})
    msg = _fails(tmp_path, capsys, STSB_MODEL, f, f)
    assert "'similar'" in msg and "regression" in msg


@needs_shared(SST2_MODEL)
@pytest.mark.parametrize("content", ["", "review,label\n"])
def test_empty_file(tmp_path, capsys, content):
    good = _small(tmp_path, {"review": ["good", "bad"], "label": [1, 0]})
    empty = tmp_path / "empty.csv"
    empty.write_text(content)
    msg = _fails(tmp_path, capsys, SST2_MODEL, empty, good)
    assert str(empty) in msg and ("is empty" in msg or "has no examples" in msg)


def test_default_text_columns_and_metrics():
    from kprune_lib.data.files import default_text_columns

    assert default_text_columns(pd.DataFrame({"idx": [1], "sentence2": ["b"], "sentence1": ["a"], "label": [0]}),
                                "label") == ("sentence1", "sentence2")
    assert default_text_columns(pd.DataFrame({"idx": [1], "q": ["a"], "p": ["b"], "t": ["c"], "label": ["x"]}),
                                "label") == ("q", "p")
    pred, gold = np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 1])
    assert metrics.mcc(pred, gold) == pytest.approx(metrics.matthews(pred, gold))
    pred3, gold3 = np.array([0, 1, 2, 2, 1, 0]), np.array([0, 1, 2, 1, 1, 2])
    # by hand: per-class F1 0: tp1 fp1 fn0 -> 2/3; 1: tp2 fp0 fn1 -> 4/5; 2: tp1 fp1 fn1 -> 1/2
    assert metrics.f1_macro(pred3, gold3) == pytest.approx((2 / 3 + 4 / 5 + 1 / 2) / 3)
    # Gorodkin's R_K: c=4, s=6, t=(1,3,2), p=(2,2,2): (4*6 - 12) / sqrt((36 - 12) * (36 - 14))
    assert metrics.mcc(pred3, gold3) == pytest.approx(12 / np.sqrt(24 * 22))


# ---- a data set datasets.load_dataset reads (--dataset; a local data-set folder: the hub's own code path) ----------
def _dataset_folder(root, names=("positive", "negative")):
    """The SST-2 fixture as a data set folder of Parquet splits written by `datasets`, the label a ClassLabel whose
    class order differs from the checkpoint's (positive = 0): read through the names, it must equal --task sst2."""
    import datasets

    features = datasets.Features({"review": datasets.Value("string"), "sentiment": datasets.ClassLabel(names=names)})
    root.mkdir()
    for split, file in (("train", "train.parquet"), ("validation", "validation.parquet")):
        df = _frame(split)
        rows = {"review": df["review"].tolist(), "sentiment": [names.index(v) for v in df["sentiment"]]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / file))
    return root


@needs_shared(SST2_MODEL)
def test_dataset_splits_equal_task_sst2_and_metric_selects_the_primary(tmp_path, capsys, sst2_run):
    folder = _dataset_folder(tmp_path / "sst2-dataset")
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["prune", "--model", str(SST2_MODEL), "--dataset", str(folder), "--text-columns", "review",
                 "--label-column", "sentiment", "--metric", "mcc", *COMMON, "--output", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["metric"] == "mcc"
    s, k = _masks(out)
    ref_s, ref_k = _masks(sst2_run)
    assert k["kept_heads"] == ref_k["kept_heads"] and k["kept_neurons"] == ref_k["kept_neurons"]
    assert s["pruned"]["accuracy"] == ref_s["pruned"]["accuracy"] and s["metric"] == "mcc"
    assert s["pruned"]["mcc"] == pytest.approx(metrics.matthews(*_predictions_of(out / "model", folder)), abs=1e-9)
    assert s["data"]["dataset"] == str(folder) and s["data"]["train_split"] == "train"
    assert s["data"]["validation_split"] == "validation" and "train_file" not in s["data"]
    assert main(["evaluate", "--model", str(out / "model"), "--dataset", str(folder), "--text-columns", "review",
                 "--label-column", "sentiment", "--max-length", "64", "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["accuracy"] == pytest.approx(s["pruned"]["accuracy"], abs=1e-9)


def _predictions_of(model_dir, folder):
    """(predicted, gold) class ids of a saved model on the folder's validation split, in the checkpoint's ids:
    computed here with stock transformers, independently of kprune's evaluation."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ds = datasets.load_dataset(str(folder), split="validation")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), trust_remote_code=True).eval()
    gold = [model.config.label2id[ds.features["sentiment"].names[y]] for y in ds["sentiment"]]
    pred = []
    with torch.no_grad():
        for i in range(0, len(ds), 64):
            enc = tok(ds["review"][i:i + 64], truncation=True, max_length=64, padding=True, return_tensors="pt")
            pred += model(**enc).logits.argmax(-1).tolist()
    return np.array(pred), np.array(gold)


@needs_shared(SST2_MODEL)
def test_dataset_option_errors_are_one_line(tmp_path, capsys):
    folder = _dataset_folder(tmp_path / "ds")
    f = _small(tmp_path, {"review": ["good", "bad"], "sentiment": ["positive", "negative"]})
    cases = [
        (["--dataset", str(folder), "--validation-split", "test"], "Unknown split"),
        (["--dataset", str(folder), "--train-file", str(f)], "either --dataset or --train-file"),
        (["--train-file", str(f), "--validation-file", str(f), "--train-split", "x"], "pass --dataset NAME too"),
        (["--dataset", str(folder), "--metric", "spearman"], "choose one of accuracy, f1_macro, mcc"),
        (["--dataset", str(tmp_path / "missing")], "could not load"),
        (["--task", "sst2", "--dataset", str(folder)], "--dataset apply to your own data"),
    ]
    for extra, expected in cases:
        out = tmp_path / "out"
        capsys.readouterr()
        code = main(["prune", "--model", str(SST2_MODEL), "--text-columns", "review", "--label-column", "sentiment",
                     *extra, "--num-tokens", "200", "--output", str(out), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("kprune: error:")]
        assert code == 2 and len(errors) == 1 and err[-1] == errors[0], (extra, err)
        assert expected in errors[0], (extra, errors[0])
        assert not out.exists()
