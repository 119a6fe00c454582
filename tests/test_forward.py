"""The sublayer-level forward equals the Hugging Face forward; masked model == physically pruned model."""
import pytest
import torch

from conftest import ARCHS, random_batches, tiny_model
from kprune_lib.encoder.arch import Arch, UnsupportedArchitecture
from kprune_lib.encoder.forward import encode
from kprune_lib.encoder.masks import masked_model
from kprune_lib.config import FFN_WIDTH_MULTIPLE
from kprune_lib.encoder.physical import aligned_width, prune_physically


def hf_logits(model, batch):
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if Arch(model).table.token_types else [])
    with torch.no_grad():
        return model(**{k: batch[k] for k in keys}).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_sublayer_forward_matches_hf(arch):
    model = tiny_model(arch)
    a = Arch(model)
    for b in random_batches(token_types=a.table.token_types):
        with torch.no_grad():
            ours = a.head(encode(a, b))
        torch.testing.assert_close(ours, hf_logits(model, b), rtol=1e-4, atol=1e-5)


def _masks(arch, seed=0):
    g = torch.Generator().manual_seed(seed)
    hm = torch.rand(arch.num_layers, arch.num_heads, generator=g) > 0.4
    nm = torch.rand(arch.num_layers, arch.ffn_size, generator=g) > 0.5
    hm[0] = False  # a layer with no head left: attention must be skipped entirely
    nm[-1] = False  # a layer with no neuron left: the FFN adds nothing (its output bias goes too)
    return hm, nm


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("qa", [False, True])
@pytest.mark.parametrize("multiple", [1, 4, FFN_WIDTH_MULTIPLE])
def test_masked_equals_physically_pruned(arch, qa, multiple):
    """Outputs equal, the FFN widths padded up to the multiple with inert neurons (multiple 1: exactly the mask)."""
    model = tiny_model(arch, qa=qa)
    a = Arch(model)
    hm, nm = _masks(a)
    batches = random_batches(token_types=a.table.token_types)
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if a.table.token_types else [])
    with torch.no_grad(), masked_model(a, hm.float(), nm.float()):
        masked = [model(**{k: b[k] for k in keys}) for b in batches]
    assert not any(h.hooks for h in [a.out_proj(s)._forward_pre_hooks for s in range(4)] if hasattr(h, "hooks"))
    assert all(len(a.out_proj(s)._forward_pre_hooks) == 0 for s in range(2 * a.num_layers))  # hooks removed
    params_before = sum(p.numel() for p in model.parameters())
    prune_physically(model, hm, nm, width_multiple=multiple)
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert [a.heads_in_layer(i) for i in range(a.num_layers)] == hm.sum(1).tolist()
    widths = [aligned_width(int(k), a.ffn_size, multiple) for k in nm.sum(1)]
    assert [a.neurons_in_layer(i) for i in range(a.num_layers)] == widths
    if multiple == 1:
        assert widths == nm.sum(1).tolist()
    for i, k in enumerate(nm.sum(1).tolist()):  # the kept neurons first, then the padding: zero in and out
        w_in = a.module(i, "ffn_in").weight.view(a.table.ffn_in_parts, widths[i], a.hidden)  # gated: [inputs; gates]
        assert w_in[:, k:].abs().sum() == 0 and a.module(i, "ffn_out").weight[:, k:].abs().sum() == 0
        assert w_in[:, :k].abs().sum(-1).min() > 0 if k else True
    with torch.no_grad():
        pruned = [model(**{k: b[k] for k in keys}) for b in batches]
    for m, p in zip(masked, pruned):
        for key in (["start_logits", "end_logits"] if qa else ["logits"]):
            torch.testing.assert_close(p[key], m[key], rtol=1e-4, atol=1e-5)


def test_aligned_width():
    assert [aligned_width(k, 1536, 16) for k in (0, 1, 15, 16, 17, 477, 1530, 1536)] == [0, 16, 16, 16, 32, 480, 1536, 1536]
    assert aligned_width(30, 37, 16) == 32 and aligned_width(33, 37, 16) == 37  # never wider than the layer
    assert aligned_width(477, 1536, 1) == 477
    with pytest.raises(ValueError, match="multiple must be ≥ 1"):
        aligned_width(3, 8, 0)


def test_masks_change_the_output():
    """Guards the test above: a mask that removes units must change the logits."""
    model = tiny_model("bert")
    a = Arch(model)
    hm, nm = _masks(a)
    b = random_batches(1)[0]
    dense = hf_logits(model, b)
    with masked_model(a, hm.float(), nm.float()):
        masked = hf_logits(model, b)
    assert (dense - masked).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["mha", "ffn"])
def test_fully_pruned_sublayer_is_layernorm_of_its_input(arch, kind):
    """Spec: a sublayer with no unit left contributes nothing, bias included: its output is LayerNorm(X) (a pre-norm
    block's: X itself)."""
    from kprune_lib.encoder.forward import attention_bias, sublayer

    model = tiny_model(arch)
    a = Arch(model)
    with torch.no_grad():
        a.out_proj(0 if kind == "mha" else 1).bias.normal_(0, 1.0)  # a bias that would show
    hm = torch.ones(a.num_layers, a.num_heads, dtype=torch.bool)
    nm = torch.ones(a.num_layers, a.ffn_size, dtype=torch.bool)
    (hm if kind == "mha" else nm)[0] = False
    b = random_batches(1, token_types=a.table.token_types)[0]
    s = 0 if kind == "mha" else 1
    ln = a.output_norm(s)
    assert isinstance(ln, torch.nn.LayerNorm) != a.table.pre_norm
    with torch.no_grad():
        x = a.embed(b["input_ids"], b.get("token_type_ids"))
        if s == 1:
            x = sublayer(a, 0, x, attention_bias(b["attention_mask"], x.dtype))[0]
        with masked_model(a, hm.float(), nm.float()):
            out = sublayer(a, s, x, attention_bias(b["attention_mask"], x.dtype))[0]
        torch.testing.assert_close(out, ln(x), rtol=0, atol=1e-6)
        with masked_model(a, hm.float(), nm.float()):
            masked = hf_logits(model, b)
        prune_physically(model, hm, nm)
        assert float(a.out_proj(s).bias.abs().max()) == 0.0
        torch.testing.assert_close(hf_logits(model, b), masked, rtol=1e-4, atol=1e-5)


def test_unknown_architecture_is_named():
    import transformers

    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    supported = "supported: bert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta"
    with pytest.raises(UnsupportedArchitecture, match=supported):
        Arch(transformers.GPT2ForSequenceClassification(cfg))
