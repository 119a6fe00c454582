"""FLOPs of encoder sublayers (paper formula; biases, LayerNorm, activations, embeddings, classifier ignored)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def head_flops(seq_len: float, hidden: int, head_size: int, rel_positions: int = 0) -> float:
    """F_head = 8·L·d·d_h (Q, K, V, output projection) + 4·L²·d_h (scores and mixing) + F_pos (relative attention
    only: `position_flops`; rel_positions = `Arch.rel_positions`, 0 for absolute-position models)."""
    return 8.0 * seq_len * hidden * head_size + 4.0 * seq_len**2 * head_size + \
        position_flops(seq_len, hidden, head_size, rel_positions)


def position_flops(seq_len: float, hidden: int, head_size: int, rel_positions: int) -> float:
    """F_pos = 2·P·d·d_h (projecting the relative-position embeddings into the head's position keys / queries)
    + 2·L·P·d_h (scoring every token against them), P = 2·span·#terms the rows scored (DeBERTa: c2p and p2c, each
    against 2·span positions). The projection is counted once per sequence: the cost of a batch of one (a batch of B
    shares it)."""
    return 2.0 * rel_positions * head_size * (hidden + seq_len)


def neuron_flops(seq_len: float, hidden: int, gated: bool = False) -> float:
    """F_neuron = 4·L·d (one row of the input and one column of the output projection); a gated FFN's neuron has
    two input rows (its input and its gate, ModernBERT's GLU): 6·L·d."""
    return (6.0 if gated else 4.0) * seq_len * hidden


def model_flops(heads_per_layer, neurons_per_layer, seq_len: float, hidden: int, head_size: int,
                rel_positions: int = 0, gated: bool = False) -> float:
    """F_model = Σ_layers (heads·F_head + neurons·F_neuron)."""
    fh, fn = head_flops(seq_len, hidden, head_size, rel_positions), neuron_flops(seq_len, hidden, gated)
    return float(sum(h * fh + n * fn for h, n in zip(heads_per_layer, neurons_per_layer)))


@dataclass(frozen=True)
class UnitFlops:
    """The FLOPs formulas of one architecture: what its heads and neurons cost at a sequence length (`of`: the
    architecture's shape, relative-position terms and FFN gating, read once)."""

    hidden: int
    head_size: int
    rel_positions: int = 0  # `Arch.rel_positions`
    gated: bool = False  # a gated (GLU) FFN: `neuron_flops`

    @classmethod
    def of(cls, arch) -> "UnitFlops":
        return cls(arch.hidden, arch.head_size, arch.rel_positions, arch.table.gated_ffn)

    def head(self, seq_len: float) -> float:
        return head_flops(seq_len, self.hidden, self.head_size, self.rel_positions)

    def neuron(self, seq_len: float) -> float:
        return neuron_flops(seq_len, self.hidden, self.gated)

    def model(self, heads_per_layer, neurons_per_layer, seq_len: float) -> float:
        return model_flops(heads_per_layer, neurons_per_layer, seq_len, self.hidden, self.head_size,
                           self.rel_positions, self.gated)


def encoder_params(model: nn.Module) -> int:
    """Number of parameters of the whole model (embeddings and heads included)."""
    return sum(p.numel() for p in model.parameters())
