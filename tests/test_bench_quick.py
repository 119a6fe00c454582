"""The correctness part of `make bench-quick`: cached and naive schedules give identical masks on the real model."""
import json
import os
import subprocess
import sys

from conftest import GLUE_DIR, MODELS_DIR, ROOT, needs_shared


@needs_shared(MODELS_DIR / "minilm-l6-mrpc")
@needs_shared(GLUE_DIR)
def test_bench_check_only_masks_identical():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--check-only", "--num-tokens", "600",
                           "--device", "cpu"], capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "KPRUNE_SHARED": str(MODELS_DIR.parent)})
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["masks_identical"] is True and summary["mask_units_differing"] == 0
    assert summary["cached_over_naive_time"] > 0  # a timing, not a target: targets live in benchmarks/RESULTS.md
    assert summary["bound"] == (6 + 0.5) / 12
    assert summary["flops_ratio"] >= 2.0  # constraint 0.5: at least half the FLOPs removed
