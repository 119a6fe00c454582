"""The two schedules of the K-prune loop: where iteration s gets the student's input, the teacher's targets, and
how it moves on to s + 1. Both run the same operations on the same real-token inputs (identical masks, bit-identical
tuned weights; `tests/test_schedule.py`).

- `NaiveSchedule` (the reference's cost model): every iteration runs the student from the embeddings with the units
  decided so far masked, and back-propagates to the bottom; the teacher's pre-LayerNorm sums Y_t of all 2L
  sublayers are held (O(2L·N·d) memory). Nothing to advance.
- `CachedSchedule` (the default): the frozen lower part is never re-run. The student's input X_s to the target
  sublayer is held over the sample and advanced one sublayer per iteration. The teacher's Y_t of every sublayer are
  held from iteration 0's forward, on real tokens only, when they take at most `config.TEACHER_SUMS_MAX_MB`
  (2L·n·d floats; 367 MB for MiniLM at 20 000 tokens); above that the teacher's residual stream is held instead
  and its sublayer s is streamed to give Y_s (O(n·d) memory, one more forward over the sample in all).

The iteration-0 special cases (the student is still the teacher at s = 0):
- without autocast the teacher's soft targets come from iteration 0's own forward (as in the reference); with
  autocast from a separate float32 pass before the loop (`teacher_pass`), so teacher signals never carry reduced
  precision;
- naive: iteration 0's forward also gives every Y_t; cached: every Y_t too, or only Y_0 (held on real tokens;
  LayerNorm(Y_0) is the teacher's next input) when they do not fit;
- both: iteration 0's mask gradients vanish (student = teacher), so its measurement is the forward only
  (`measurement.predictive_gradient_vanishes`);
- cached: at s = 0 the embeddings are recomputed per batch instead of held.

Both schedules hold the target sublayer's projection inputs a_s from its measurement pass unless `lean` (the
teacher's sums do not fit `config.TEACHER_SUMS_MAX_MB`): tuning takes their kept columns, and the cached advance
reuses them (only the tuned output projection changed, so neither the attention nor the FFN's input projection is
recomputed); lean, both recompute them from X_s, and on CPU hand freed heap memory back to the OS after every
batch (`memory.HeapTrimmer`).

Shapes: B examples × T padded tokens per batch, d hidden, w_t the projection-input width of sublayer t (H·d_h for
attention, N for an FFN), n the batch's real tokens.
"""
from __future__ import annotations

import math

import torch

from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.forward import attention_bias, kept_ffn_activations, projection_input, sublayer, sublayer_from_input
from kprune_lib.config import TEACHER_SUMS_MAX_MB
from kprune_lib.encoder.masks import apply_masks
from kprune_lib.method.memory import HeapTrimmer
from kprune_lib.method.measurement import teacher_signal
from kprune_lib.encoder.sublayer import Sublayer

AUTOCAST = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def teacher_pass(arch: Arch, batches, problem: str, temperature: float, keep_sums: bool):
    """Soft targets of the unpruned model; with keep_sums also every sublayer's Y_t (B, T, d) (naive schedule)."""
    targets, sums = [], []
    for b in batches:
        bias = attention_bias(b["attention_mask"], arch.model.dtype)
        x, ys = arch.embed(b["input_ids"], b.get("token_type_ids")), []
        for s in range(2 * arch.num_layers):
            x, y, _ = sublayer(arch, s, x, bias)
            if keep_sums:
                ys.append(y)
        targets.append(teacher_signal(arch.head(x), problem, temperature, b.get("labels")))
        sums.append(ys)
    return targets, sums


