"""DeBERTa-v2/v3: disentangled relative attention through every path a pruned model takes.

The shared parametrisations (`conftest.ARCHS`, test_forward / test_io / test_schedule / test_stock_load / test_onnx /
test_flops / test_latency) run DeBERTa-v3's settings (both position terms through the shared Q/K projections). Here:
the variant with its own position projections (share_att_key false, pos_key_proj / pos_query_proj sliced with the
heads) and single position terms; masked == physically pruned == reloaded through the folder's own code ==
onnxruntime on a 3-layer model pruned unevenly (a layer with no head); re-pruning a pruned model; the latency table's
attention sublayer; the variants refused in one line; `kprune prune` end to end on a checkpoint on disk.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
import transformers

from conftest import GLUE_DIR, needs_shared, random_batches, spread_weights, tiny_model
from kprune_lib.artifacts.checkpoint import load_pruned, save_pruned
from kprune_lib.encoder.arch import Arch, RelativeAttention, UnsupportedArchitecture
from kprune_lib.encoder.forward import attention_bias, encode, sublayer
from kprune_lib.encoder.masks import masked_model
from kprune_lib.encoder.physical import prune_physically
from squad_helpers import (CLI_TASKS, DEV, MINILM, one_thread, prune_checkpoint_cli,  # noqa: F401 (one_thread: autouse)
                           tokenizer)

# share_att_key, pos_att_type, position_buckets (-1: exact distances up to max_relative_positions = 6)
VARIANTS = {"own-projections": (False, "p2c|c2p", 4), "c2p-only": (False, "c2p", 4), "p2c-shared": (True, "p2c", 4),
            "exact-distances": (False, "p2c|c2p", -1)}
KEYS = ["input_ids", "attention_mask", "token_type_ids"]


def deberta(variant: str, qa: bool = False, layers: int = 3):
    share, terms, buckets = VARIANTS[variant]
    model = tiny_model("deberta-v2", qa=qa, layers=layers, share_att_key=share)
    if terms.split("|") != model.config.pos_att_type or buckets != 4:  # rebuild (tiny_config: both terms, 4 buckets)
        cfg = model.config
        cfg.pos_att_type = terms.split("|")
        cfg.position_buckets, cfg.max_relative_positions = buckets, (6 if buckets < 0 else -1)
        torch.manual_seed(0)
        model = type(model)(cfg).eval()
        spread_weights(model)
    return model


def uneven_masks(a: Arch):
    """3 layers, 4 heads: layer 0 keeps heads 1 and 3, layer 1 none, layer 2 three; neurons kept unevenly."""
    hm = torch.tensor([[False, True, False, True], [False] * 4, [True, True, False, True]])
    g = torch.Generator().manual_seed(1)
    nm = torch.rand(3, a.ffn_size, generator=g) > 0.5
    nm[2, :] = False
    return hm, nm


def logits(model, batches, qa=False):
    with torch.no_grad():
        out = [model(**{k: b[k] for k in KEYS}) for b in batches]
    return [torch.cat([o.start_logits, o.end_logits], -1) if qa else o.logits for o in out]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_modules_and_forward(variant):
    """The variant's modules exist as assumed, the sublayer forward equals the stock forward, and dropping the
    position terms would change it (the test sees them)."""
    model = deberta(variant)
    a = Arch(model)
    share, terms, buckets = VARIANTS[variant]
    assert a.relative.share_att_key == share and a.relative.terms == tuple(t for t in ("c2p", "p2c") if t in terms)
    assert a.relative.span == (4 if buckets > 0 else 6)  # sequences of up to 12 tokens: distances past the span
    attn = a.module(0, "attn")
    assert hasattr(attn, "pos_key_proj") == (not share and "c2p" in terms)
    assert hasattr(attn, "pos_query_proj") == (not share and "p2c" in terms)
    pos_q, pos_k = a.position_projections(0)
    assert (pos_q is not None) == ("p2c" in terms) and (pos_k is not None) == ("c2p" in terms)
    assert a.rel_positions == 2 * a.relative.span * len(a.relative.terms)
    for b in random_batches(2, token_types=True):
        with torch.no_grad():
            ours = a.head(encode(a, b))
            torch.testing.assert_close(ours, logits(model, [b])[0], rtol=1e-4, atol=1e-5)
            a.relative = None  # plain scaled dot products: the position terms are what the comparison checks
            assert (a.head(encode(a, b)) - ours).abs().max() > 1e-3
            a.relative = Arch(model).relative


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qa", [False, True])
def test_masked_physical_reloaded_and_onnx_agree(tmp_path, variant, qa):
    """One model through the chain: masked == physically pruned (position projections sliced with their heads) ==
    saved and loaded by transformers' `from_pretrained(trust_remote_code=True)` == onnxruntime."""
    model = deberta(variant, qa=qa)
    a = Arch(model)
    hm, nm = uneven_masks(a)
    batches = random_batches(3, token_types=True, seed=2)
    with masked_model(a, hm.float(), nm.float()):
        masked = logits(model, batches, qa)
    dense = logits(model, batches, qa)
    assert max(float((m - d).abs().max()) for m, d in zip(masked, dense)) > 1e-3  # the masks matter
    prune_physically(model, hm, nm, width_multiple=1)
    attn = a.module(0, "attn")
    for name in ("pos_key_proj", "pos_query_proj"):  # the kept heads' slices of the position projections
        if hasattr(attn, name):
            assert getattr(attn, name).out_features == 2 * a.head_size
    assert attn.num_attention_heads == 2 and attn.all_head_size == 2 * a.head_size
    pruned = logits(model, batches, qa)
    for p, m in zip(pruned, masked):
        torch.testing.assert_close(p, m, rtol=1e-4, atol=1e-5)

    folder = save_pruned(model, tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "kprune-deberta-v2" and cfg["heads_per_layer"] == [2, 0, 3]
    auto = transformers.AutoModelForQuestionAnswering if qa else transformers.AutoModelForSequenceClassification
    # kprune registered its classes (the code the folder carries); a stock environment without kprune loads the
    # folder's copy: tests/test_stock_load.py (DeBERTa-v3's settings)
    stock = auto.from_pretrained(folder, trust_remote_code=True).eval()
    for s, p in zip(logits(stock, batches, qa), pruned):
        torch.testing.assert_close(s, p, rtol=0, atol=1e-5)

    pytest.importorskip("onnxruntime")
    from kprune_lib.artifacts.onnx import export_onnx, session

    record = export_onnx(folder, tmp_path / "m.onnx")
    assert record["max_abs_diff"] <= 1e-4 and record["heads_per_layer"] == [2, 0, 3]
    sess = session(tmp_path / "m.onnx", threads=1)
    for b, p in zip(batches, pruned):
        got = sess.run(None, {k: b[k].numpy() for k in KEYS})
        got = torch.cat([torch.from_numpy(g) for g in got], -1)
        torch.testing.assert_close(got, p, rtol=0, atol=1e-4)


def test_token_classification_masked_pruned_reloaded(tmp_path):
    """DebertaV2ForTokenClassification: the sublayer forward's token logits equal the stock ones; masked ==
    physically pruned == reloaded by AutoModelForTokenClassification (trust_remote_code)."""
    torch.manual_seed(0)
    cfg = tiny_model("deberta-v2", layers=3).config
    cfg.num_labels = 5
    model = transformers.DebertaV2ForTokenClassification(cfg).eval()
    a = Arch(model)
    hm, nm = uneven_masks(a)
    batches = random_batches(2, token_types=True, seed=4)
    with torch.no_grad():
        want = [model(**{k: b[k] for k in KEYS}).logits for b in batches]
        for b, w in zip(batches, want):  # on real tokens (padding rows differ: the stock model zeroes them)
            real = b["attention_mask"].bool()
            torch.testing.assert_close(a.head(encode(a, b))[real], w[real], rtol=1e-4, atol=1e-5)
        with masked_model(a, hm.float(), nm.float()):
            masked = [model(**{k: b[k] for k in KEYS}).logits for b in batches]
        prune_physically(model, hm, nm)
        pruned = [model(**{k: b[k] for k in KEYS}).logits for b in batches]
        stock = transformers.AutoModelForTokenClassification.from_pretrained(
            save_pruned(model, tmp_path / "m"), trust_remote_code=True).eval()
        reloaded = [stock(**{k: b[k] for k in KEYS}).logits for b in batches]
    for m, p, r in zip(masked, pruned, reloaded):
        torch.testing.assert_close(p, m, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r, p, rtol=0, atol=0)


def test_a_pruned_model_prunes_again(tmp_path):
    """load_pruned -> prune_physically over its current heads (per-layer masks) -> save -> load: equal outputs,
    and equal to the first model with the combined masks applied."""
    model = deberta("own-projections")
    original = tiny_model("deberta-v2", layers=3, share_att_key=False)
    a = Arch(model)
    hm, nm = uneven_masks(a)
    prune_physically(model, hm, nm, width_multiple=1)
    loaded = load_pruned(save_pruned(model, tmp_path / "first"))
    kept = [int(k) for k in nm.sum(1)]
    heads2 = [torch.tensor([True, False]), torch.zeros(0, dtype=torch.bool), torch.tensor([False, True, True])]
    neurons2 = [torch.arange(kept[0]) % 2 == 0, torch.arange(kept[1]) < 3, torch.zeros(0, dtype=torch.bool)]
    prune_physically(loaded, heads2, neurons2, width_multiple=1)
    again = load_pruned(save_pruned(loaded, tmp_path / "again"))
    b = Arch(again)
    assert [b.heads_in_layer(i) for i in range(3)] == [1, 0, 2]
    assert [b.neurons_in_layer(i) for i in range(3)] == [int(n.sum()) for n in neurons2]
    # the same units as one pruning of the original: heads {1}, {}, {1, 3}; the kept neurons' subsets
    hm_all = torch.tensor([[False, True, False, False], [False] * 4, [False, True, False, True]])
    nm_all = torch.zeros_like(nm)
    for i in range(3):
        nm_all[i, nm[i].nonzero().flatten()[neurons2[i]]] = True
    batches = random_batches(2, token_types=True, seed=3)
    with masked_model(Arch(original), hm_all.float(), nm_all.float()):
        want = logits(original, batches)
    for g, l2, w in zip(logits(again, batches), logits(loaded, batches), want):
        torch.testing.assert_close(g, l2, rtol=0, atol=0)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["own-projections", "p2c-shared"])
