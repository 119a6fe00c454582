"""Inputs people really have: a model folder saved without its tokenizer, damaged weight / config / tokenizer files,
an output path that cannot be created. Each ends in one line `kprune: error: …` that says what to do, before any
pruning work, with nothing written; `--tokenizer` prunes a tokenizer-less folder with the right tokenizer."""
from __future__ import annotations

import json
import shutil

import pytest
import transformers

from conftest import GLUE_DIR, needs_shared
from kprune_lib import api
from kprune_lib.cli import main
from squad_helpers import MINILM, one_thread, tiny_checkpoint  # noqa: F401 (one_thread: autouse)

pytestmark = [needs_shared(MINILM), needs_shared(GLUE_DIR / "MRPC")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    good = tiny_checkpoint(root / "good", "classification")
    bare = root / "bare"  # `model.save_pretrained(dir)` alone: config.json + model.safetensors
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(good / f, bare / f)
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[:len(weights) // 2])  # an interrupted copy
    bad_config = root / "bad-config"
    shutil.copytree(good, bad_config)
    (bad_config / "config.json").write_text("{not json")
    bad_tokenizer = root / "bad-tokenizer"
    shutil.copytree(good, bad_tokenizer)
    (bad_tokenizer / "tokenizer.json").write_text("{broken")
    other_vocab = root / "other-vocab"  # a real tokenizer, of another model
    other_vocab.mkdir()
    (other_vocab / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie"]))
    (other_vocab / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    glue = root / "glue"
    (glue / "MRPC").mkdir(parents=True)
    for name, n in (("train.tsv", 60), ("dev.tsv", 20)):
        lines = (GLUE_DIR / "MRPC" / name).read_text(encoding="utf-8-sig").splitlines(keepends=True)
        (glue / "MRPC" / name).write_text("".join(lines[:n + 1]))
    return {"root": root, "good": good, "bare": bare, "truncated": truncated, "bad_config": bad_config,
            "bad_tokenizer": bad_tokenizer, "other_vocab": other_vocab, "glue": glue}


def prune(capsys, folders, model, out, *extra):
    code = main(["prune", "--model", str(model), "--task", "mrpc", "--data-dir", str(folders["glue"]),
                 "--constraint", "0.5", "--num-tokens", "400", "--device", "cpu", "--output", str(out), "--quiet",
                 *map(str, extra)])
    return code, capsys.readouterr().err.strip().splitlines()


def one_line(code, err, *needles):
    assert code == 2, err
    errors = [line for line in err if line.startswith("kprune: error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_a_folder_without_tokenizer_is_refused_and_says_how_to_fix_it(capsys, folders, tmp_path):
    # transformers 5 would hand out a 5-token BertTokenizer for this folder: every word [UNK]
    assert len(transformers.AutoTokenizer.from_pretrained(folders["bare"])) == 5
    code, err = prune(capsys, folders, folders["bare"], tmp_path / "out")
    one_line(code, err, "has no tokenizer files", "--tokenizer")
    assert not (tmp_path / "out").exists()


def test_tokenizer_option_prunes_with_the_right_tokenizer_and_saves_it(capsys, folders, tmp_path):
    code, err = prune(capsys, folders, folders["bare"], tmp_path / "out", "--tokenizer", MINILM)
    assert code == 0, err
    saved = transformers.AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    real = transformers.AutoTokenizer.from_pretrained(MINILM)
    assert len(saved) == len(real) and saved("hello world")["input_ids"] == real("hello world")["input_ids"]
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "--tokenizer" in card  # the reproduction command names it
    assert main(["evaluate", "--model", str(folders["bare"]), "--tokenizer", str(MINILM), "--task", "mrpc",
                 "--data-dir", str(folders["glue"]), "--quiet"]) == 0


def test_a_tokenizer_of_another_model_is_refused(capsys, folders, tmp_path):
    code, err = prune(capsys, folders, folders["good"], tmp_path / "out", "--tokenizer", folders["other_vocab"])
    one_line(code, err, "has 7 tokens but the model's embedding has 30522 rows", "another --tokenizer")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case,needle", [("truncated", "model.safetensors is damaged or not a safetensors file"),
                                         ("bad_config", "config.json' is not a valid JSON file. — its files may be damaged"),
                                         ("bad_tokenizer", "tokenizer.json")])
def test_damaged_files_are_one_line_naming_the_file(capsys, folders, tmp_path, case, needle):
    code, err = prune(capsys, folders, folders[case], tmp_path / "out")
    one_line(code, err, needle)
    assert not (tmp_path / "out").exists()
    code = main(["evaluate", "--model", str(folders[case]), "--task", "mrpc", "--data-dir", str(folders["glue"]),
                 "--quiet"])
    one_line(code, capsys.readouterr().err.strip().splitlines(), needle)


def test_damaged_weights_in_finetune_and_export(capsys, folders, tmp_path):
    code = main(["finetune", "--model", str(folders["truncated"]), "--task", "mrpc", "--data-dir",
                 str(folders["glue"]), "--output", str(tmp_path / "ft"), "--quiet"])
    one_line(code, capsys.readouterr().err.strip().splitlines(), "is damaged or not a safetensors file")
    assert not (tmp_path / "ft").exists()
    pruned = tmp_path / "pruned"
    assert prune(capsys, folders, folders["good"], pruned)[0] == 0
    weights = (pruned / "model" / "model.safetensors").read_bytes()
    (pruned / "model" / "model.safetensors").write_bytes(weights[:100])
    code = main(["export", "--model", str(pruned / "model"), "--output", str(tmp_path / "m.onnx")])
    one_line(code, capsys.readouterr().err.strip().splitlines(), "is damaged or not a safetensors file")
    assert not (tmp_path / "m.onnx").exists()


def test_an_output_under_a_file_fails_before_any_work(capsys, folders, tmp_path, monkeypatch):
    a_file = tmp_path / "hostname"
    a_file.write_text("x")

    def no_work(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(api, "load_model", no_work)
    code, err = prune(capsys, folders, folders["good"], a_file / "x")
    one_line(code, err, f"{a_file} is a file, not a folder", "choose another --output")
    code, err = prune(capsys, folders, folders["good"], a_file)
    one_line(code, err, f"output {a_file} is a file, not a folder")
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["hostname"]


def test_an_output_on_a_full_disk_fails_before_any_work(folders, tmp_path, monkeypatch):
    import shutil as sh

    from kprune_lib import _atomic

    monkeypatch.setattr(_atomic.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("loaded before the disk was checked"))
    with pytest.raises(OSError, match="not enough free disk for .* MB free on"):
        api.prune(str(folders["good"]), "mrpc", str(tmp_path / "out"), data_dir=str(folders["glue"]), device="cpu",
                  progress=False, num_tokens=400)


def test_a_grid_names_a_tokenizer_through_its_parameters(folders):
    """Sweeps pass notebook-04 parameters through: `tokenizer` is one, so a grid's task can name it."""
    from kprune_lib.workbook.points import NOTEBOOKS_DIR, POINT_NOTEBOOK

    source = (NOTEBOOKS_DIR / POINT_NOTEBOOK).read_text()
    assert "\ntokenizer = None" in source and "tokenizer=tokenizer" in source
    assert json.loads((folders["good"] / "config.json").read_text())["vocab_size"] == 30522


def test_a_damaged_grid_is_one_line_and_runs_nothing(capsys, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("tasks:\n  mrpc: {model: m\nconstraints: [0.5]\n")  # cut short: an unclosed mapping
    code = main(["sweep", str(grid), "--output-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
    one_line(code, capsys.readouterr().err.strip().splitlines(), f"cannot read grid {grid} at line", "fix the file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]
