"""A pruned folder is a model like any other: `kprune prune --model OUT/model` prunes it further (its layers differ,
so masks are per layer), and the twice-pruned folder loads in stock transformers and exports to onnxruntime."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import kprune_lib as kp
from kprune_lib.cli import main
from kprune_lib.artifacts.checkpoint import load_pruned
from kprune_lib.encoder.masks import kept_per_layer, per_layer
from kprune_lib.encoder.physical import aligned_width
from stock_env import make_stock_venv
from test_notebooks import make_tiny_checkpoint, make_tiny_glue, needs_fixtures

pytestmark = needs_fixtures


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """A tiny BERT pruned by the API (50 %), then its output folder pruned again from the command line (30 %)."""
    root = tmp_path_factory.mktemp("progressive")
    ckpt, glue = make_tiny_checkpoint(root / "ckpt"), make_tiny_glue(root / "glue")
    first = kp.prune(str(ckpt), "mrpc", str(root / "first"), data_dir=str(glue), device="cpu", progress=False,
                     num_tokens=1000, constraint=0.5)
    code = main(["prune", "--model", str(root / "first" / "model"), "--task", "mrpc", "--data-dir", str(glue),
                 "--constraint", "0.3", "--num-tokens", "1000", "--output", str(root / "second"), "--quiet"])
    assert code == 0
    second = json.loads((root / "second" / "summary.json").read_text())
    return root, first, second


def test_per_layer_masks_stack_only_when_regular():
    regular = per_layer([torch.tensor([True, False]), torch.tensor([False, False])])
    assert isinstance(regular, torch.Tensor) and regular.shape == (2, 2)
    ragged = per_layer([torch.tensor([True, False, True]), torch.zeros(0, dtype=torch.bool)])
    assert isinstance(ragged, list) and kept_per_layer(ragged) == [2, 0]


def test_a_pruned_folder_prunes_further(twice):
    root, first, second = twice
    assert len(set(first["heads_kept"])) > 1 or len(set(first["neurons_kept"])) > 1, "the first pass must leave ragged layers"
    # the second run's "dense" model is the first run's saved model: its FLOPs (FFN widths padded with inert
    # neurons, `flops_physical`), its metrics
    assert first["neurons_physical"] == [aligned_width(n, 48) for n in first["neurons_kept"]]
    assert first["flops_pruned"] <= first["flops_physical"]
    assert second["flops_dense"] == pytest.approx(first["flops_physical"], rel=1e-9)
    assert second["dense"] == pytest.approx(first["pruned"])
    assert second["flops_removed"] >= 0.3 - 1e-9 and second["flops_pruned"] < first["flops_pruned"]
    for h1, h2, n1, n2 in zip(first["heads_kept"], second["heads_kept"], first["neurons_kept"], second["neurons_kept"]):
        assert h2 <= h1 and n2 <= n1
    meta = json.loads((root / "second" / "model" / "kprune.json").read_text())
    assert meta["heads_per_layer"] == second["heads_kept"] and meta["neurons_per_layer"] == second["neurons_physical"]
    assert [len(k) for k in meta["kept_heads"]] == second["heads_kept"]
    assert all(max(k, default=-1) < h for k, h in zip(meta["kept_heads"], first["heads_kept"]))  # indices of the input's


def test_the_twice_pruned_folder_reloads_with_its_metrics(twice):
    root, _, second = twice
    scores = kp.evaluate(str(root / "second" / "model"), "mrpc", data_dir=str(root / "glue"), device="cpu",
                         progress=False)
    assert scores == pytest.approx(second["pruned"])


def _inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_the_twice_pruned_folder_loads_in_stock_transformers(twice, tmp_path):
    root, _, _ = twice
    folder = root / "second" / "model"
    save_file(_inputs(), str(tmp_path / "inputs.safetensors"))
    python = make_stock_venv(tmp_path / "venv")
    job = {"cases": [{"name": "twice", "dir": str(folder), "auto": "AutoModelForSequenceClassification",
                      "inputs": str(tmp_path / "inputs.safetensors")}],
           "tokenizer_dir": str(folder), "out": str(tmp_path / "out.safetensors"), "report": str(tmp_path / "r.json")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), "-I", str(Path(__file__).with_name("stock_load_child.py")),
                           str(tmp_path / "job.json")], cwd=work, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "r.json").read_text())["kprune_importable"] is False
    with torch.no_grad():
        ours = load_pruned(folder)(**_inputs()).logits
    torch.testing.assert_close(load_file(str(tmp_path / "out.safetensors"))["twice/logits"], ours, rtol=0, atol=1e-5)


def test_the_twice_pruned_folder_exports_to_onnxruntime(twice, tmp_path):
    pytest.importorskip("onnxruntime")
    from kprune_lib.artifacts.onnx import session

    root, _, _ = twice
    folder = root / "second" / "model"
    assert main(["export", "--model", str(folder), "--output", str(tmp_path / "m.onnx")]) == 0
    sess = session(tmp_path / "m.onnx", threads=1)
    x = _inputs(1)
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {k: x[k].numpy() for k in names})[0]
    with torch.no_grad():
        ours = load_pruned(folder)(**x).logits
    torch.testing.assert_close(torch.from_numpy(got), ours, rtol=0, atol=1e-4)


def test_kwon_fisher_refuses_a_pruned_model_in_one_line(twice, capsys, tmp_path):
    root, _, _ = twice
    code = main(["prune", "--model", str(root / "first" / "model"), "--task", "mrpc", "--data-dir", str(root / "glue"),
                 "--constraint", "0.3", "--num-tokens", "1000", "--method", "kwon-fisher", "--output",
                 str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "kwon-fisher prunes dense models only" in err[0]
    assert not (tmp_path / "out").exists()
