"""ONNX export of pruned (or dense) models, checked in onnxruntime, optionally int8-quantized.

`export_onnx("OUT/model", "model.onnx")` writes one self-contained .onnx file (weights inside, no external data):
inputs `input_ids`, `attention_mask` (and `token_type_ids` where the architecture has them), int64, shape
(batch, sequence) with both axes dynamic; outputs `logits` (sequence classification / regression) or
`start_logits`, `end_logits` (question answering); token classification's `logits` are (batch, sequence, labels). The graph comes from the torch.export-based exporter
(`torch.onnx.export(..., dynamo=True)`, which needs `onnxscript`; the TorchScript exporter is deprecated since
torch 2.9). Layers with no head export no attention work at all (no Q/K/V, no QK product, no softmax), layers
with no neuron no FFN matmuls: zero-width projections become their (zero) bias.

Before the file is moved into place it is loaded in onnxruntime and run on two input shapes other than the
traced one; the logits must match PyTorch's. The file is written to a temporary sibling and renamed at the end:
on any failure nothing is left at the output path.

With `int8=True` the checked float32 graph is quantized dynamically by onnxruntime (`quantize_dynamic`: int8
weights of every weight MatMul / Gemm, their activations quantized on the fly; the attention products stay float)
and the int8 graph is written instead.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from kprune_lib._atomic import atomic_file
from kprune_lib.encoder.arch import Arch
from kprune_lib.artifacts.checkpoint import KPRUNE_FILE, ModelLoadError, load_pruned, saved_as_token_classifier

log = logging.getLogger(__name__)

# LayerNormalization (every encoder layer) exists from opset 17; the exporter builds at 18 and converts down.
MIN_OPSET = 17
DEFAULT_OPSET = 18
# highest opset that exported, loaded in onnxruntime and matched PyTorch here (torch 2.13, onnx 1.23, onnxruntime
# 1.32; from 23 on attention is one `Attention` node); above it the exporter's down/up-conversion fails
MAX_VERIFIED_OPSET = 25
PARITY_TOL = 1e-4  # max abs logit difference onnxruntime vs PyTorch accepted when checking the export
NEEDS = "pip install 'kprune-lib[onnx]' (onnx, onnxscript, onnxruntime)"


class OnnxExportError(ValueError):
    """A model, path or opset the export cannot handle; the message says what to do."""


def max_opset() -> int:
    """The highest opset offered: the installed onnx's newest, capped at MAX_VERIFIED_OPSET (a newer opset that the
    installed onnxruntime cannot load is still caught after the export)."""
    import onnx

    return min(onnx.defs.onnx_opset_version(), MAX_VERIFIED_OPSET)



def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _require_packages() -> None:
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxExportError(f"ONNX export needs {', '.join(missing)}: {NEEDS}")


# ---- the model as exported ------------------------------------------------------------------------------------
class BiasOnly(nn.Module):
    """A Linear with no input feature left: its output is its bias (zero for a fully pruned sublayer)."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.out_features = lin.out_features
        bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features)
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*x.shape[:-1], self.out_features)


class EmptyOutput(nn.Module):
    """A Linear with no output feature left (FFN input of a layer with no neuron): an empty (…, 0) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :0]


def strip_empty_linears(model: nn.Module) -> int:
    """Replace zero-width Linear layers in place (BiasOnly / EmptyOutput), so that the graph has no empty
    matmuls (onnxruntime's quantizer cannot quantize a 0-sized weight). Returns how many were replaced."""
    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and (mod.in_features == 0 or mod.out_features == 0)]
    for name, mod in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, BiasOnly(mod) if mod.in_features == 0 else EmptyOutput())
    return len(targets)


class _Exported(nn.Module):
    """The task model with plain tensor inputs and outputs (what the ONNX graph computes)."""

    def __init__(self, model: nn.Module, token_types: bool, qa: bool):
        super().__init__()
        self.model, self.token_types, self.qa = model, token_types, qa

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"token_type_ids": token_type_ids} if self.token_types else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        return (out.start_logits, out.end_logits) if self.qa else out.logits


def io_names(model: nn.Module | Arch) -> tuple[list[str], list[str]]:
    """ONNX input and output names of a task model (or its Arch)."""
    arch = Arch.of(model)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if arch.table.token_types else [])
    outputs = ["start_logits", "end_logits"] if arch.qa_head else ["logits"]
    return inputs, outputs


