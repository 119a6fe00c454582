"""ModernBERT: fused Wqkv, gated FFN, pre-norm blocks, rotary positions, global and sliding-window attention layers.

The shared parametrisations (`conftest.ARCHS`, test_forward / test_io / test_schedule / test_stock_load / test_onnx)
run a tiny ModernBERT with biases on (the bias rule of a fully pruned sublayer is exercised). Here: the settings of
the released checkpoints (no biases; a global layer every third, local layers in between, a window shorter than the
test sequences), a model pruned unevenly (a layer with no head, one with no neuron, a head count that is no divisor
of anything) through masked == physically pruned == reloaded through the folder's own code == onnxruntime; token
classification; re-pruning a pruned model; the latency table's sublayers; the gated FFN's FLOPs; the methods that
refuse it and the variant refused, in one line; `kprune prune` end to end on a checkpoint on disk.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers

from conftest import GLUE_DIR, needs_shared, random_batches, spread_weights, tiny_config
from kprune_lib.artifacts.checkpoint import load_pruned, save_pruned
from kprune_lib.costs.flops import UnitFlops, model_flops
from kprune_lib.encoder.arch import Arch, UnsupportedArchitecture
from kprune_lib.encoder.forward import attention_bias, encode, sublayer
from kprune_lib.encoder.masks import masked_model
from kprune_lib.encoder.physical import prune_physically
from squad_helpers import (CLI_TASKS, DEV, MINILM, one_thread, prune_checkpoint_cli,  # noqa: F401 (one_thread: autouse)
                           tokenizer)

KEYS = ["input_ids", "attention_mask"]
AUTO = {"classification": transformers.AutoModelForSequenceClassification,
        "qa": transformers.AutoModelForQuestionAnswering, "token": transformers.AutoModelForTokenClassification}


def modernbert(kind: str = "classification", layers: int = 4, heads: int = 5, seed: int = 0, **config):
    """A tiny ModernBERT with the released checkpoints' settings: no biases, a global layer every third (layers 0
    and 3), sliding windows of 2 tokens each side in between; 5 heads of 8 dims."""
    cfg = tiny_config("modernbert", num_labels=5 if kind == "token" else 2, layers=layers, heads=heads,
                      hidden=8 * heads)
    cfg.attention_bias = cfg.mlp_bias = False
    cfg.global_attn_every_n_layers = 3
    cfg.layer_types = ["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(layers)]
    for k, v in config.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    model = AUTO[kind].from_config(cfg).eval()
    spread_weights(model)
    return model


def uneven_masks(a: Arch):
    """4 layers, 5 heads: layer 0 keeps heads 1 and 3, layer 1 none, layer 2 three, layer 3 all; layer 2 keeps no
    neuron, the others random halves."""
    hm = torch.tensor([[False, True, False, True, False], [False] * 5, [True, True, False, True, False], [True] * 5])
    nm = torch.rand(4, a.ffn_size, generator=torch.Generator().manual_seed(1)) > 0.5
    nm[2, :] = False
    return hm, nm


def outputs(model, batches, kind="classification"):
    with torch.no_grad():
        out = [model(**{k: b[k] for k in KEYS}) for b in batches]
    # per-token heads: real tokens only (a padding position whose window holds no real token has undefined outputs)
    if kind == "qa":
        return [torch.stack([o.start_logits, o.end_logits], -1)[b["attention_mask"].bool()] for o, b in zip(out, batches)]
    if kind == "token":
        return [o.logits[b["attention_mask"].bool()] for o, b in zip(out, batches)]
    return [o.logits for o in out]


def test_modules_and_sublayer_forward():
    """The layout's modules exist as assumed; the sublayer forward equals the stock forward on padded batches; the
    window, the rotary positions and the pre-norm placement each change it (the comparison sees them)."""
    model = modernbert()
    a = Arch(model)
    assert a.table.fused_qkv and a.table.gated_ffn and a.table.pre_norm and a.rotary
    assert a.module(0, "q").out_features == 3 * 40 and a.module(0, "ffn_in").out_features == 2 * a.ffn_size
    assert [a.attention_window(i) for i in range(4)] == [None, 2, 2, None]
    assert isinstance(a.input_norm(0), torch.nn.Identity)  # layer 0's attn_norm is the identity
    assert isinstance(a.input_norm(1), torch.nn.LayerNorm) and isinstance(a.output_norm(1), torch.nn.Identity)
    batches = random_batches(2, token_types=False, seed=3)
    want = outputs(model, batches)
    for b, w in zip(batches, want):
        with torch.no_grad():
            torch.testing.assert_close(a.head(encode(a, b)), w, rtol=1e-5, atol=1e-6)
    for broken in ({"attention_window": lambda i: None}, {"rotary": False},
                   {"input_norm": lambda s: torch.nn.Identity()}):
        b = copy.copy(a)
        for name, value in broken.items():
            setattr(b, name, value)
        with torch.no_grad():
            assert max(float((b.head(encode(b, x)) - w).abs().max()) for x, w in zip(batches, want)) > 1e-3, broken


@pytest.mark.parametrize("kind", ["classification", "qa"])
def test_masked_physical_reloaded_and_onnx_agree(tmp_path, kind):
    """One model through the chain: masked == physically pruned (Wqkv's three parts and Wi's two halves sliced with
    their units) == saved and loaded by transformers' `from_pretrained(trust_remote_code=True)` == onnxruntime."""
    model = modernbert(kind)
    a = Arch(model)
    hm, nm = uneven_masks(a)
    batches = random_batches(3, token_types=False, seed=2)
    with masked_model(a, hm.float(), nm.float()):
        masked = outputs(model, batches, kind)
    dense = outputs(model, batches, kind)
    assert max(float((m - d).abs().max()) for m, d in zip(masked, dense)) > 1e-3  # the masks matter
    prune_physically(model, hm, nm, width_multiple=1)
    assert a.module(0, "q").out_features == 3 * 2 * 8 and a.module(2, "q").out_features == 3 * 3 * 8
    assert [a.heads_in_layer(i) for i in range(4)] == [2, 0, 3, 5]
    assert [a.module(i, "ffn_in").out_features for i in range(4)] == [2 * int(n) for n in nm.sum(1)]
    pruned = outputs(model, batches, kind)
    for p, m in zip(pruned, masked):
        torch.testing.assert_close(p, m, rtol=1e-4, atol=1e-5)

    folder = save_pruned(model, tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "kprune-modernbert" and cfg["heads_per_layer"] == [2, 0, 3, 5]
    assert cfg["intermediate_sizes"] == nm.sum(1).tolist()
    # kprune registered its classes (the code the folder carries); a stock environment without kprune loads the
    # folder's copy: tests/test_stock_load.py
    stock = AUTO[kind].from_pretrained(folder, trust_remote_code=True).eval()
    for s, p in zip(outputs(stock, batches, kind), pruned):
        torch.testing.assert_close(s, p, rtol=0, atol=1e-5)

    pytest.importorskip("onnxruntime")
    from kprune_lib.artifacts.onnx import export_onnx, session

    record = export_onnx(folder, tmp_path / "m.onnx")
    assert record["max_abs_diff"] <= 1e-4 and record["heads_per_layer"] == [2, 0, 3, 5]
    sess = session(tmp_path / "m.onnx", threads=1)
    for b, p in zip(batches, pruned):
        got = [torch.from_numpy(g) for g in sess.run(None, {k: b[k].numpy() for k in KEYS})]
        got = torch.stack(got, -1)[b["attention_mask"].bool()] if kind == "qa" else got[0]
        torch.testing.assert_close(got, p, rtol=0, atol=1e-4)


def test_token_classification_masked_pruned_reloaded(tmp_path):
    """ModernBertForTokenClassification: the sublayer forward's token logits (final norm and prediction head in)
    equal the stock ones; masked == physically pruned == reloaded by AutoModelForTokenClassification."""
    model = modernbert("token")
    a = Arch(model)
    assert a.token_head and not a.qa_head
    hm, nm = uneven_masks(a)
    batches = random_batches(2, token_types=False, seed=4)
    want = outputs(model, batches, "token")
    with torch.no_grad():
        for b, w in zip(batches, want):
            torch.testing.assert_close(a.head(encode(a, b))[b["attention_mask"].bool()], w, rtol=1e-5, atol=1e-6)
    with masked_model(a, hm.float(), nm.float()):
        masked = outputs(model, batches, "token")
    prune_physically(model, hm, nm)
    pruned = outputs(model, batches, "token")
    stock = transformers.AutoModelForTokenClassification.from_pretrained(
        save_pruned(model, tmp_path / "m"), trust_remote_code=True).eval()
    for m, p, r in zip(masked, pruned, outputs(stock, batches, "token")):
        torch.testing.assert_close(p, m, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r, p, rtol=0, atol=0)


def test_a_pruned_model_prunes_again(tmp_path):
    """load_pruned -> prune_physically over its current units (per-layer masks) -> save -> load: equal outputs, and
    equal to the original model with the combined masks applied."""
    model, original = modernbert(), modernbert()
    a = Arch(model)
    hm, nm = uneven_masks(a)
    prune_physically(model, hm, nm, width_multiple=1)
    loaded = load_pruned(save_pruned(model, tmp_path / "first"))
    kept = [int(k) for k in nm.sum(1)]
    heads2 = [torch.tensor([True, False]), torch.zeros(0, dtype=torch.bool), torch.tensor([False, True, True]),
              torch.tensor([True, False, True, False, True])]
    neurons2 = [torch.arange(kept[0]) % 2 == 0, torch.arange(kept[1]) < 3, torch.zeros(0, dtype=torch.bool),
                torch.arange(kept[3]) % 3 != 0]
    prune_physically(loaded, heads2, neurons2, width_multiple=1)
    again = load_pruned(save_pruned(loaded, tmp_path / "again"))
    assert [Arch(again).heads_in_layer(i) for i in range(4)] == [1, 0, 2, 3]
    hm_all = torch.zeros_like(hm)
    nm_all = torch.zeros_like(nm)
    for i in range(4):
        hm_all[i, hm[i].nonzero().flatten()[heads2[i]]] = True
        nm_all[i, nm[i].nonzero().flatten()[neurons2[i]]] = True
    batches = random_batches(2, token_types=False, seed=3)
    with masked_model(Arch(original), hm_all.float(), nm_all.float()):
        want = outputs(original, batches)
    for g, l2, w in zip(outputs(again, batches), outputs(loaded, batches), want):
        torch.testing.assert_close(g, l2, rtol=0, atol=0)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1])  # global (identity input norm), local (LayerNorm, window)