def test_latency_table_times_the_pruned_attention_sublayer(variant):
    """The attention function the latency table times at h heads computes the attention sublayer of the model
    physically pruned to its first h heads (its own module: relative positions and position projections in)."""
    from kprune_lib.costs.timing import _attention_fn

    model = deberta(variant)
    a = Arch(model)
    x = torch.randn(2, 9, a.hidden, generator=torch.Generator().manual_seed(0))
    bias = attention_bias(torch.ones(2, 9), x.dtype)
    for h in (0, 1, 3, 4):
        with torch.no_grad():
            timed = _attention_fn(a, 1, h, x)()
        pruned = deberta(variant)
        hm = torch.arange(4).expand(3, -1) < h
        prune_physically(pruned, hm, torch.ones(3, a.ffn_size, dtype=torch.bool))
        with torch.no_grad():
            want = sublayer(Arch(pruned), 2, x, bias)[0]
        torch.testing.assert_close(timed, want, rtol=1e-4, atol=1e-5)


def test_fisher_greedy_counts_the_position_terms():
    """The Fisher baseline's greedy selection and its FLOPs use DeBERTa's F_head (position terms in)."""
    from kprune_lib.costs.flops import model_flops
    from kprune_lib.method.baselines import kwon_fisher

    model = deberta("own-projections")
    a = Arch(model)
    batches = random_batches(2, token_types=True)
    for b in batches:  # gold labels: the Fisher scores take the loss against them
        b["labels"] = torch.arange(len(b["input_ids"])) % 2
    res = kwon_fisher(model, batches, "classification", constraint=0.5, seq_len=10.0)
    assert res.flops_dense == model_flops([4] * 3, [a.ffn_size] * 3, 10.0, a.hidden, a.head_size, a.rel_positions)
    assert res.flops_pruned == model_flops(res.head_mask.sum(1).tolist(), res.neuron_mask.sum(1).tolist(), 10.0,
                                           a.hidden, a.head_size, a.rel_positions) <= 0.5 * res.flops_dense


