"""Every bad input gets one clear line on stderr and a non-zero exit; nothing half-written is left behind."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import GLUE_DIR, MODELS_DIR, needs_shared
from kprune_lib.cli import main

MRPC_MODEL = MODELS_DIR / "minilm-l6-mrpc"
pytestmark = [needs_shared(MRPC_MODEL), needs_shared(GLUE_DIR)]


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def prune_args(data_dir, out, **kw):
    args = {"--model": str(MRPC_MODEL), "--task": "mrpc", "--data-dir": str(data_dir), "--constraint": "0.5",
            "--num-tokens": "300", "--output": str(out), **kw}
    return [x for k, v in args.items() for x in (k, v)] + ["--quiet"]


def assert_one_line_error(code, err, pattern):
    assert code == 2
    assert len([line for line in err if line.startswith("kprune: error:")]) == 1
    assert pattern in err[-1], err


def test_unknown_task(capsys, small_glue, tmp_path):
    code, err = run_cli(capsys, "prune", *prune_args(small_glue, tmp_path / "o", **{"--task": "glue9"}))
    assert_one_line_error(code, err, "unknown task 'glue9'")
    assert not (tmp_path / "o").exists()


def test_missing_data(capsys, tmp_path):
    code, err = run_cli(capsys, "prune", *prune_args(tmp_path, tmp_path / "o"))
    assert_one_line_error(code, err, "MRPC/dev.tsv")


def test_malformed_data(capsys, small_glue, tmp_path):
    bad = tmp_path / "glue"
    shutil.copytree(small_glue, bad)
    with open(bad / "MRPC" / "train.tsv", "a") as f:
        f.write("1\tonly-two-fields\n")
    code, err = run_cli(capsys, "prune", *prune_args(bad, tmp_path / "o"))
    assert_one_line_error(code, err, "fields, expected at least 5")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "abc"])
def test_constraint_out_of_range(capsys, small_glue, tmp_path, value):
    with pytest.raises(SystemExit) as e:
        main(["prune", *prune_args(small_glue, tmp_path / "o", **{"--constraint": value})])
    assert e.value.code == 2
    assert "--constraint" in capsys.readouterr().err


def test_label_count_mismatch(capsys, tmp_path):
    code, err = run_cli(capsys, "evaluate", "--model", str(MRPC_MODEL), "--task", "stsb", "--data-dir", str(GLUE_DIR))
    assert_one_line_error(code, err, "checkpoint has 2 output label(s) but stsb needs 1")


def test_empty_sample(capsys, small_glue, tmp_path):
    empty = tmp_path / "glue"
    shutil.copytree(small_glue, empty)
    header = (empty / "MRPC" / "train.tsv").read_text().splitlines()[0]
    (empty / "MRPC" / "train.tsv").write_text(header + "\n")
    code, err = run_cli(capsys, "prune", *prune_args(empty, tmp_path / "o"))
    assert_one_line_error(code, err, "no examples")


def test_non_finite_scores(capsys, small_glue, tmp_path):
    from kprune_lib.artifacts.checkpoint import load_model

    model, tok = load_model(str(MRPC_MODEL))
    with torch.no_grad():
        model.bert.encoder.layer[3].output.dense.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan-model")
    tok.save_pretrained(tmp_path / "nan-model")
    code, err = run_cli(capsys, "prune", *prune_args(small_glue, tmp_path / "o", **{"--model": str(tmp_path / "nan-model")}))
    assert_one_line_error(code, err, "non-finite importance scores")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))


def test_unknown_model_folder(capsys, small_glue, tmp_path):
    code, err = run_cli(capsys, "prune", *prune_args(small_glue, tmp_path / "o", **{"--model": str(tmp_path / "nope")}))
    assert_one_line_error(code, err, "could not load model")


def test_existing_output_is_not_clobbered(capsys, small_glue, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, err = run_cli(capsys, "prune", *prune_args(small_glue, out))
    assert_one_line_error(code, err, "--overwrite")
    assert (out / "mine.txt").read_text() == "keep"


def test_console_script_exit_code(small_glue, tmp_path):
    exe = Path(sys.executable).with_name("kprune")
    proc = subprocess.run([str(exe), "evaluate", "--model", str(MRPC_MODEL), "--task", "nope"],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("kprune: error: unknown task 'nope'")


def test_the_last_line_says_when_the_pruned_model_collapsed(capsys, small_glue, tmp_path, monkeypatch):
    """A pruned classifier that predicts one class for the whole dev set: summary.json and the CLI's last line say
    so next to the metric (here forced: the flag's computation is tested in test_metrics)."""
    import json

    from kprune_lib.data import evaluate

    assert main(["prune", *prune_args(small_glue, tmp_path / "a")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "collapsed" not in line  # the MiniLM MRPC model at 50 % keeps both classes
    monkeypatch.setattr(evaluate, "collapsed", lambda task, logits, labels: True)
    assert main(["prune", *prune_args(small_glue, tmp_path / "b")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "one class for every dev example" in line["collapsed"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["collapsed"] == {"dense": True, "pruned": True}
