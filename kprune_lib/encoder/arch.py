"""Architecture adapters: every Hugging Face attribute path lives in one table per architecture.

The rest of the library only talks to `Arch` (a view of one model through its table), never to
`model.bert.encoder.layer[i].attention.self.query` directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kprune_lib.encoder.hf.configuration_kprune import PREFIX
from kprune_lib.encoder.hf.modeling_kprune import LAYOUTS, Layout, get_module as _get, set_module as _set
from kprune_lib.encoder.hf.modeling_kprune import NoAttention  # noqa: F401  (re-exported: the zero-head attention stand-in)
from kprune_lib.encoder.sublayer import Sublayer


@dataclass(frozen=True)
class ArchTable(Layout):
    """Attribute paths of one architecture: the prunable modules (`Layout`, shared with the standalone model code
    saved beside pruned models), plus what the sublayer forward and the heads need."""

    attn_ln: str  # the MHA sublayer's LayerNorm: after its residual sum, or before it on its input when pre_norm
    act: str  # FFN activation module / function
    ffn_ln: str  # the FFN sublayer's LayerNorm, likewise
    heads_attr: str  # config field holding the head count
    ffn_attr: str  # config field holding the FFN width
    token_types: bool  # does the embedding take token_type_ids?
    cls_head: str  # how the sequence-classification head reads the final hidden states (see `classify`)
    # pre-norm blocks: a sublayer adds f(LayerNorm(X)) to X and nothing follows the sum (ModernBERT; the encoder's
    # final_norm is then applied before the task head, `Arch.head`)
    pre_norm: bool = field(default=False, kw_only=True)
    rotary: bool = field(default=False, kw_only=True)  # rotary positions in Q and K (`Arch.rotary_embeddings`)


_BERT_LIKE = dict(attn_ln="attention.output.LayerNorm", act="intermediate.intermediate_act_fn",
                  ffn_ln="output.LayerNorm", heads_attr="num_attention_heads", ffn_attr="intermediate_size")

TABLES: dict[str, ArchTable] = {
    "bert": ArchTable(**vars(LAYOUTS["bert"]), **_BERT_LIKE, token_types=True, cls_head="pooler"),
    "roberta": ArchTable(**vars(LAYOUTS["roberta"]), **_BERT_LIKE, token_types=False, cls_head="hidden"),
    "xlm-roberta": ArchTable(**vars(LAYOUTS["xlm-roberta"]), **_BERT_LIKE, token_types=False, cls_head="hidden"),
    "electra": ArchTable(**vars(LAYOUTS["electra"]), **_BERT_LIKE, token_types=True, cls_head="hidden"),
    "distilbert": ArchTable(**vars(LAYOUTS["distilbert"]), attn_ln="sa_layer_norm", act="ffn.activation",
                            ffn_ln="output_layer_norm", heads_attr="n_heads", ffn_attr="hidden_dim",
                            token_types=False, cls_head="distilbert"),
    # DeBERTa-v2 and -v3: BERT's blocks plus disentangled relative attention (`RelativeAttention`)
    "deberta-v2": ArchTable(**vars(LAYOUTS["deberta-v2"]), **_BERT_LIKE, token_types=True, cls_head="context_pooler"),
    # ModernBERT: pre-norm blocks (layer 0's attn_norm is the identity), rotary positions, global and sliding-window
    # attention layers (`Arch.attention_window`), fused Wqkv and a gated FFN (`Layout`)
    "modernbert": ArchTable(**vars(LAYOUTS["modernbert"]), attn_ln="attn_norm", act="mlp.act", ffn_ln="mlp_norm",
                            heads_attr="num_attention_heads", ffn_attr="intermediate_size", token_types=False,
                            cls_head="modernbert", pre_norm=True, rotary=True),
}


@dataclass(frozen=True)
class RelativeAttention:
    """DeBERTa's disentangled attention, as its config sets it up (`forward.disentangled_scores` computes it).

    A head scores content against content and, per term in `terms`, content against the 2·span relative-position
    embeddings: "c2p" (its queries against the position keys) and "p2c" (its keys against the position queries).
    The position keys / queries come from the head's own query / key projections when `share_att_key`, else from
    the layer's pos_key_proj / pos_query_proj (sliced with the heads: `Layout.head_rows`).
    """

    terms: tuple[str, ...]  # of "c2p", "p2c"
    span: int  # relative positions each side: position_buckets, else max_relative_positions
    buckets: int  # log-bucketed distances (-1: exact distances)
    max_position: int
    share_att_key: bool

    @classmethod
    def of(cls, config) -> "RelativeAttention | None":
        """The relative attention of a DeBERTa-v2 config; None when it has none (plain scaled dot products)."""
        if not getattr(config, "relative_attention", False):
            return None
        max_position = int(getattr(config, "max_relative_positions", -1))
        max_position = max_position if max_position >= 1 else int(config.max_position_embeddings)
        buckets = int(getattr(config, "position_buckets", -1))
        return cls(terms=tuple(t for t in ("c2p", "p2c") if t in (config.pos_att_type or [])),
                   span=buckets if buckets > 0 else max_position, buckets=buckets, max_position=max_position,
                   share_att_key=bool(getattr(config, "share_att_key", False)))

    @property
    def positions(self) -> int:
        """Relative-position rows a head scores against, summed over its terms (`flops.position_flops`)."""
        return 2 * self.span * len(self.terms)


def _check_supported_variant(model_type: str, config) -> None:
    """The variants of a supported family that the sublayer forward does not model: one line naming the setting."""
    if model_type == "modernbert":
        if getattr(config, "classifier_pooling", "cls") != "cls":
            raise UnsupportedArchitecture(f"ModernBERT with classifier_pooling {config.classifier_pooling!r} is not "
                                          "supported; use a checkpoint fine-tuned with classifier_pooling 'cls'")
        return
    if model_type != "deberta-v2":
        return
    if int(getattr(config, "conv_kernel_size", 0) or 0) > 0:
        raise UnsupportedArchitecture("DeBERTa-v2 with a convolution after its first layer (conv_kernel_size > 0, as "
                                      "in deberta-v2-xlarge) is not supported; use a DeBERTa-v3 or a checkpoint "
                                      "without conv_kernel_size")
    if not getattr(config, "relative_attention", False) and config.pos_att_type:  # they only widen the scale then
        raise UnsupportedArchitecture(f"DeBERTa-v2 with pos_att_type {'|'.join(config.pos_att_type)} but "
                                      "relative_attention false is not supported; set relative_attention true or "
                                      "drop pos_att_type")
    head_size = getattr(config, "attention_head_size", None)
    if head_size is not None and head_size * config.num_attention_heads != config.hidden_size:
        raise UnsupportedArchitecture(f"DeBERTa-v2 with attention_head_size {head_size} × {config.num_attention_heads}"
                                      f" heads != hidden_size {config.hidden_size} is not supported")


def base_type(model_type: str | None) -> str | None:
    """The stock architecture of a model type: a pruned folder's "kprune-bert" is laid out as "bert"."""
    return model_type[len(PREFIX):] if model_type and model_type.startswith(PREFIX) else model_type


