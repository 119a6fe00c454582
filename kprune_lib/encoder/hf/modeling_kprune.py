"""Structurally pruned BERT-family encoders (written by kprune; standalone: imports torch and transformers only).

Every class here is a stock transformers class that, once built, shrinks each transformer block to the shape
recorded in its configuration (`heads_per_layer`, `intermediate_sizes`): the Q/K/V projections keep the first
h·d_h outputs (DeBERTa's relative-position projections too: `Layout.head_rows`; ModernBERT's fused Wqkv the first
h·d_h of each of its three parts), the attention output projection the first h·d_h inputs, the FFN the first n
neurons (ModernBERT's gated FFN: the first n rows of both halves of its input projection). The weights of a pruned model are saved in that order, so
`from_pretrained` loads them unchanged. A block with no head left does no Q/K/V work (`NoAttention`); a projection
with no input left adds nothing (its bias is zero).

This file is copied next to every pruned model so that stock transformers can load it with
`trust_remote_code=True`; kprune itself uses the same functions to prune models physically.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import (
    BertForQuestionAnswering, BertForSequenceClassification, BertModel,
    DebertaV2ForQuestionAnswering, DebertaV2ForSequenceClassification, DebertaV2ForTokenClassification, DebertaV2Model,
    DistilBertForQuestionAnswering, DistilBertForSequenceClassification, DistilBertModel,
    ElectraForQuestionAnswering, ElectraForSequenceClassification, ElectraModel,
    ModernBertForQuestionAnswering, ModernBertForSequenceClassification, ModernBertForTokenClassification,
    ModernBertModel,
    RobertaForQuestionAnswering, RobertaForSequenceClassification, RobertaModel,
    XLMRobertaForQuestionAnswering, XLMRobertaForSequenceClassification, XLMRobertaModel,
)
from transformers import (  # token classification
    BertForTokenClassification, DistilBertForTokenClassification, ElectraForTokenClassification,
    RobertaForTokenClassification, XLMRobertaForTokenClassification,
)

from .configuration_kprune import (
    PREFIX, KPruneBertConfig, KPruneDebertaV2Config, KPruneDistilBertConfig, KPruneElectraConfig, KPruneModernBertConfig,
    KPruneRobertaConfig, KPruneXLMRobertaConfig,
)


@dataclass(frozen=True)
class Layout:
    """Where the prunable modules of one architecture live (base relative to the task model, the rest to a block)."""

    base: str  # the encoder model inside a task model (its `base_model_prefix`)
    layers: str  # ModuleList of transformer blocks, relative to the encoder model
    attn: str  # the self-attention module holding Q/K/V (replaced by `NoAttention` when no head is left)
    q: str
    k: str
    v: str
    o: str  # attention output projection (d × h·d_h)
    ffn_in: str  # FFN input projection (n × d)
    ffn_out: str  # FFN output projection (d × n)
    # further projections with h·d_h outputs, one d_h slice per head, that go with their heads where the block has
    # them (DeBERTa's relative-position projections)
    head_rows: tuple[str, ...] = field(default=(), kw_only=True)
    # a gated (GLU) FFN: ffn_in's outputs are [inputs; gates], 2n rows, and neuron j is rows j and n + j with column
    # j of ffn_out (ModernBERT: act(input) * gate)
    gated_ffn: bool = field(default=False, kw_only=True)

    @property
    def fused_qkv(self) -> bool:
        """Q, K and V are one projection whose outputs are [queries; keys; values] (ModernBERT's Wqkv)."""
        return self.q == self.k == self.v

    @property
    def ffn_in_parts(self) -> int:
        """Row blocks of the FFN's input projection, one row per neuron in each: 2 for a gated FFN, else 1."""
        return 2 if self.gated_ffn else 1


_BERT_LIKE = dict(layers="encoder.layer", attn="attention.self", q="attention.self.query",
                  k="attention.self.key", v="attention.self.value", o="attention.output.dense",
                  ffn_in="intermediate.dense", ffn_out="output.dense")

LAYOUTS: dict[str, Layout] = {
    "bert": Layout(base="bert", **_BERT_LIKE),
    "roberta": Layout(base="roberta", **_BERT_LIKE),
    "xlm-roberta": Layout(base="roberta", **_BERT_LIKE),
    "electra": Layout(base="electra", **_BERT_LIKE),
    "distilbert": Layout(base="distilbert", layers="transformer.layer", attn="attention", q="attention.q_lin",
                         k="attention.k_lin", v="attention.v_lin", o="attention.out_lin", ffn_in="ffn.lin1",
                         ffn_out="ffn.lin2"),
    "deberta-v2": Layout(base="deberta", layers="encoder.layer", attn="attention.self", q="attention.self.query_proj",
                         k="attention.self.key_proj", v="attention.self.value_proj", o="attention.output.dense",
                         ffn_in="intermediate.dense", ffn_out="output.dense",
                         head_rows=("attention.self.pos_key_proj", "attention.self.pos_query_proj")),
    # pre-norm blocks; Wqkv fused (3·h·d_h rows), Wi gated (2·n rows)
    "modernbert": Layout(base="model", layers="layers", attn="attn", q="attn.Wqkv", k="attn.Wqkv", v="attn.Wqkv",
                         o="attn.Wo", ffn_in="mlp.Wi", ffn_out="mlp.Wo", gated_ffn=True),
}


def get_module(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_module(obj, path: str, value) -> None:
    *parents, last = path.split(".")
    setattr(get_module(obj, ".".join(parents)) if parents else obj, last, value)


def new_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear holding copies of the given weight (out × in) and bias (no initialisation of a throwaway tensor)."""
    new = nn.Linear(1, 1, bias=bias is not None, device="meta")
    new.out_features, new.in_features = weight.shape
    new.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().clone())
    return new


def keep_rows(lin: nn.Linear, idx) -> nn.Linear:
    """Keep output features idx (an index tensor or a slice) of a Linear."""
    return new_linear(lin.weight[idx], None if lin.bias is None else lin.bias[idx])


def part_rows(idx, width: int, parts: int) -> torch.Tensor:
    """The rows `idx` (an index tensor or a slice of range(width)) of each of `parts` consecutive blocks of `width`
    rows: a fused projection's kept rows (Q, K and V of ModernBERT's Wqkv; a gated FFN's inputs and gates)."""
    idx = torch.arange(width)[idx] if isinstance(idx, slice) else idx
    return torch.cat([p * width + idx for p in range(parts)])


def keep_columns(lin: nn.Linear, idx) -> nn.Linear:
    """Keep input features idx of a Linear. With no input left the projection adds nothing: its bias is zeroed
    (kept as a parameter, so that the saved shapes stay regular) and the sublayer becomes LayerNorm(X)."""
    weight = lin.weight[:, idx]
    bias = lin.bias if lin.bias is None or weight.shape[1] else torch.zeros_like(lin.bias)
    return new_linear(weight, bias)


class NoAttention(nn.Module):
    """Stands in for a self-attention module whose heads were all pruned: no Q/K/V work at all.

    Returns an empty context (…, 0), so that the output projection (d × 0) yields its (zero) bias only. Where the
    architecture keeps the output projection inside the attention module (DistilBERT), it is held here under the
    same name and applied.
    """

    def __init__(self, out_name: str | None = None, out_proj: nn.Linear | None = None):
        super().__init__()
        self.out_name = out_name
        if out_name is not None:
            self.add_module(out_name, out_proj)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return (getattr(self, self.out_name)(empty) if self.out_name else empty), None


def prune_block(block: nn.Module, layout: Layout, dims, neurons, heads: int, head_size: int) -> None:
    """Keep the attention context dims `dims` (whole heads, `heads` of them) and FFN neurons `neurons` of a block."""
    out_proj = keep_columns(get_module(block, layout.o), dims)
    if heads == 0:
        inner = layout.o[len(layout.attn) + 1:] if layout.o.startswith(layout.attn + ".") else None
        set_module(block, layout.attn, NoAttention(inner, out_proj if inner else None))
    else:
        for path in dict.fromkeys((layout.q, layout.k, layout.v)):  # one path when fused: [Q; K; V] rows
            lin, parts = get_module(block, path), 3 if layout.fused_qkv else 1
            set_module(block, path, keep_rows(lin, part_rows(dims, lin.out_features // parts, parts).to(lin.weight.device)))
        for path in layout.head_rows:
            parent, _, name = path.rpartition(".")
            if hasattr(get_module(block, parent), name):  # absent when the block does without it (share_att_key)
                set_module(block, path, keep_rows(get_module(block, path), dims))
        attn = get_module(block, layout.attn)
        for name in ("num_attention_heads", "n_heads"):
            if hasattr(attn, name):
                setattr(attn, name, heads)
        if hasattr(attn, "all_head_size"):
            attn.all_head_size = heads * head_size
    set_module(block, layout.o, out_proj)
    ffn_in, parts = get_module(block, layout.ffn_in), layout.ffn_in_parts
    set_module(block, layout.ffn_in,
               keep_rows(ffn_in, part_rows(neurons, ffn_in.out_features // parts, parts).to(ffn_in.weight.device)))
    set_module(block, layout.ffn_out, keep_columns(get_module(block, layout.ffn_out), neurons))


def shrink_to_config(model) -> None:
    """Give every block of a freshly built model the pruned shape of its config (keeps the first units)."""
    cfg = model.config
    heads, sizes = cfg.heads_per_layer, cfg.intermediate_sizes
    if heads is None or sizes is None:
        return  # nothing recorded: the dense shape
    layout = LAYOUTS[cfg.model_type[len(PREFIX):]]
    blocks = get_module(model.base_model, layout.layers)
    if len(heads) != len(blocks) or len(sizes) != len(blocks):
        raise ValueError(f"config.json lists {len(heads)} head counts and {len(sizes)} FFN widths for "
                         f"{len(blocks)} layers; the pruned model's config.json is inconsistent, re-save it")
    head_size = cfg.hidden_size // cfg.num_attention_heads
    for block, h, n in zip(blocks, heads, sizes):
        prune_block(block, layout, slice(0, h * head_size), slice(0, n), h, head_size)


class PrunedShape:
    """Mixin: build the stock model, then shrink it to the configuration's per-layer shapes."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        shrink_to_config(self)


class KPruneBertModel(PrunedShape, BertModel):
    config_class = KPruneBertConfig


class KPruneBertForSequenceClassification(PrunedShape, BertForSequenceClassification):
    config_class = KPruneBertConfig


class KPruneBertForQuestionAnswering(PrunedShape, BertForQuestionAnswering):
    config_class = KPruneBertConfig


class KPruneBertForTokenClassification(PrunedShape, BertForTokenClassification):
    config_class = KPruneBertConfig


class KPruneRobertaForTokenClassification(PrunedShape, RobertaForTokenClassification):
    config_class = KPruneRobertaConfig


class KPruneXLMRobertaForTokenClassification(PrunedShape, XLMRobertaForTokenClassification):
    config_class = KPruneXLMRobertaConfig


class KPruneDistilBertForTokenClassification(PrunedShape, DistilBertForTokenClassification):
    config_class = KPruneDistilBertConfig


class KPruneElectraForTokenClassification(PrunedShape, ElectraForTokenClassification):
    config_class = KPruneElectraConfig


class KPruneRobertaModel(PrunedShape, RobertaModel):
    config_class = KPruneRobertaConfig


class KPruneRobertaForSequenceClassification(PrunedShape, RobertaForSequenceClassification):
    config_class = KPruneRobertaConfig


class KPruneRobertaForQuestionAnswering(PrunedShape, RobertaForQuestionAnswering):
    config_class = KPruneRobertaConfig


class KPruneXLMRobertaModel(PrunedShape, XLMRobertaModel):
    config_class = KPruneXLMRobertaConfig


class KPruneXLMRobertaForSequenceClassification(PrunedShape, XLMRobertaForSequenceClassification):
    config_class = KPruneXLMRobertaConfig


class KPruneXLMRobertaForQuestionAnswering(PrunedShape, XLMRobertaForQuestionAnswering):
    config_class = KPruneXLMRobertaConfig


class KPruneDistilBertModel(PrunedShape, DistilBertModel):
    config_class = KPruneDistilBertConfig


class KPruneDistilBertForSequenceClassification(PrunedShape, DistilBertForSequenceClassification):
    config_class = KPruneDistilBertConfig


class KPruneDistilBertForQuestionAnswering(PrunedShape, DistilBertForQuestionAnswering):
    config_class = KPruneDistilBertConfig


class KPruneElectraModel(PrunedShape, ElectraModel):
    config_class = KPruneElectraConfig


class KPruneElectraForSequenceClassification(PrunedShape, ElectraForSequenceClassification):
    config_class = KPruneElectraConfig


class KPruneElectraForQuestionAnswering(PrunedShape, ElectraForQuestionAnswering):
    config_class = KPruneElectraConfig


class KPruneDebertaV2Model(PrunedShape, DebertaV2Model):
    config_class = KPruneDebertaV2Config


class KPruneDebertaV2ForSequenceClassification(PrunedShape, DebertaV2ForSequenceClassification):
    config_class = KPruneDebertaV2Config


class KPruneDebertaV2ForQuestionAnswering(PrunedShape, DebertaV2ForQuestionAnswering):
    config_class = KPruneDebertaV2Config


class KPruneDebertaV2ForTokenClassification(PrunedShape, DebertaV2ForTokenClassification):
    config_class = KPruneDebertaV2Config


class KPruneModernBertModel(PrunedShape, ModernBertModel):
    config_class = KPruneModernBertConfig


class KPruneModernBertForSequenceClassification(PrunedShape, ModernBertForSequenceClassification):
    config_class = KPruneModernBertConfig


class KPruneModernBertForQuestionAnswering(PrunedShape, ModernBertForQuestionAnswering):
    config_class = KPruneModernBertConfig


class KPruneModernBertForTokenClassification(PrunedShape, ModernBertForTokenClassification):
    config_class = KPruneModernBertConfig
