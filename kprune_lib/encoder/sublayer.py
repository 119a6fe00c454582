"""The pruning targets: the 2L sublayers of an L-layer encoder, numbered bottom-up as the paper's Algorithm 1 visits
them (s = 0 … 2L−1). Sublayer 2i is the multi-head attention (MHA) of layer i, whose units are its heads; sublayer
2i + 1 is its feed-forward network (FFN), whose units are its neurons.

This module is the one place where that numbering is decoded: everything else asks a `Sublayer` for its layer and
kind. One vocabulary: kinds "mha" / "ffn" (as summary.json and the latency tables write them), units "head" /
"neuron".
"""
from __future__ import annotations

MHA, FFN = "mha", "ffn"
KINDS = (MHA, FFN)
UNITS = {MHA: "head", FFN: "neuron"}


class Sublayer(int):
    """Sublayer s: an int (a dict key, a JSON number, an index into per-sublayer lists) that knows its layer and
    kind."""

    __slots__ = ()

    def __new__(cls, s: int) -> "Sublayer":
        if int(s) < 0:
            raise ValueError(f"sublayer index must be >= 0, got {s}")
        return super().__new__(cls, s)

    @classmethod
    def at(cls, layer: int, kind: str) -> "Sublayer":
        """The sublayer of `kind` ("mha" or "ffn") in encoder layer `layer`."""
        if kind not in KINDS:
            raise ValueError(f"sublayer kind must be one of {KINDS}, got {kind!r}")
        return cls(2 * layer + KINDS.index(kind))

    @property
    def layer(self) -> int:
        return int(self) // 2

    @property
    def kind(self) -> str:
        return KINDS[int(self) % 2]

    @property
    def is_mha(self) -> bool:
        return self.kind == MHA

    @property
    def unit(self) -> str:
        """What it prunes: "head" or "neuron"."""
        return UNITS[self.kind]

    def pick(self, mha, ffn):
        """`mha` for an attention sublayer, `ffn` for a feed-forward one."""
        return mha if self.is_mha else ffn

    def __repr__(self) -> str:
        return f"Sublayer({int(self)}: layer {self.layer} {self.kind})"


def sublayers(num_layers: int, start: int = 0) -> list[Sublayer]:
    """Sublayers start … 2·num_layers − 1, bottom-up."""
    return [Sublayer(s) for s in range(start, 2 * num_layers)]