def test_latency_table_times_the_pruned_sublayers(layer):
    """The functions the latency table times at h heads / n neurons compute the sublayers of the model physically
    pruned to its first h heads / n neurons (rotary positions, the window, the gate and the pre-norm in)."""
    from kprune_lib.costs.timing import _attention_fn, _ffn_fn

    a = Arch(modernbert())
    x = torch.randn(2, 9, a.hidden, generator=torch.Generator().manual_seed(0))
    bias = attention_bias(torch.ones(2, 9), x.dtype)
    for h, n in ((0, 0), (1, 16), (3, a.ffn_size), (5, a.ffn_size)):  # FFN widths a pruned model has unpadded
        with torch.no_grad():
            timed = _attention_fn(a, layer, h, x)(), _ffn_fn(a, layer, n, x)()
        pruned = modernbert()
        prune_physically(pruned, torch.arange(5).expand(4, -1) < h, torch.arange(a.ffn_size).expand(4, -1) < n)
        with torch.no_grad():
            want = [sublayer(Arch(pruned), 2 * layer + k, x, bias)[0] for k in (0, 1)]
        for t, w in zip(timed, want):
            torch.testing.assert_close(t, w, rtol=1e-4, atol=1e-5)


def test_a_gated_neuron_costs_three_matrix_rows():
    """F_neuron = 6·L·d for a gated FFN (input row, gate row, output column), counted against the real matmuls;
    the heads cost BERT's F_head; fisher-greedy budgets with them."""
    from kprune_lib.method.baselines import kwon_fisher

    model = modernbert()
    a = Arch(model)
    flops = UnitFlops.of(a)
    assert flops.gated and flops.neuron(10.0) == 6 * 10.0 * a.hidden
    d, n, T = a.hidden, a.ffn_size, 10
    matmul_flops = 2 * T * d * (2 * n) + 2 * T * n * d  # Wi (2n outputs) and Wo, one sequence of T tokens
    assert flops.neuron(T) * n == matmul_flops
    assert flops.head(T) == model_flops([1], [0], T, d, a.head_size)
    batches = random_batches(2, token_types=False)
    for b in batches:  # gold labels: the Fisher scores take the loss against them
        b["labels"] = torch.arange(len(b["input_ids"])) % 2
    res = kwon_fisher(model, batches, "classification", constraint=0.5, seq_len=10.0)
    assert res.flops_dense == flops.model([5] * 4, [n] * 4, 10.0)
    assert res.flops_pruned == flops.model(res.head_mask.sum(1).tolist(), res.neuron_mask.sum(1).tolist(), 10.0) \
        <= 0.5 * res.flops_dense