def example_inputs(model: nn.Module | Arch, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random int64 inputs of the given shape: ids inside the vocabulary, row 0 padded over its last third."""
    arch = Arch.of(model)
    model = arch.model
    g = torch.Generator().manual_seed(seed)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if seq > 2:
        mask[0, seq - seq // 3:] = 0
    names, _ = io_names(arch)
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        tt = torch.zeros(batch, seq, dtype=torch.long)
        tt[:, seq // 2:] = 1 if int(getattr(model.config, "type_vocab_size", 1)) > 1 else 0
        out["token_type_ids"] = tt
    return out


def _max_positions(arch: Arch) -> int:
    config = arch.model.config
    n = int(getattr(config, "max_position_embeddings", 512))
    if arch.model_type in ("roberta", "xlm-roberta"):  # positions start after the pad id
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return n


# ---- loading --------------------------------------------------------------------------------------------------
def load_for_export(model_dir: str | Path) -> nn.Module:
    """A pruned `OUT/model` folder (via `load_pruned`), else a dense checkpoint (local folder or hub id) of a supported
    architecture; sequence classification or question answering, as its config.json says."""
    return _load_arch(model_dir).model


def _load_arch(model_dir: str | Path) -> Arch:
    """`load_for_export`'s model in float32 and eval mode, seen through its Arch."""
    path = Path(model_dir)
    try:
        if (path / KPRUNE_FILE).is_file():
            model = load_pruned(path)
        else:
            import transformers

            if path.exists() and not (path / "config.json").is_file():
                raise ModelLoadError(f"{path} holds no config.json and no {KPRUNE_FILE}")
            config = transformers.AutoConfig.from_pretrained(str(model_dir))
            qa = any(a.endswith("ForQuestionAnswering") for a in (getattr(config, "architectures", None) or []))
            auto = transformers.AutoModelForQuestionAnswering if qa else \
                transformers.AutoModelForTokenClassification if saved_as_token_classifier(config) else \
                transformers.AutoModelForSequenceClassification
            model = auto.from_pretrained(str(model_dir), config=config, dtype=torch.float32)
        arch = Arch(model)  # fails on an unsupported architecture
    except Exception as e:  # noqa: BLE001 - any failure to rebuild the model is the user's folder, said in one line
        if isinstance(e, (KeyboardInterrupt, MemoryError)):
            raise
        raise OnnxExportError(f"cannot export {model_dir}: not a loadable model ({_first_line(e)}); pass a pruned "
                              f"OUT/model folder (written by kprune prune) or a fine-tuned checkpoint folder") from None
    model.float().eval()  # in place: the Arch still sees it
    return arch


# ---- output file ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _atomic_file(target: Path, overwrite: bool):
    """The project's atomic file writer (`_atomic.atomic_file`), its refusals as one-line export errors."""
    if target.is_dir():
        raise OnnxExportError(f"output {target} is a folder; pass a file path such as {target / 'model.onnx'}")
    if target.exists() and not overwrite:
        raise OnnxExportError(f"output {target} exists; choose another --output or pass --overwrite")
    writer = atomic_file(target, overwrite=True, suffix=".onnx")
    try:
        tmp = writer.__enter__()
    except OSError as e:
        raise OnnxExportError(f"cannot write {target}: {target.parent} is not a writable folder "
                              f"({e.strerror or _first_line(e)}); choose another --output") from None
    with contextlib.ExitStack() as stack:
        stack.push(writer)
        yield tmp


# ---- export ---------------------------------------------------------------------------------------------------
def _torch_export(wrapped: nn.Module, example: dict[str, torch.Tensor], inputs: list[str], outputs: list[str],
                  opset: int, path: Path) -> None:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in inputs}
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), _quiet_loggers():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (), kwargs=example, input_names=inputs, output_names=outputs,
                                    dynamic_shapes=dynamic, opset_version=opset, dynamo=True, verbose=False)
        program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet_loggers():
    """The exporter and onnxscript log every step and every skipped op at INFO/WARNING; keep errors only."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "torch.fx.experimental.symbolic_shapes")
    if not os.environ.get("TORCH_TRACE"):  # torch.export's structured trace logs every traced op at DEBUG
        names += ("torch.__trace",)
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session (threads: intra-op threads; default torch's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _check(path: Path, arch: Arch, wrapped: nn.Module, opset: int, shapes) -> float:
    """Load the file in onnxruntime, check its opset, run it on `shapes`, return max abs diff against PyTorch (of a
    per-token head's outputs, on real tokens: a padding position's are undefined, e.g. all its keys masked in a
    ModernBERT sliding-window layer)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    got = {x.domain or "ai.onnx": x.version for x in proto.opset_import}.get("ai.onnx")
    if got != opset:
        raise OnnxExportError(f"opset {opset} cannot express this model (the exporter produced opset {got}); "
                              f"use --opset {MIN_OPSET}–{max_opset()} (default {DEFAULT_OPSET})")
    del proto
    try:
        sess = session(path)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OnnxExportError(f"onnxruntime cannot load the opset-{opset} export ({_first_line(e)}); "
                              f"use --opset {MIN_OPSET}–{max_opset()} (default {DEFAULT_OPSET})") from None
    worst = 0.0
    for i, (b, s) in enumerate(shapes):
        feed = example_inputs(arch, b, s, seed=i + 1)
        got = sess.run(None, {k: v.numpy() for k, v in feed.items()})
        with torch.no_grad():
            ref = wrapped(**feed)
        ref = ref if isinstance(ref, tuple) else (ref,)
        real = feed["attention_mask"].bool() if arch.qa_head or arch.token_head else slice(None)
        for g, r in zip(got, ref):
            worst = max(worst, float(abs(torch.from_numpy(g)[real] - r[real]).max()))
    return worst


def quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime dynamic quantization: int8 weights of every MatMul / Gemm, activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer advises pre-processing on the root logger at every call
    try:
        with _quiet_loggers(), contextlib.redirect_stdout(io.StringIO()):
            # weight matmuls only: the activation-activation products of attention stay float (and opset >= 23's
            # Attention node is not turned into the com.microsoft QAttention, which rejects its attributes)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


def export_onnx(model: str | Path, output: str | Path, opset: int = DEFAULT_OPSET, int8: bool = False,
                overwrite: bool = False, check: bool = True) -> dict:
    """Export a pruned `OUT/model` folder (or a dense checkpoint) to one ONNX file, atomically.

    opset: ONNX opset, MIN_OPSET..max_opset(). int8: write onnxruntime's dynamically quantized int8 graph instead of
    float32. check: run the float32 graph in onnxruntime on two shapes other than the traced one and require
    max abs logit difference <= PARITY_TOL against PyTorch. Returns a record (paths, names, opset, sizes, the parity,
    per-layer heads and neurons, seconds). Raises OnnxExportError (a ValueError) with a one-line message.
    """
    _require_packages()
    start = time.perf_counter()
    top = max_opset()
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise OnnxExportError(f"opset {opset} cannot express this model (its encoder layers need LayerNormalization, "
                              f"opset {MIN_OPSET} or later); use --opset {MIN_OPSET}–{top} (default {DEFAULT_OPSET})")
    if opset > top:
        raise OnnxExportError(f"opset {opset} is beyond what the installed exporter, onnx and onnxruntime write and run "
                              f"(up to {top}); use --opset {MIN_OPSET}–{top} (default {DEFAULT_OPSET})")
    target = Path(output)
    with _atomic_file(target, overwrite) as tmp:  # fails early on an unwritable output, before loading anything
        arch = _load_arch(model)
        net = arch.model
        heads = [arch.heads_in_layer(i) for i in range(arch.num_layers)]
        neurons = [arch.neurons_in_layer(i) for i in range(arch.num_layers)]
        inputs, outputs = io_names(arch)
        graph_model = copy.deepcopy(net)
        stripped = strip_empty_linears(graph_model)
        wrapped = _Exported(graph_model, "token_type_ids" in inputs, outputs[0] == "start_logits").eval()
        reference = _Exported(net, "token_type_ids" in inputs, outputs[0] == "start_logits").eval()
        seq_cap = max(4, min(_max_positions(arch), 64))
        traced = example_inputs(arch, 2, min(8, seq_cap))
        try:
            _torch_export(wrapped, traced, inputs, outputs, opset, tmp)
        except OnnxExportError:
            raise
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; say which opsets work
            if isinstance(e, (KeyboardInterrupt, MemoryError)):
                raise
            raise OnnxExportError(f"the ONNX exporter failed at opset {opset} ({_first_line(e)}); use --opset "
                                  f"{MIN_OPSET}–{top} (default {DEFAULT_OPSET}), KPRUNE_DEBUG=1 shows the traceback") from e
        diff = None
        if check:
            diff = _check(tmp, arch, reference, opset, [(3, min(13, seq_cap)), (1, min(5, seq_cap))])
            if not diff <= PARITY_TOL:
                raise OnnxExportError(f"the exported graph disagrees with PyTorch (max abs logit difference {diff:.3g} "
                                      f"> {PARITY_TOL}); please report this model")
        fp32_bytes = tmp.stat().st_size
        if int8:
            q = tmp.with_name(tmp.name + ".int8.onnx")
            try:
                quantize_int8(tmp, q)
                if check:
                    session(q)  # loads
                os.replace(q, tmp)
            except Exception as e:  # noqa: BLE001 - the quantizer and onnxruntime raise their own types
                if isinstance(e, (KeyboardInterrupt, MemoryError)):
                    raise
                raise OnnxExportError(f"int8 quantization of the opset-{opset} graph failed ({_first_line(e)}); "
                                      f"try --opset {DEFAULT_OPSET}") from e
            finally:
                if q.exists():
                    q.unlink()
        record = {
            "output": str(target), "model": str(model), "opset": opset, "int8": int8,
            "inputs": inputs, "outputs": outputs, "dynamic_axes": {"0": "batch", "1": "sequence"},
            "heads_per_layer": heads, "neurons_per_layer": neurons, "zero_width_projections_removed": stripped,
            "max_abs_diff": diff, "bytes": tmp.stat().st_size, "bytes_float32": fp32_bytes,
            "seconds": round(time.perf_counter() - start, 2),
        }
    log.debug("export: %s", json.dumps(record))
    return record