QA_HEAD, TOKEN_HEAD = "ForQuestionAnswering", "ForTokenClassification"  # task model class suffixes (`has_head`)


class UnsupportedArchitecture(ValueError):
    pass


def arch_table(model: nn.Module) -> ArchTable:
    """The table of a model's architecture; `UnsupportedArchitecture` if there is none (a check that needs no Arch)."""
    model_type = base_type(getattr(model.config, "model_type", None))
    if model_type not in TABLES:
        raise UnsupportedArchitecture(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(TABLES))} "
            "(use a checkpoint of one of these)"
        )
    _check_supported_variant(model_type, model.config)
    return TABLES[model_type]


class Arch:
    """A model seen through its architecture table.

    Built once per model and passed down (`Arch.of` lets an entry point take either). It caches only what the
    config says (the table, the layer count, the dense head count and FFN width, hidden size, head size), and
    physical pruning changes modules, never the config (`physical.prune_physically`); what a layer has now (`units`,
    `heads_in_layer`, `neurons_in_layer`, every module) is read live from the model. So one Arch stays valid from
    loading through masking, tuning, physical pruning and saving; only a copy of the model needs an Arch of its own.
    """

    @classmethod
    def of(cls, model: nn.Module | Arch) -> Arch:
        """`model` itself when it is an Arch already, else a view of it: for entry points that take either."""
        return model if isinstance(model, Arch) else cls(model)

    def __init__(self, model: nn.Module):
        self.model = model
        self.table = arch_table(model)
        self.model_type = base_type(model.config.model_type)
        cfg = model.config
        self.num_layers = len(self.layers)
        self.num_heads = int(getattr(cfg, self.table.heads_attr))  # heads of the dense model
        self.hidden = int(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.dim)
        self.head_size = self.hidden // self.num_heads
        self.ffn_size = int(getattr(cfg, self.table.ffn_attr))  # neurons of the dense model
        self.relative = RelativeAttention.of(cfg) if self.model_type == "deberta-v2" else None  # DeBERTa's, else None
        self.rotary = self.table.rotary  # rotary positions in Q and K (ModernBERT)

    # ---- modules -------------------------------------------------------------------------------
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
        """Output projection of sublayer s (`sublayer.Sublayer`: an MHA's or an FFN's)."""
        s = Sublayer(s)
        return self.module(s.layer, s.pick("o", "ffn_out"))

    def units(self, s: int) -> int:
        """The units sublayer s has now: heads of an MHA, neurons of an FFN (fewer than the config's once pruned)."""
        s = Sublayer(s)
        return s.pick(self.heads_in_layer, self.neurons_in_layer)(s.layer)

    def unit_width(self, s: int) -> int:
        """Projection-input dims per unit of sublayer s: d_h for a head, 1 for a neuron."""
        return Sublayer(s).pick(self.head_size, 1)

    def input_norm(self, s: int) -> nn.Module:
        """What sublayer s applies to its input X before its projections: its LayerNorm in a pre-norm block, else
        the identity."""
        s = Sublayer(s)
        return self.module(s.layer, s.pick("attn_ln", "ffn_ln")) if self.table.pre_norm else nn.Identity()

    def output_norm(self, s: int) -> nn.Module:
        """What sublayer s applies to its sum Y = X + W·a + b: its LayerNorm in a post-norm block, else the
        identity (a pre-norm block's output is Y itself)."""
        s = Sublayer(s)
        return nn.Identity() if self.table.pre_norm else self.module(s.layer, s.pick("attn_ln", "ffn_ln"))

    def attention_window(self, i: int) -> int | None:
        """Layer i's sliding window, as its config's layer_types say: a token attends to the tokens at most this far
        away (ModernBERT's local layers: local_attention // 2); None for global attention."""
        cfg = self.model.config
        if (getattr(cfg, "layer_types", None) or [None] * (i + 1))[i] != "sliding_attention":
            return None
        return int(cfg.sliding_window)

    def rotary_embeddings(self, i: int, seq_len: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (1, T, d_h), of layer i's rotary position embeddings (ModernBERT: the encoder's
        rotary_emb, with the rope parameters of the layer's attention kind)."""
        positions = torch.arange(seq_len, device=like.device)[None]
        return self.base.rotary_emb(like, positions, self.model.config.layer_types[i])

    def position_projections(self, i: int) -> tuple[nn.Linear | None, nn.Linear | None]:
        """Layer i's projections of the relative-position embeddings into (position queries, position keys), for
        the "p2c" and "c2p" terms; None for a term the model does not use (and both without relative attention)."""
        rel = self.relative
        if rel is None:
            return None, None
        attn = self.module(i, "attn")
        if rel.share_att_key:
            pos_q, pos_k = self.module(i, "q"), self.module(i, "k")
        else:
            pos_q, pos_k = getattr(attn, "pos_query_proj", None), getattr(attn, "pos_key_proj", None)
        return (pos_q if "p2c" in rel.terms else None), (pos_k if "c2p" in rel.terms else None)

    def relative_embeddings(self) -> torch.Tensor | None:
        """The 2·span relative-position embeddings every layer projects (normalised as the encoder does)."""
        if self.relative is None:
            return None
        return self.base.encoder.get_rel_embedding()[: 2 * self.relative.span]

    @property
    def rel_positions(self) -> int:
        """Relative-position rows each head scores against (0 without relative attention): `flops.head_flops`."""
        return 0 if self.relative is None else self.relative.positions

    @property
    def is_dense(self) -> bool:
        """Every layer still has the config's heads and neurons (the model was not pruned physically before)."""
        return all(self.heads_in_layer(i) == self.num_heads and self.neurons_in_layer(i) == self.ffn_size
                   for i in range(self.num_layers))

    def heads_in_layer(self, i: int) -> int:
        return self.module(i, "o").in_features // self.head_size

    def neurons_in_layer(self, i: int) -> int:
        return self.module(i, "ffn_out").in_features

    # ---- inputs / outputs ----------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.table.token_types:
            x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        else:
            x = self.embeddings(input_ids=input_ids)
        project = getattr(self.base, "embeddings_project", None)  # ELECTRA when embedding_size != hidden_size
        return x if project is None else project(x)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Sequence-classification logits from the final hidden states (B, T, d) -> (B, C). Eval mode."""
        m, kind = self.model, self.table.cls_head
        if kind == "pooler":
            return m.classifier(self.base.pooler(hidden))
        if kind == "hidden":  # the head reads hidden[:, 0] itself (RoBERTa, XLM-R: tanh; ELECTRA: gelu)
            return m.classifier(hidden)
        if kind == "distilbert":
            return m.classifier(torch.relu(m.pre_classifier(hidden[:, 0])))
        if kind == "context_pooler":  # DeBERTa: the task model's pooler reads hidden[:, 0] (dense + activation)
            return m.classifier(m.pooler(hidden))
        if kind == "modernbert":  # final_norm, cls pooling, prediction head (dense, activation, LayerNorm)
            return m.classifier(m.head(self.base.final_norm(hidden[:, 0])))
        raise AssertionError(kind)

    def _token_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """What a per-token head (QA, token classification) reads: the final hidden states, through ModernBERT's
        final_norm and prediction head."""
        if self.table.cls_head == "modernbert":
            return self.model.head(self.base.final_norm(hidden))
        return hidden

    def qa_logits(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits (B, T) from the final hidden states."""
        proj = getattr(self.model, "qa_outputs", None) or self.model.classifier  # ModernBERT: `classifier`
        start, end = proj(self._token_states(hidden)).split(1, dim=-1)
        return start.squeeze(-1), end.squeeze(-1)

    @property
    def token_head(self) -> bool:
        """Whether the model is a token classifier (`…ForTokenClassification`, stock or pruned)."""
        return has_head(self.model, TOKEN_HEAD)

    @property
    def qa_head(self) -> bool:
        """Whether the model answers questions (`…ForQuestionAnswering`, stock or pruned)."""
        return has_head(self.model, QA_HEAD)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Token-classification logits (B, T, C): the classifier on every position's final hidden state
        (`model.classifier(dropout(hidden))`, dropout the identity in eval mode)."""
        return self.model.classifier(self._token_states(hidden))

    def head(self, hidden: torch.Tensor):
        if self.qa_head:
            return self.qa_logits(hidden)
        return self.token_logits(hidden) if self.token_head else self.classify(hidden)


def has_head(model: nn.Module, suffix: str) -> bool:
    """Whether a model's class (stock or pruned) is a `…<suffix>` task model, e.g. "ForQuestionAnswering"."""
    return any(c.__name__.endswith(suffix) for c in type(model).__mro__)


def supported_architectures() -> list[str]:
    return sorted(TABLES)
