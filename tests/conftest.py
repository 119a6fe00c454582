"""Shared fixtures: tiny random models of every supported architecture, and paths to the shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))
GLUE_DIR = SHARED / "data" / "glue"
MODELS_DIR = SHARED / "models"

TINY = dict(hidden=32, heads=4, layers=2, ffn=24, vocab=99)


def tiny_config(arch: str, num_labels: int = 2, **kw):
    h, n, L, f, v = (kw.get(k, TINY[k]) for k in ("hidden", "heads", "layers", "ffn", "vocab"))
    if arch == "bert":
        return transformers.BertConfig(vocab_size=v, hidden_size=h, num_attention_heads=n, num_hidden_layers=L,
                                       intermediate_size=f, max_position_embeddings=64, num_labels=num_labels)
    if arch == "roberta":
        return transformers.RobertaConfig(vocab_size=v, hidden_size=h, num_attention_heads=n, num_hidden_layers=L,
                                          intermediate_size=f, max_position_embeddings=70, num_labels=num_labels,
                                          pad_token_id=1)
    if arch == "xlm-roberta":
        return transformers.XLMRobertaConfig(vocab_size=v, hidden_size=h, num_attention_heads=n, num_hidden_layers=L,
                                             intermediate_size=f, max_position_embeddings=70, num_labels=num_labels,
                                             pad_token_id=1)
    if arch == "electra":  # embedding_size != hidden_size: the embeddings are projected (embeddings_project)
        return transformers.ElectraConfig(vocab_size=v, embedding_size=h // 2, hidden_size=h, num_attention_heads=n,
                                          num_hidden_layers=L, intermediate_size=f, max_position_embeddings=64,
                                          num_labels=num_labels)
    if arch == "distilbert":
        return transformers.DistilBertConfig(vocab_size=v, dim=h, n_heads=n, n_layers=L, hidden_dim=f,
                                             max_position_embeddings=64, num_labels=num_labels)
    if arch == "deberta-v2":  # DeBERTa-v3's settings: both position terms through the shared Q/K projections,
        # log-bucketed distances (4 buckets each side: sequences of 12 tokens reach past them), LayerNorm'd
        return transformers.DebertaV2Config(vocab_size=v, hidden_size=h, num_attention_heads=n, num_hidden_layers=L,
                                            intermediate_size=f, max_position_embeddings=64, num_labels=num_labels,
                                            relative_attention=True, pos_att_type="p2c|c2p", position_buckets=4,
                                            max_relative_positions=-1, share_att_key=kw.get("share_att_key", True),
                                            norm_rel_ebd="layer_norm", position_biased_input=False)
    if arch == "modernbert":  # global and sliding-window layers alternating (window: 2 tokens each side, shorter than
        # the test sequences), rotary positions, gated FFN, pre-norm blocks; token ids inside the tiny vocabulary
        return transformers.ModernBertConfig(vocab_size=v, hidden_size=h, num_attention_heads=n, num_hidden_layers=L,
                                             intermediate_size=f, max_position_embeddings=64, num_labels=num_labels,
                                             local_attention=4, global_attn_every_n_layers=2, pad_token_id=1,
                                             bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                                             mask_token_id=4, attention_bias=True, mlp_bias=True)
    raise ValueError(arch)


def tiny_model(arch: str = "bert", num_labels: int = 2, qa: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = tiny_config(arch, num_labels=num_labels if not qa else 2, **kw)
    if num_labels == 1:
        cfg.problem_type = "regression"
    auto = transformers.AutoModelForQuestionAnswering if qa else transformers.AutoModelForSequenceClassification
    return spread_weights(auto.from_config(cfg).eval())


def spread_weights(model, std: float = 0.2):
    """Every matrix of `model` redrawn ~ N(0, std²), in place (returns the model): larger-than-init weights, so that
    scores spread and pruning matters."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model


def random_batches(n_batches: int = 3, batch: int = 4, max_len: int = 12, vocab: int = 99, seed: int = 0,
                   token_types: bool = True):
    """Padded batches with varied lengths (every example has >= 3 real tokens)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(3, max_len + 1, (batch,), generator=g)
        T = int(lengths.max())
        ids = torch.randint(5, vocab, (batch, T), generator=g)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        ids = ids * mask + (1 - mask) * 1  # pad id 1 (valid for every tiny config)
        b = {"input_ids": ids, "attention_mask": mask}
        if token_types:
            b["token_type_ids"] = torch.zeros_like(ids)
        out.append(b)
    return out


ARCHS = ["bert", "roberta", "distilbert", "xlm-roberta", "electra", "deberta-v2", "modernbert"]


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"shared fixture {path} not available")


@pytest.fixture(scope="module")
def small_glue(tmp_path_factory):
    """A GLUE root with the first 40 MRPC train rows and 24 dev rows (real files, cut short)."""
    root = tmp_path_factory.mktemp("glue")
    (root / "MRPC").mkdir()
    for name, n in (("train.tsv", 41), ("dev.tsv", 25)):
        lines = (GLUE_DIR / "MRPC" / name).read_text(encoding="utf-8-sig").splitlines()[:n]
        (root / "MRPC" / name).write_text("\n".join(lines) + "\n")
    return root
