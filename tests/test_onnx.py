"""ONNX export (`kprune export`, `kprune_lib.artifacts.onnx`): onnxruntime parity on ragged pruned models of every
supported architecture (a layer with no head, a layer with no neuron), dynamic axes, no attention work in
zero-head layers, int8, and bad input -> one line, exit 2, nothing written."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

import kprune_lib  # noqa: E402
from conftest import tiny_model  # noqa: E402
from kprune_lib import cli  # noqa: E402
from kprune_lib.encoder.arch import Arch, supported_architectures  # noqa: E402
from kprune_lib.artifacts.checkpoint import load_pruned, save_pruned  # noqa: E402
from kprune_lib.artifacts.onnx import (OnnxExportError, export_onnx, example_inputs, quantize_int8,  # noqa: E402
                                    session)
from kprune_lib.encoder.physical import prune_physically  # noqa: E402

TOL = 1e-4
SHAPES = [(1, 7), (5, 19)]  # (batch, sequence): both differ from the traced (2, 8)


def ragged_pruned(arch: str, qa: bool = False):
    """Two layers: layer 0 keeps no head and 17 of 24 neurons, layer 1 keeps heads 0, 2, 3 and no neuron."""
    try:
        model = tiny_model(arch, qa=qa, layers=2)
    except ValueError:
        pytest.skip(f"no tiny config for {arch} in tests/conftest.py")
    H = Arch(model).num_heads
    N = Arch(model).ffn_size
    heads = torch.zeros(2, H, dtype=torch.bool)
    heads[1, [0, 2, 3]] = True
    neurons = torch.zeros(2, N, dtype=torch.bool)
    neurons[0, torch.randperm(N, generator=torch.Generator().manual_seed(0))[:17]] = True
    return prune_physically(model, heads, neurons, width_multiple=1)


def save(model, folder: Path) -> Path:
    save_pruned(model, folder)
    return folder


def feeds(sess, model, batch: int, seq: int, seed: int) -> tuple[dict, dict]:
    """onnxruntime feed (numpy) and PyTorch kwargs for the same padded inputs."""
    torch_in = example_inputs(model, batch, seq, seed=seed + 100)
    torch_in["attention_mask"][-1, seq - 2:] = 0  # a second padded row
    names = [i.name for i in sess.get_inputs()]
    return {k: torch_in[k].numpy() for k in names}, torch_in


def reference(model, kwargs: dict) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(**kwargs)
    if hasattr(model, "qa_outputs"):
        return [out.start_logits.numpy(), out.end_logits.numpy()]
    return [out.logits.numpy()]


def ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def expected_matmuls(model) -> tuple[int, int, int]:
    """(weight matmuls, attention nodes, activation products) the graph should have: Q, K, V, O per layer with heads,
    FFN in and out per layer with neurons (ELECTRA: + the embedding projection); one softmax and two activation
    products (scores, mixing) per layer with heads; DeBERTa: per position term and layer with heads, one more weight
    matmul (the relative-position embeddings projected) and one more product (scored against); ModernBERT: one fused
    Q/K/V matmul."""
    arch = Arch(model)
    heads = [arch.heads_in_layer(i) for i in range(arch.num_layers)]
    neurons = [arch.neurons_in_layer(i) for i in range(arch.num_layers)]
    extra = int(getattr(arch.base, "embeddings_project", None) is not None)
    terms = 0 if arch.relative is None else len(arch.relative.terms)
    attn = sum(h > 0 for h in heads)
    qkv = 1 if arch.table.fused_qkv else 3
    return (qkv + 1 + terms) * attn + 2 * sum(n > 0 for n in neurons) + extra, attn, (2 + terms) * attn


def assert_dynamic(path: Path) -> None:
    for value in onnx.load(str(path)).graph.input:
        dims = value.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims), value


def assert_int8_close(got: np.ndarray, ref: np.ndarray) -> None:
    """int8 logits follow the float ones (the tiny random models have large weights, so int8 error is large; real
    models: see benchmarks/onnx_bench.py)."""
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9
    assert np.abs(got - ref).max() <= 0.5 * np.abs(ref).max()


@pytest.mark.parametrize("arch", supported_architectures())
def test_export_matches_pytorch_and_skips_attention(tmp_path, arch):
    folder = save(ragged_pruned(arch), tmp_path / "model")
    model = load_pruned(folder)
    out = tmp_path / "m.onnx"
    record = export_onnx(folder, out)
    assert record["heads_per_layer"] == [0, 3] and record["neurons_per_layer"] == [17, 0]
    assert record["max_abs_diff"] <= TOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model"]  # no temporary left

    sess = session(out, threads=2)
    token_types = Arch(model).table.token_types
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert_dynamic(out)
    for seed, (b, s) in enumerate(SHAPES):
        feed, kwargs = feeds(sess, model, b, s, seed)
        (got,) = sess.run(None, feed)
        (ref,) = reference(model, kwargs)
        assert got.shape == ref.shape == (b, 2)
        assert np.abs(got - ref).max() <= TOL

    # the layer with no head computes no attention: one softmax (layer 1) and its two activation products only
    weight_mm, attn_layers, products = expected_matmuls(model)
    counts = ops(out)
    assert attn_layers == 1
    assert counts["Softmax"] + counts["Attention"] == attn_layers
    assert counts["MatMul"] == weight_mm + products
    assert all(np.prod(t.dims) > 0 for t in onnx.load(str(out)).graph.initializer)  # no zero-width weight

    # int8: onnxruntime dynamic quantization of the weight matmuls; runs at both shapes and stays close
    q = tmp_path / "q.onnx"
    quantize_int8(out, q)
    qcounts = ops(q)
    assert qcounts["MatMulInteger"] >= weight_mm and qcounts["MatMul"] == products
    qsess = session(q, threads=2)
    for seed, (b, s) in enumerate(SHAPES):
        feed, kwargs = feeds(qsess, model, b, s, seed)
        (got,) = qsess.run(None, feed)
        (ref,) = reference(model, kwargs)
        assert got.shape == ref.shape
        assert_int8_close(got, ref)


def test_export_question_answering(tmp_path):
    folder = save(ragged_pruned("bert", qa=True), tmp_path / "model")
    model = load_pruned(folder)
    out = tmp_path / "qa.onnx"
    record = kprune_lib.export_onnx(str(folder), str(out))  # the top-level API
    assert record["outputs"] == ["start_logits", "end_logits"] and record["max_abs_diff"] <= TOL
    sess = session(out, threads=2)
    assert [o.name for o in sess.get_outputs()] == ["start_logits", "end_logits"]
    for seed, (b, s) in enumerate(SHAPES):
        feed, kwargs = feeds(sess, model, b, s, seed)
        got = sess.run(None, feed)
        ref = reference(model, kwargs)
        for g, r in zip(got, ref):
            assert g.shape == r.shape == (b, s)
            assert np.abs(g - r).max() <= TOL


def test_cli_export_dense_checkpoint_int8(tmp_path, capsys):
    """A dense fine-tuned checkpoint folder (no kprune.json, no tokenizer) exports too; --int8 writes the quantized
    graph after checking the float32 one."""
    dense = tiny_model("distilbert")
    dense.save_pretrained(tmp_path / "dense")
    out = tmp_path / "onnx" / "dense-int8.onnx"
    assert cli.main(["export", "--model", str(tmp_path / "dense"), "--output", str(out), "--int8"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["int8"] is True and record["max_abs_diff"] <= TOL and record["output"] == str(out)
    assert record["bytes"] == out.stat().st_size < record["bytes_float32"]
    counts = ops(out)
    assert counts["MatMulInteger"] >= 2 * 4 + 2 * 2 and counts["Softmax"] == 2  # every layer dense: attention stays
    sess = session(out, threads=2)
    feed, kwargs = feeds(sess, dense, 3, 11, 0)
    (got,) = sess.run(None, feed)
    (ref,) = reference(dense, kwargs)
    assert_int8_close(got, ref)
    assert sorted(p.name for p in out.parent.iterdir()) == ["dense-int8.onnx"]


@pytest.fixture(scope="module")
def pruned_folder(tmp_path_factory):
    return save(ragged_pruned("bert"), tmp_path_factory.mktemp("pruned") / "model")


def _one_error_line(capsys, argv, *needles) -> None:
    rc = cli.main(["export", *argv])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.strip().splitlines() if ln.startswith("kprune: ")]
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("kprune: error: "), captured.err
    assert captured.out == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("not a model")
    out = tmp_path / "out" / "sub" / "m.onnx"
    _one_error_line(capsys, ["--model", str(tmp_path / "notes"), "--output", str(out)], "not a loadable model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # not even the folders made for the output


def test_cli_refuses_a_pruned_folder_with_broken_weights(tmp_path, pruned_folder, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in pruned_folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    out = tmp_path / "m.onnx"
    _one_error_line(capsys, ["--model", str(broken), "--output", str(out)], "not a loadable model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_cli_refuses_an_unwritable_output(tmp_path, pruned_folder, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    _one_error_line(capsys, ["--model", str(pruned_folder), "--output", str(blocker / "m.onnx")], "cannot write",
                    "choose another --output")
    _one_error_line(capsys, ["--model", str(pruned_folder), "--output", str(tmp_path)], "is a folder")
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"keep me")
    _one_error_line(capsys, ["--model", str(pruned_folder), "--output", str(existing)], "--overwrite")
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "old.onnx"]


@pytest.mark.parametrize("opset", ["13", "16", "26", "99"])
def test_cli_refuses_an_opset_that_cannot_express_the_model(tmp_path, pruned_folder, capsys, opset):
    out = tmp_path / "m.onnx"
    _one_error_line(capsys, ["--model", str(pruned_folder), "--output", str(out), "--opset", opset],
                    f"opset {opset}", "--opset 17–25")
    assert not any(tmp_path.iterdir())


def test_exporter_output_in_another_opset_is_caught(tmp_path, pruned_folder, monkeypatch):
    """Below 18 the exporter converts its opset-18 graph down and, where the conversion fails, silently keeps
    opset 18; the file's opset is checked, so a request it could not honour fails and writes nothing."""
    from kprune_lib.artifacts import onnx as onnx_export

    monkeypatch.setattr(onnx_export, "MIN_OPSET", 14)  # let opset 14 through the up-front check
    out = tmp_path / "m.onnx"
    with pytest.raises(OnnxExportError, match="opset 14 cannot express this model"):
        export_onnx(pruned_folder, out, opset=14)
    assert not any(tmp_path.iterdir())
