"""The correctness part of `make bench-quick`, CI-sized: on the real MiniLM MRPC model and a few hundred sample
tokens, the cached schedule on length-sorted compute batches, the cached schedule on the batches as drawn and the
naive schedule give identical masks, and the summary JSON carries the benchmark's fields with sane values."""
import json
import os
import subprocess
import sys

from conftest import GLUE_DIR, MODELS_DIR, ROOT, needs_shared


@needs_shared(MODELS_DIR / "minilm-l6-mrpc")
@needs_shared(GLUE_DIR)
def test_bench_check_only_masks_identical():
    # 400 tokens: 7 MRPC examples, one sample batch as drawn; --batch-tokens 128 splits it into several
    # length-sorted compute batches, so the sorted run computes on other batches than the drawn one
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--check-only", "--cases", "mrpc",
                           "--num-tokens", "400", "--batch-tokens", "128", "--dense-repeats", "1", "--device", "cpu"],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "KPRUNE_SHARED": str(MODELS_DIR.parent)})
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(summary) == ["mrpc"]
    s = summary["mrpc"]
    assert s["masks_identical"] is True and s["mask_units_differing"] == 0
    assert s["masks_identical_drawn"] is True and s["masks_identical_naive"] is True
    assert s["mask_units_differing_drawn"] == 0 and s["mask_units_differing_naive"] == 0
    assert s["batch_tokens"] == 128
    assert 1.0 <= s["padding_ratio_computed"] <= s["padding_ratio_drawn"]
    assert s["padding_ratio_computed"] < s["padding_ratio_drawn"]  # sorting the 7 examples saves padding
    # timings, not targets (targets live in benchmarks/RESULTS.md)
    assert s["dense_pass_seconds"] > 0 and s["dense_passes"] > 0 and s["dense_passes_drawn"] > 0
    assert s["dense_passes_naive"] > 0 and s["cached_over_naive_time"] > 0
    assert s["bound"] == (6 + 0.5) / 12
    assert s["flops_ratio"] >= 2.0  # constraint 0.5: at least half the FLOPs removed
    for run in ("sorted", "drawn", "naive"):
        assert s[f"peak_mem_{run}_mb"] > 0
    assert s["latency_speedup"] is None  # --check-only: no latency


def test_bench_rows_go_into_their_table_not_after_later_sections(tmp_path, monkeypatch):
    """RESULTS.md holds other sections after the bench table (ONNX runs): a new run's rows join the table."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_module", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "HERE", tmp_path)
    row = {c: None for c in ("sorted_seconds", "drawn_seconds", "naive_seconds", "dense_pass_seconds", "dense_passes",
                             "dense_passes_drawn", "dense_passes_naive", "padding_ratio_drawn",
                             "padding_ratio_computed", "cached_over_naive_time", "sorted_over_naive_time", "bound",
                             "peak_mem_sorted_mb", "peak_mem_drawn_mb", "peak_mem_naive_mb", "latency_speedup",
                             "latency_speedup_b1", "flops_ratio", "speedup_over_flops_ratio", "masks_identical_naive")}
    row.update(label="mrpc-20k", num_tokens=20000, batch_tokens=2048, device="cpu", autocast=None,
               masks_identical_drawn=True, dense_passes=4.8)
    bench.write_results([row])  # a fresh file: the section and its header, then the row
    md = tmp_path / "RESULTS.md"
    md.write_text(md.read_text() + "\n## ONNX\n\n| engine | model |\n|---|---|\n| onnxruntime | dense |\n")
    bench.write_results([dict(row, label="stsb-20k")])
    lines = md.read_text().splitlines()
    table = [k for k, line in enumerate(lines) if line.startswith("| date |")]
    assert len(table) == 1
    rows = [line for line in lines[table[0] + 2:] if line.startswith("| ")][:2]
    assert "mrpc-20k" in rows[0] and "stsb-20k" in rows[1] and "| 4.8 |" in rows[1]
    assert lines[-1] == "| onnxruntime | dense |"
