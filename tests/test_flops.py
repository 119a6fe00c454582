"""The paper's FLOPs formula equals the matmul FLOPs counted by torch on one layer."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import tiny_model
from kprune_lib.encoder.arch import Arch
from kprune_lib.costs.flops import UnitFlops, head_flops, model_flops, neuron_flops
from kprune_lib.encoder.forward import attention_bias, sublayer
from kprune_lib.encoder.physical import prune_physically


def counted(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def math_attention(q, k, v, attn_mask=None):
    """Explicit attention (FlopCounterMode does not count the fused CPU kernel)."""
    w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + attn_mask, dim=-1)
    return w @ v


ARCH_CASES = {"bert": ("bert", {}), "deberta": ("deberta-v2", {}),  # DeBERTa: position terms through the shared Q/K
              "deberta-pos-proj": ("deberta-v2", {"share_att_key": False}),  # … through pos_key_proj / pos_query_proj
              "modernbert": ("modernbert", {})}  # fused Wqkv, gated FFN (6·L·d a neuron), rotary, a local layer


@pytest.mark.parametrize("case", ARCH_CASES)
@pytest.mark.parametrize("multiple", [1, 16])
def test_formula_equals_counted_matmuls(monkeypatch, multiple, case):
    """The formula over the kept units (multiple 1), and over the padded physical width (`flops_physical`); for
    DeBERTa the position terms (`position_flops`) included, at a batch of one; for ModernBERT the gate."""
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", math_attention)
    arch, kw = ARCH_CASES[case]
    model = tiny_model(arch, hidden=48, heads=4, ffn=40, layers=2, **kw)
    hm = torch.tensor([[True, False, True, True], [False, False, False, False]])
    nm = torch.zeros(2, 40, dtype=torch.bool)
    nm[0, :17] = True
    prune_physically(model, hm, nm, width_multiple=multiple)
    a = Arch(model)
    T = 11
    x = torch.randn(1, T, a.hidden)
    bias = attention_bias(torch.ones(1, T), x.dtype)
    with torch.no_grad():
        total = sum(counted(lambda s=s: sublayer(a, s, x, bias)) for s in range(4))
    flops = UnitFlops.of(a)
    assert total == flops.model([3, 0], [17 if multiple == 1 else 32, 0], T)
    assert total == model_flops([3, 0], [17 if multiple == 1 else 32, 0], T, a.hidden, a.head_size, a.rel_positions,
                                a.table.gated_ffn)
    dense = Arch(tiny_model(arch, hidden=48, heads=4, ffn=40, **kw))
    assert dense.rel_positions == (2 * 2 * 4 if arch == "deberta-v2" else 0)  # c2p and p2c, 2 × 4 buckets each
    assert flops.gated == (arch == "modernbert")
    with torch.no_grad():
        assert counted(lambda: sublayer(dense, 0, x, bias)) == 4 * head_flops(T, 48, 12, dense.rel_positions)
        assert counted(lambda: sublayer(dense, 1, x, bias)) == 40 * neuron_flops(T, 48, flops.gated)