def test_what_refuses_it_says_so_in_one_line():
    from kprune_lib.method.kcm import kcm
    from kprune_lib.method.kwon import kwon

    batches = random_batches(1, token_types=False)
    for prune, name in ((kwon, "kwon"), (kcm, "kcm")):
        with pytest.raises(ValueError, match=f"{name} .*modernbert.*use --method kprune or fisher-greedy") as e:
            prune(modernbert(), batches, "classification", constraint=0.5, seq_len=10.0, progress=False)
        assert "\n" not in str(e.value)
    with pytest.raises(UnsupportedArchitecture, match="classifier_pooling 'mean' is not supported") as e:
        Arch(modernbert(classifier_pooling="mean"))
    assert "\n" not in str(e.value)


@needs_shared(MINILM)
@needs_shared(GLUE_DIR / "MRPC")
@needs_shared(DEV)
@pytest.mark.parametrize("task", CLI_TASKS)
def test_kprune_prune_end_to_end(tmp_path, task):
    """`kprune prune` on a tiny ModernBERT checkpoint on disk, one task of each kind (MRPC, STS-B regression, SQuAD
    question answering, token-classification files), with a tokenizer that gives no token types (as ModernBERT's):
    the pruned folder reloads with the reported metric, the FLOPs count the gate, the model card says so."""
    tok = tokenizer()
    tok.model_input_names = ["input_ids", "attention_mask"]
    cfg = transformers.ModernBertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=24,
        max_position_embeddings=512, local_attention=16, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        mask_token_id=tok.mask_token_id)
    summary, out = prune_checkpoint_cli(tmp_path, cfg, task, tok)
    gated = UnitFlops(32, 8, gated=True)
    assert summary["flops_dense"] == pytest.approx(gated.model([4] * 3, [24] * 3, summary["seq_len"]))
    assert summary["flops_physical"] == pytest.approx(gated.model(summary["heads_kept"], summary["neurons_physical"],
                                                                  summary["seq_len"]))
    pruned = load_pruned(out / "model")
    assert [Arch(pruned).heads_in_layer(i) for i in range(3)] == summary["heads_kept"]
    card = (out / "model" / "README.md").read_text()
    assert "ModernBERT's FLOPs count its gated FFN" in card


def test_kprune_meets_a_latency_budget():
    """K-prune's loop against a latency table measured on the model's own (shrunk) blocks: the kept shape's
    predicted latency is within the budget, and the physically pruned model computes the masked one."""
    from kprune_lib.costs.latency import latency_table
    from kprune_lib.method.loop import kprune

    model = modernbert()
    table = latency_table(model, 2, 12, "cpu", 1, progress=False)
    lo, hi = table.feasible()
    budget = lo + 0.5 * (hi - lo)
    batches = random_batches(3, token_types=False, seed=5)
    res = kprune(model, batches, "classification", latency=table, latency_budget_ms=budget, seq_len=10.0,
                 progress=False)
    assert res.predicted_latency_ms == pytest.approx(table.predict(res.heads_kept, res.neurons_kept))
    assert res.predicted_latency_ms <= budget and sum(res.heads_kept) + sum(res.neurons_kept) < 4 * (5 + 24)
    with masked_model(Arch(model), res.head_mask.float(), res.neuron_mask.float()):
        masked = outputs(model, batches)
    prune_physically(model, res.head_mask, res.neuron_mask)
    for p, m in zip(outputs(model, batches), masked):
        torch.testing.assert_close(p, m, rtol=1e-4, atol=1e-5)