def test_kwon_refuses_what_its_formula_cannot_count():
    from kprune_lib.method.kwon import kwon

    with pytest.raises(ValueError, match="kwon counts BERT's MACs and cannot budget deberta-v2's relative-position"):
        kwon(deberta("own-projections"), random_batches(1, token_types=True), "classification", constraint=0.5,
             seq_len=10.0, progress=False)


def test_unsupported_variants_are_one_line():
    cfg = tiny_model("deberta-v2").config
    cfg.conv_kernel_size = 3
    with pytest.raises(UnsupportedArchitecture, match=r"conv_kernel_size > 0.*DeBERTa-v3") as e:
        Arch(transformers.DebertaV2ForSequenceClassification(cfg))
    assert "\n" not in str(e.value)
    cfg.conv_kernel_size, cfg.relative_attention = 0, False  # the position terms off, their scale still on
    with pytest.raises(UnsupportedArchitecture, match=re.escape("pos_att_type p2c|c2p but relative_attention false")):
        Arch(transformers.DebertaV2ForSequenceClassification(cfg))


def test_without_relative_attention_it_is_bert_with_deberta_modules():
    """relative_attention false (absolute positions, token types): plain scaled dot products, no position FLOPs."""
    torch.manual_seed(0)
    cfg = transformers.DebertaV2Config(vocab_size=99, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                       intermediate_size=24, max_position_embeddings=64, type_vocab_size=2)
    model = transformers.DebertaV2ForSequenceClassification(cfg).eval()
    spread_weights(model)
    a = Arch(model)
    assert a.relative is None and a.rel_positions == 0 and a.position_projections(0) == (None, None)
    for b in random_batches(2, token_types=True):
        b["token_type_ids"][:, 2:] = 1
        with torch.no_grad():
            torch.testing.assert_close(a.head(encode(a, b)), logits(model, [b])[0], rtol=1e-4, atol=1e-5)


