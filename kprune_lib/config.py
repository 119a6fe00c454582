"""Every default of the project, defined once.

The CLI, the Python API and the notebooks' parameter cells all read these values.
Values follow the spec's "Defaults" section (the reference's published run script).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

_DEFAULT_CONSTRAINT = 0.5  # PruneConfig.constraint's default (a latency budget leaves it there)
FLOPS, LATENCY = "flops", "latency"


@dataclass(frozen=True)
class Budget:
    """What a run prunes to: a FLOPs constraint (the fraction of the given model's FLOPs to remove, the paper's) or
    a latency budget (milliseconds per forward of one batch of `batch` examples × `seq` real tokens on `device` with
    `threads` CPU threads). What a unit costs against it: `budget.unit_costs`."""

    kind: str  # "flops" | "latency"
    value: float  # flops: fraction of FLOPs removed, in (0, 1); latency: milliseconds per batch
    batch: int | None = None  # latency only: examples per batch
    seq: int | None = None  # latency only: real tokens per example
    device: str | None = None  # latency only: cpu | cuda (None: the pruning device)
    threads: int | None = None  # latency only: CPU threads (None: torch's setting)

    def __post_init__(self) -> None:
        if self.kind == FLOPS:
            if not 0.0 < self.value < 1.0:
                raise ValueError(f"constraint must be in (0, 1) (fraction of FLOPs removed), got {self.value}")
        elif self.kind == LATENCY:
            if not self.value > 0:
                raise ValueError(f"latency_budget_ms must be positive, got {self.value}")
        else:
            raise ValueError(f"budget kind must be {FLOPS!r} or {LATENCY!r}, got {self.kind!r}")

    @classmethod
    def of(cls, constraint: float | None = None, latency_ms: float | None = None, batch: int | None = None,
           seq: int | None = None, device: str | None = None, threads: int | None = None) -> "Budget":
        """The one check that exactly one of a FLOPs constraint and a latency budget is given."""
        if (constraint is None) == (latency_ms is None):
            raise ValueError("give either a FLOPs constraint (--constraint) or a latency budget (--latency-budget), "
                             "exactly one of the two")
        if constraint is not None:
            return cls(FLOPS, float(constraint))
        return cls(LATENCY, float(latency_ms), batch, seq, device, threads)

    @property
    def unit(self) -> str:
        return "fraction of FLOPs removed" if self.kind == FLOPS else "ms per batch"

    def __str__(self) -> str:
        if self.kind == FLOPS:
            return f"{self.value:g} of FLOPs removed"
        return f"{self.value:g} ms per batch of {self.batch} × {self.seq} tokens"


@dataclass(frozen=True)
class PruneConfig:
    """Hyper-parameters of one K-prune run."""

    constraint: float = _DEFAULT_CONSTRAINT  # fraction of the dense model's FLOPs to REMOVE, in (0, 1)
    num_tokens: int = 100_000  # sample size in tokens; #examples = num_tokens / L_seq
    seed: int = 0  # seeds the with-replacement draw of the sample
    lam_pred: float = 1.0  # weight of predictive knowledge
    lam_rep: float = 2.5e-4  # weight of representational knowledge (reference run script)
    mu: float = 64.0  # head-score multiplier (balances heads against neurons)
    temperature: float = 2.0  # softmax temperature T of the predictive KL
    tuning: bool = True  # knowledge-preserving weight tuning (KPWT) on/off
    schedule: str = "cached"  # "cached" (ours) or "naive" (reference: full pass per sublayer)
    batch_size: int | None = None  # None -> task default (32 GLUE, 12 SQuAD)
    max_length: int | None = None  # None -> task default (128; SST-2 64; SQuAD 384)
    ridge: float = 1e-6  # relative ridge added to AᵀA only when its Cholesky factorisation fails
    batch_tokens: int | None = None  # padded tokens per compute batch (length-sorted); None -> per device
    #   (BATCH_TOKENS), 0 -> compute on the sample batches as drawn (the reference's padding). Masks do not depend on it.
    pred_knowledge: str = "batch"  # "batch": the paper's ½ (batch-mean gradient)²; "example": empirical Fisher;
    #   "gauss-newton": ½ JᵀHJ of the predictive loss per example (K-prune+ candidates)
    gold_first: bool = False  # K-prune+ candidate: gold-label loss for the predictive signal at s = 0
    damping: float = 0.0  # K-prune+ candidate: KPWT shrunk toward the current weights, δ = damping·mean diag(AᵀA)
    method: str = "kprune"  # a name of the method registry (kprune_lib.method.methods.REGISTRY)
    # latency budget (an alternative to `constraint`; README "Latency budgets"): prune until the latency model of the
    # measured table (kprune_lib.costs.latency) predicts at most this many milliseconds per forward of one batch
    latency_budget_ms: float | None = None  # None: prune to `constraint` (FLOPs)
    latency_batch: int = 32  # examples per batch of the latency budget
    latency_seq: int = 128  # tokens per example (all real) of the latency budget
    latency_device: str | None = None  # cpu | cuda; None: the pruning device
    threads: int | None = None  # CPU threads of the latency measurements; None: torch's current setting
    latency_table_policy: str = "remeasure"  # a cached table timed in another machine state: remeasure | keep

    def __post_init__(self) -> None:
        self.budget  # noqa: B018 (validates the budget: exactly one kind, a value in range)
        if self.num_tokens <= 0:
            raise ValueError(f"num_tokens must be positive, got {self.num_tokens}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.lam_pred < 0 or self.lam_rep < 0 or self.mu <= 0:
            raise ValueError("lam_pred and lam_rep must be >= 0 and mu > 0")
        if self.batch_tokens is not None and self.batch_tokens < 0:
            raise ValueError(f"batch_tokens must be >= 0 (0 = batches as drawn), got {self.batch_tokens}")
        if self.damping < 0:
            raise ValueError(f"damping must be >= 0, got {self.damping}")
        if self.pred_knowledge not in PRED_KNOWLEDGE:
            raise ValueError(f"pred_knowledge must be one of {PRED_KNOWLEDGE}, got {self.pred_knowledge!r}")
        if self.lam_pred == 0 and self.lam_rep == 0:
            raise ValueError("lam_pred and lam_rep cannot both be 0: the scores would all be zero")
        if self.latency_batch <= 0 or self.latency_seq <= 0:
            raise ValueError(f"latency_batch and latency_seq must be positive, got {self.latency_batch}, "
                             f"{self.latency_seq}")
        if self.latency_device not in (None, "cpu", "cuda") and not str(self.latency_device).startswith("cuda:"):
            raise ValueError(f"latency_device must be cpu or cuda, got {self.latency_device!r}")
        if self.latency_table_policy not in LATENCY_TABLE_POLICIES:
            raise ValueError(f"latency_table_policy must be one of {LATENCY_TABLE_POLICIES}, got "
                             f"{self.latency_table_policy!r}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive, got {self.threads}")

    @property
    def budget(self) -> Budget:
        """The FLOPs constraint, or the latency budget with its batch, sequence length, device and threads."""
        if self.latency_budget_ms is None:
            return Budget.of(constraint=self.constraint)
        given = None if self.constraint == _DEFAULT_CONSTRAINT else self.constraint  # both given: Budget.of refuses
        return Budget.of(given, self.latency_budget_ms, self.latency_batch, self.latency_seq, self.latency_device,
                         self.threads)

    def to_dict(self) -> dict:
        return asdict(self)


SCHEDULES = ("cached", "naive")
PRED_KNOWLEDGE = ("batch", "example", "gauss-newton")
BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}  # default padded tokens per length-sorted compute batch, per device type
TEACHER_SUMS_MAX_MB = 512  # the teacher's Y_t of all sublayers (2L·tokens·d) held up to this size; above it the
#   loop runs lean: teacher streamed, projection inputs recomputed, CPU heap trimmed per batch (kprune_lib.method.schedules)
BATCH_OVERHEAD_TOKENS = 256  # a compute batch's fixed cost in padded tokens, where length-sorted batches are cut
GLUE_BATCH_SIZE = 32
SQUAD_BATCH_SIZE = 12
DEFAULT_MAX_LENGTH = 128
TOKENS_COLUMN = "tokens"  # token classification (run_ner.py): the words column; --text-columns names another
TAGS_COLUMN = "ner_tags"  # ... and the tags column (IOB names or class ids); --label-column names another
FFN_WIDTH_MULTIPLE = 16  # physically pruned FFN widths padded up to a multiple of this with inert zero neurons
#   (kprune_lib.encoder.physical.aligned_width): 4.5-5.3 % faster pruned MiniLMs on CPU for ≤ 15 extra neurons a layer
EVAL_BATCH_SIZE = 64  # evaluation only; does not change any metric
ACCURACY_DROP_POINTS = 3.0  # reports: "within 3 points of dense" = metric ×100 ≥ dense ×100 − this (absolute)
COLLAPSE_SD_FRACTION = 0.01  # a regression model has collapsed when its predictions' sd < this × the labels' sd
# latency tables (kprune_lib.costs.latency): timing protocol, unit grids, where they are cached
LATENCY_WARMUP = 2  # untimed calls of every grid point (and of the whole model) before timing
LATENCY_REPEATS = 7  # timed rounds over all grid points, interleaved; the median per point is kept
LATENCY_PER_UNIT_MAX = 256  # an FFN at most this wide is measured at every width 0…N; wider ones on a grid
LATENCY_CALIBRATION = (0.25, 0.5, 0.75)  # uniform fractions of every layer's units timed whole, besides 0 and 1
LATENCY_FFN_STEP = {"cpu": 64, "cuda": 128}  # FFN grid step (neurons) per device type, interpolated linearly
LATENCY_STALE_TOLERANCE = 0.15  # a cached table whose dense total differs from the model re-timed now by more than
#   this fraction was measured in another machine state: re-measured (or, policy "keep", kept with a warning); a
#   pruned model measured this far from its latency budget is flagged (summary.json, the CLI's last line, results.csv)
LATENCY_TABLE_POLICIES = ("remeasure", "keep")
LATENCY_CACHE_ENV = "KPRUNE_CACHE_DIR"  # overrides the cache folder ($XDG_CACHE_HOME/kprune, else ~/.cache/kprune)
KERNEL_START_TRIES = 3  # sweeps: a notebook kernel that dies while starting (a port race between workers) is retried