def unpack(rows: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Real-token rows (n, d) of the teacher stream -> (B, T, d) with zero padding rows. The teacher's padding
    rows never matter: its targets Y_s are taken on real tokens and attention gives padding keys exactly zero
    weight, so its stream is held without them (a third less memory on MRPC)."""
    x = rows.new_zeros(*token_mask.shape, rows.shape[-1])
    x[token_mask.bool()] = rows
    return x


def stream(shapes: list[tuple[int, ...]], like: torch.Tensor) -> list[torch.Tensor]:
    """Per-batch tensors of the given shapes (dtype and device of `like`), views of one buffer allocated once. A
    cached stream is overwritten in place, so its memory never moves: the per-batch temporaries of every pass reuse
    the same free blocks instead of fragmenting the heap around freshly allocated stream tensors."""
    sizes = [math.prod(shape) for shape in shapes]
    buffer = like.new_empty(sum(sizes))
    return [part.view(shape) for part, shape in zip(buffer.split(sizes), shapes)]


class Schedule:
    """The student and teacher over the sample: the shared part of both schedules.

    A schedule answers, for iteration s and batch j: where the measurement forward starts (`first_sublayer`) and
    from which input (`student_input`), the forward itself (`forward`), the teacher's soft targets (`soft_target`)
    and pre-LayerNorm sum Y_s (`teacher_target`); and after tuning, how to move on (`advance`)."""

    def __init__(self, arch: Arch, batches: list[dict], problem: str, temperature: float, autocast: str | None,
                 clock):
        self.arch, self.batches, self.problem, self.temperature = arch, batches, problem, temperature
        self.autocast, self.clock = autocast, clock
        self.device = next(arch.model.parameters()).device
        self.n_sub = 2 * arch.num_layers
        self.targets: list = [None] * len(batches)  # soft targets per batch, filled by the teacher
        self.biases = [attention_bias(b["attention_mask"], arch.model.dtype) for b in batches]  # (B, 1, 1, T)
        self.held_inputs: list[torch.Tensor | None] = [None] * len(batches)  # a_s (B, T, w_s) of the target, if held
        # lean: the teacher's sums Y_t of all sublayers (2L·n·d floats) exceed config.TEACHER_SUMS_MAX_MB (MiniLM:
        # above ~29 000 tokens). Then memory comes first: the cached schedule streams the teacher, both recompute
        # the target's projection inputs instead of holding them, and freed heap memory goes back to the OS after
        # every batch on CPU (`memory.HeapTrimmer`)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        nbytes = self.n_sub * tokens * arch.hidden * torch.finfo(arch.model.dtype).bits // 8
        self.lean = nbytes > TEACHER_SUMS_MAX_MB * 2 ** 20
        self.trim = HeapTrimmer() if self.lean and self.device.type == "cpu" else (lambda: None)

    # ---- teacher ------------------------------------------------------------------------------------------------
    def prepare_teacher(self) -> None:
        """Teacher = the unpruned model. With autocast its soft targets come from a float32 pass now; without, from
        iteration 0's own forward (`soft_target`)."""
        if self.autocast is not None:
            self.targets, _ = teacher_pass(self.arch, self.batches, self.problem, self.temperature, keep_sums=False)

    def soft_target(self, j: int, out):
        """The teacher's soft targets of batch j ((B, C), (B,) or QA's pair of (B, T)); at iteration 0 without
        autocast taken from `out`, that forward's output (the student is the teacher there)."""
        if self.targets[j] is None:
            out = tuple(o.detach() for o in out) if self.problem == "qa" else out.detach()
            self.targets[j] = teacher_signal(out, self.problem, self.temperature, self.batches[j].get("labels"))
        return self.targets[j]

    def teacher_target(self, j: int, s: int, x_s: torch.Tensor) -> torch.Tensor:
        """Y_s (B, T, d), the teacher's pre-LayerNorm sum of sublayer s on batch j. x_s: the student's input X_s."""
        raise NotImplementedError

    # ---- student ------------------------------------------------------------------------------------------------
    def first_sublayer(self, s: int) -> int:
        """The lowest sublayer the measurement forward of iteration s runs (and back-propagates to)."""
        raise NotImplementedError

    def student_input(self, j: int, s: int) -> torch.Tensor:
        """(B, T, d): the student's input to sublayer `first_sublayer(s)` on batch j."""
        raise NotImplementedError

    def forward(self, j: int, s: int, masks: dict[int, torch.Tensor], probes: dict[int, torch.Tensor]):
        """The measurement forward of batch j at iteration s, with the decided sublayers' mask leaves {t < s: (B, w_t)}
        (naive) and the undecided ones' all-ones probes {t ≥ s: (B, w_t)} applied, under autocast if asked: the
        student from `first_sublayer(s)` up to the task head.

        Returns x_s (B, T, d) the student's input to sublayer s, feats {t ≥ s: a_t (B, T, w_t)} the projection
        inputs, and the head's output (logits (B, C), (B, 1), or QA's start/end (B, T) each)."""
        h, feats = self.student_input(j, s), {}
        dtype = AUTOCAST[self.autocast] or torch.float32
        with apply_masks(self.arch, masks, probes), \
                torch.autocast(self.device.type, dtype, enabled=self.autocast is not None):
            for t in range(self.first_sublayer(s), self.n_sub):
                if t == s:
                    x_s = h
                h, y, a = sublayer(self.arch, t, h, self.biases[j])
                if t >= s:
                    feats[t] = a
                self._observe(j, s, t, h, y)
            out = self.arch.head(h)
        return x_s, feats, out

    def _observe(self, j: int, s: int, t: int, h: torch.Tensor, y: torch.Tensor) -> None:
        """Sees each sublayer t of the measurement forward: its output LayerNorm(Y_t) h and its sum Y_t (B, T, d)."""

    def hold(self, j: int, s: int, x_s: torch.Tensor, a_s: torch.Tensor) -> None:
        """After batch j's measurement forward at iteration s: keep what tuning needs once the kept dims are known.
        x_s: the student's input X_s (B, T, d); a_s: sublayer s's projection input (B, T, w_s), as computed
        (reduced precision under autocast). Unless `lean`, a_s is held in float32: tuning takes the kept
        columns and the advance reuses it, so neither the attention (Q/K/V, scores) nor the FFN's input projection
        is computed again; else both recompute it from X_s."""
        if not self.lean and self.autocast is not None:
            a_s = projection_input(self.arch, s, x_s.detach().float(), self.biases[j])
        self.held_inputs[j] = None if self.lean else a_s.detach().float()

    def tuning_input(self, j: int, s: int) -> torch.Tensor:
        """X_s (B, T, d) of batch j, float32, for the normal equations of sublayer s."""
        raise NotImplementedError

    def kept_projection_input(self, j: int, s: int, x_s: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The kept dims idx (k,) of sublayer s's projection input on batch j, (B, T, k) float32: the held input's
        columns, else recomputed from X_s (attention: the context vectors; FFN: the kept neurons' activations only,
        k of the N rows of its input projection)."""
        if self.held_inputs[j] is not None:
            return self.held_inputs[j][..., idx]
        s = Sublayer(s)
        if s.is_mha:
            return projection_input(self.arch, s, x_s, self.biases[j])[..., idx]
        return kept_ffn_activations(self.arch, s.layer, x_s, idx)

    def advance(self, s: int, mask: torch.Tensor) -> None:
        """After sublayer s is searched and tuned (mask (w_s,): its kept dims): move on to s + 1."""


class NaiveSchedule(Schedule):
    """The reference's schedule: the whole student from the embeddings every iteration; all teacher sums held."""

    def prepare_teacher(self) -> None:
        """As the base; the teacher's Y_t of every sublayer are held too: from the float32 pass with autocast, else
        from iteration 0's forward (`_observe`)."""
        self.sums: list[list[torch.Tensor]] = [[] for _ in self.batches]  # sums[j][t]: Y_t (B, T, d)
        self.inputs: list[torch.Tensor | None] = [None] * len(self.batches)  # X_s (B, T, d) of the current s
        if self.autocast is not None:
            self.targets, self.sums = teacher_pass(self.arch, self.batches, self.problem, self.temperature,
                                                   keep_sums=True)

    def first_sublayer(self, s: int) -> int:
        return 0  # the decided masks of t < s are leaves too: the backward goes to the bottom, as in the reference

    def student_input(self, j: int, s: int) -> torch.Tensor:
        b = self.batches[j]
        return self.arch.embed(b["input_ids"], b.get("token_type_ids"))

    def _observe(self, j, s, t, h, y):
        if s == 0 and self.autocast is None:  # iteration 0: the student is the teacher, its Y_t are the teacher's
            self.sums[j].append(y.detach())

    def teacher_target(self, j, s, x_s):
        return self.sums[j][s]

    def hold(self, j, s, x_s, a_s):
        """As the base, and X_s itself: this schedule holds no student stream."""
        super().hold(j, s, x_s, a_s)
        self.inputs[j] = x_s.detach().float()

    def tuning_input(self, j, s):
        return self.inputs[j]


class CachedSchedule(Schedule):
    """Ours: the student's input X_s and the teacher's stream are held over the sample and advanced per iteration."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.student_x: list[torch.Tensor] | None = None  # X_s (B, T, d) per batch (`stream`); s = 0: recomputed
        self.teacher_x: list[torch.Tensor] | None = None  # the teacher's input to s on real tokens (n, d) per batch
        self._held: dict[tuple[int, int], torch.Tensor] = {}  # (j, t): the teacher's Y_t on real tokens (n, d)

    @property
    def hold_all_sums(self) -> bool:
        """Every Y_t held from iteration 0 (no teacher streaming); lean, Y_0 only."""
        return not self.lean

    def prepare_teacher(self) -> None:
        """As the base; with autocast and `hold_all_sums`, the float32 pass's Y_t are held too."""
        if self.autocast is not None and self.hold_all_sums:
            self.targets, sums = teacher_pass(self.arch, self.batches, self.problem, self.temperature,
                                              keep_sums=True)
            for j, ys in enumerate(sums):
                tok = self.batches[j]["attention_mask"].bool()
                self._held.update({(j, t): y[tok] for t, y in enumerate(ys)})
        else:
            super().prepare_teacher()

    def first_sublayer(self, s: int) -> int:
        return s

    def student_input(self, j: int, s: int) -> torch.Tensor:
        if s == 0:  # the embeddings, recomputed rather than held
            b = self.batches[j]
            return self.arch.embed(b["input_ids"], b.get("token_type_ids"))
        return self.student_x[j]

    def _observe(self, j, s, t, h, y):
        # iteration 0: the student is the teacher, its sums Y_t are the teacher's (all of them, or Y_0 only)
        if s == 0 and self.autocast is None and (t == 0 or self.hold_all_sums):
            self._held[j, t] = y.detach()[self.batches[j]["attention_mask"].bool()]

    def teacher_target(self, j, s, x_s):
        """The teacher's Y_s: held from iteration 0, else streamed through sublayer s (unmasked, not yet tuned) from
        its input, whose output is kept on real tokens for s + 1."""
        tok = self.batches[j]["attention_mask"]
        y_rows = self._held.pop((j, s), None)
        if y_rows is not None:
            if not self.hold_all_sums:  # only Y_0 held: LayerNorm(Y_0) per token gives the teacher's next input rows
                self._teacher_stream(j, y_rows).copy_(self.arch.output_norm(0)(y_rows))
            return unpack(y_rows, tok)
        x_teacher = x_s if s == 0 else unpack(self.teacher_x[j], tok)  # at s = 0: the embeddings
        x_next, y_teacher = sublayer(self.arch, s, x_teacher, self.biases[j])[:2]
        x_next = x_next[tok.bool()]  # real tokens only (see `unpack`)
        self._teacher_stream(j, x_next).copy_(x_next)
        return y_teacher

    def _teacher_stream(self, j: int, like: torch.Tensor) -> torch.Tensor:
        """Batch j's rows of the teacher stream (allocated for all batches at the first write)."""
        if self.teacher_x is None:
            self.teacher_x = stream([(int(b["attention_mask"].sum()), like.shape[-1]) for b in self.batches], like)
        return self.teacher_x[j]

    def tuning_input(self, j, s):
        return self.student_input(j, s).float()  # held X_s (s = 0: the embeddings, recomputed)

    def advance(self, s, mask):
        """X_{s+1} = sublayer s of the tuned, masked student applied to X_s, for every batch, written over X_s.
        Nothing reads X_2L: the last iteration does not advance."""
        if s + 1 == self.n_sub:
            self.held_inputs = [None] * len(self.batches)
            return
        with self.clock("cache_advance"), torch.no_grad(), apply_masks(self.arch, {s: mask}):
            for j in range(len(self.batches)):
                x, a = self.student_input(j, s), self.held_inputs[j]
                out = sublayer(self.arch, s, x, self.biases[j]) if a is None else sublayer_from_input(self.arch, s, x, a)
                if self.student_x is None:  # after iteration 0: one buffer for the whole stream
                    self.student_x = stream([tuple(b["attention_mask"].shape) + (out[0].shape[-1],)
                                             for b in self.batches], out[0])
                self.student_x[j].copy_(out[0])
                self.held_inputs[j] = None
                self.trim()


SCHEDULE_CLASSES = {"cached": CachedSchedule, "naive": NaiveSchedule}