@needs_shared(MINILM)
@needs_shared(GLUE_DIR / "MRPC")
@needs_shared(DEV)
@pytest.mark.parametrize("task", CLI_TASKS)
def test_kprune_prune_end_to_end(tmp_path, task):
    """`kprune prune` on a tiny DeBERTa-v3-shaped checkpoint on disk, one task of each kind (MRPC, STS-B regression,
    SQuAD question answering, token-classification files): the pruned folder reloads with the reported metric, the
    FLOPs count the position terms, the model card says so."""
    from kprune_lib.costs.flops import model_flops

    cfg = transformers.DebertaV2Config(
        vocab_size=tokenizer().vocab_size, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
        intermediate_size=24, max_position_embeddings=512, relative_attention=True, pos_att_type="p2c|c2p",
        position_buckets=16, max_relative_positions=-1, share_att_key=True, norm_rel_ebd="layer_norm",
        position_biased_input=False)
    summary, out = prune_checkpoint_cli(tmp_path, cfg, task)
    positions = RelativeAttention.of(cfg).positions
    assert positions == 2 * 16 * 2
    assert summary["flops_dense"] == pytest.approx(model_flops([4, 4], [24, 24], summary["seq_len"], 32, 8,
                                                               positions))
    assert summary["flops_physical"] == pytest.approx(model_flops(summary["heads_kept"], summary["neurons_physical"],
                                                                  summary["seq_len"], 32, 8, positions))
    pruned = load_pruned(out / "model")
    assert [Arch(pruned).heads_in_layer(i) for i in range(2)] == summary["heads_kept"]
    card = (out / "model" / "README.md").read_text()
    assert "DeBERTa's FLOPs include its relative-position terms (p2c and c2p)" in card
