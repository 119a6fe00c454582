"""Configurations of structurally pruned encoders (written by kprune; standalone: imports transformers only).

A pruned model keeps the dense model's configuration (`num_attention_heads`, `intermediate_size` / `hidden_dim`
still name the dense shapes) and adds the shape of every layer after pruning:

- `heads_per_layer`: attention heads kept in each layer (0 = the layer does no attention work at all);
- `intermediate_sizes`: FFN neurons kept in each layer (0 = the FFN contributes nothing).

Each base architecture gets its own `model_type`, "kprune-" + the stock one, which stock transformers does not
know: it must not build a dense model from such a folder, and asks for `trust_remote_code=True` instead.
This file is copied next to every pruned model so that stock transformers can load it.
"""
from huggingface_hub.dataclasses import strict
from transformers import (BertConfig, DebertaV2Config, DistilBertConfig, ElectraConfig, ModernBertConfig, RobertaConfig,
                          XLMRobertaConfig)

PREFIX = "kprune-"


@strict
class KPruneBertConfig(BertConfig):
    model_type = PREFIX + BertConfig.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


@strict
class KPruneRobertaConfig(RobertaConfig):
    model_type = PREFIX + RobertaConfig.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


@strict
class KPruneXLMRobertaConfig(XLMRobertaConfig):
    model_type = PREFIX + XLMRobertaConfig.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


@strict
class KPruneDistilBertConfig(DistilBertConfig):
    model_type = PREFIX + DistilBertConfig.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


@strict
class KPruneElectraConfig(ElectraConfig):
    model_type = PREFIX + ElectraConfig.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


@strict
class KPruneDebertaV2Config(DebertaV2Config):
    model_type = PREFIX + DebertaV2Config.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


@strict
class KPruneModernBertConfig(ModernBertConfig):
    model_type = PREFIX + ModernBertConfig.model_type
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None


CONFIGS = {c.model_type: c for c in (KPruneBertConfig, KPruneRobertaConfig, KPruneXLMRobertaConfig,
                                     KPruneDistilBertConfig, KPruneElectraConfig, KPruneDebertaV2Config,
                                     KPruneModernBertConfig)}
