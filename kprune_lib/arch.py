"""Architecture adapters: every Hugging Face attribute path lives in one table per architecture.

The rest of the library only talks to `Arch` (a view of one model through its table), never to
`model.bert.encoder.layer[i].attention.self.query` directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ArchTable:
    """Attribute paths of one architecture (relative to the task model, then to one layer)."""

    base: str  # the encoder model inside the task model
    layers: str  # ModuleList of transformer blocks, relative to base
    attn: str  # self-attention module holding q/k/v (replaced by `NoAttention` when all heads go)
    q: str
    k: str
    v: str
    o: str  # MHA output projection  (d × H·d_h)
    attn_ln: str  # LayerNorm after the MHA residual sum
    ffn_in: str  # FFN input projection (N × d)
    act: str  # FFN activation module / function
    ffn_out: str  # FFN output projection (d × N)
    ffn_ln: str  # LayerNorm after the FFN residual sum
    heads_attr: str  # config field holding the head count
    ffn_attr: str  # config field holding the FFN width
    token_types: bool  # does the embedding take token_type_ids?
    cls_head: str  # how the sequence-classification head reads the final hidden states (see `classify`)


TABLES: dict[str, ArchTable] = {
    "bert": ArchTable(
        base="bert", layers="encoder.layer", attn="attention.self",
        q="attention.self.query", k="attention.self.key", v="attention.self.value",
        o="attention.output.dense", attn_ln="attention.output.LayerNorm",
        ffn_in="intermediate.dense", act="intermediate.intermediate_act_fn",
        ffn_out="output.dense", ffn_ln="output.LayerNorm",
        heads_attr="num_attention_heads", ffn_attr="intermediate_size", token_types=True, cls_head="pooler",
    ),
    "roberta": ArchTable(
        base="roberta", layers="encoder.layer", attn="attention.self",
        q="attention.self.query", k="attention.self.key", v="attention.self.value",
        o="attention.output.dense", attn_ln="attention.output.LayerNorm",
        ffn_in="intermediate.dense", act="intermediate.intermediate_act_fn",
        ffn_out="output.dense", ffn_ln="output.LayerNorm",
        heads_attr="num_attention_heads", ffn_attr="intermediate_size", token_types=False, cls_head="roberta",
    ),
    "distilbert": ArchTable(
        base="distilbert", layers="transformer.layer", attn="attention",
        q="attention.q_lin", k="attention.k_lin", v="attention.v_lin",
        o="attention.out_lin", attn_ln="sa_layer_norm",
        ffn_in="ffn.lin1", act="ffn.activation", ffn_out="ffn.lin2", ffn_ln="output_layer_norm",
        heads_attr="n_heads", ffn_attr="hidden_dim", token_types=False, cls_head="distilbert",
    ),
}


class UnsupportedArchitecture(ValueError):
    pass


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


class NoAttention(nn.Module):
    """Stands in for a self-attention module whose heads were all pruned: no Q/K/V work at all.

    Returns an empty context (…, 0) so that the output projection (d × 0) yields its bias only.
    Where the architecture keeps the output projection inside the attention module (DistilBERT),
    it is kept here under the same name and applied.
    """

    def __init__(self, out_name: str | None = None, out_proj: nn.Linear | None = None):
        super().__init__()
        self.out_name = out_name
        if out_name is not None:
            self.add_module(out_name, out_proj)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return (getattr(self, self.out_name)(empty) if self.out_name else empty), None


class Arch:
    """A model seen through its architecture table."""

    def __init__(self, model: nn.Module):
        model_type = getattr(model.config, "model_type", None)
        if model_type not in TABLES:
            raise UnsupportedArchitecture(
                f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(TABLES))}"
            )
        self.model = model
        self.table = TABLES[model_type]
        self.model_type = model_type
        cfg = model.config
        self.num_layers = len(self.layers)
        self.num_heads = int(getattr(cfg, self.table.heads_attr))  # heads of the dense model
        self.hidden = int(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.dim)
        self.head_size = self.hidden // self.num_heads
        self.ffn_size = int(getattr(cfg, self.table.ffn_attr))  # neurons of the dense model

    # ---- modules -------------------------------------------------------------------------------
    def o_inside_attn(self) -> str | None:
        """Name of the output projection inside the attention module, if it lives there (DistilBERT)."""
        prefix = self.table.attn + "."
        return self.table.o[len(prefix):] if self.table.o.startswith(prefix) else None

    @property
    def base(self) -> nn.Module:
        return _get(self.model, self.table.base)

    @property
    def embeddings(self) -> nn.Module:
        return self.base.embeddings

    @property
    def layers(self) -> nn.ModuleList:
        return _get(_get(self.model, self.table.base), self.table.layers)

    def layer(self, i: int) -> nn.Module:
        return self.layers[i]

    def module(self, i: int, name: str):
        """`name` is a field of the table (q, k, v, o, attn_ln, ffn_in, act, ffn_out, ffn_ln, attn)."""
        return _get(self.layers[i], getattr(self.table, name))

    def replace(self, i: int, name: str, new) -> None:
        _set(self.layers[i], getattr(self.table, name), new)

    def out_proj(self, s: int) -> nn.Linear:
        """Output projection of sublayer s (even: MHA, odd: FFN)."""
        return self.module(s // 2, "o" if s % 2 == 0 else "ffn_out")

    def heads_in_layer(self, i: int) -> int:
        return self.module(i, "o").in_features // self.head_size

    def neurons_in_layer(self, i: int) -> int:
        return self.module(i, "ffn_out").in_features

    # ---- inputs / outputs ----------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.table.token_types:
            return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.embeddings(input_ids=input_ids)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Sequence-classification logits from the final hidden states (B, T, d) -> (B, C). Eval mode."""
        m, kind = self.model, self.table.cls_head
        if kind == "pooler":
            return m.classifier(self.base.pooler(hidden))
        if kind == "roberta":
            return m.classifier(hidden)
        if kind == "distilbert":
            return m.classifier(torch.relu(m.pre_classifier(hidden[:, 0])))
        raise AssertionError(kind)

    def qa_logits(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits (B, T) from the final hidden states."""
        start, end = self.model.qa_outputs(hidden).split(1, dim=-1)
        return start.squeeze(-1), end.squeeze(-1)

    def head(self, hidden: torch.Tensor):
        return self.qa_logits(hidden) if hasattr(self.model, "qa_outputs") else self.classify(hidden)


def supported_architectures() -> list[str]:
    return sorted(TABLES)
