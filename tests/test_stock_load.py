"""A pruned folder loads with stock transformers (trust_remote_code=True) in an environment without kprune, and
gives load_pruned's outputs; without trust_remote_code transformers refuses it; `import kprune_lib` registers it."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from conftest import ARCHS, random_batches, tiny_model
from kprune_lib.encoder.arch import Arch
from kprune_lib.artifacts.checkpoint import KPRUNE_FILE, WEIGHTS_FILE, ModelLoadError, load_pruned, save_pruned
from kprune_lib.encoder.physical import prune_physically
from stock_env import make_stock_venv

HEADS = [2, 0, 3]  # ragged, with a layer that does no attention at all
NEURONS = [8, 24, 0]  # ragged, with a layer whose FFN adds nothing
TASKS = {False: "AutoModelForSequenceClassification", True: "AutoModelForQuestionAnswering"}


def tiny_tokenizer(tmp: Path):
    vocab = tmp / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]) + "\n")
    return transformers.BertTokenizer(vocab_file=str(vocab))


def ragged_pruned(arch: str, qa: bool):
    model = tiny_model(arch, qa=qa, layers=3)
    a = Arch(model)
    hm = torch.tensor([[True, False, True, False], [False] * 4, [True, True, False, True]])
    nm = torch.zeros(3, a.ffn_size, dtype=torch.bool)
    nm[0, ::3] = True
    nm[1] = True
    with torch.no_grad():  # biases that would show if a fully pruned sublayer kept one
        for s in range(6):
            a.out_proj(s).bias.normal_(0, 1.0)
    return prune_physically(model, hm, nm, width_multiple=1)  # exact widths: these tests are about loading


def model_inputs(arch: str) -> dict:
    b = random_batches(1, batch=3, seed=1, token_types=Arch(tiny_model(arch)).table.token_types)[0]
    return {k: v.contiguous() for k, v in b.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{(arch, qa): folder} written by save_pruned (the inputs file of each arch beside them), and
    {(arch, qa): the in-memory pruned model that was saved}."""
    root = tmp_path_factory.mktemp("pruned")
    tok = tiny_tokenizer(root)
    out, models = {}, {}
    for arch in ARCHS:
        save_file(model_inputs(arch), str(root / f"{arch}-inputs.safetensors"))
        for qa in (False, True):
            models[arch, qa] = ragged_pruned(arch, qa).eval()
            out[arch, qa] = save_pruned(models[arch, qa], root / f"{arch}-{'qa' if qa else 'cls'}",
                                        tok if arch == "bert" and not qa else None, info={"constraint": 0.5})
    return root, out, models


@pytest.fixture(scope="module")
def stock_run(folders, tmp_path_factory):
    """Load every folder in a fresh environment without kprune; returns (report, outputs)."""
    root, dirs, _ = folders
    tmp = tmp_path_factory.mktemp("stock")
    python = make_stock_venv(tmp / "venv")
    cases = [{"name": f"{arch}-{int(qa)}", "dir": str(d), "auto": TASKS[qa],
              "inputs": str(root / f"{arch}-inputs.safetensors")} for (arch, qa), d in dirs.items()]
    cases += [{"name": f"{arch}-base", "dir": str(dirs[arch, False]), "auto": "AutoModel",
               "inputs": str(root / f"{arch}-inputs.safetensors")} for arch in ARCHS]
    job = {"cases": cases, "tokenizer_dir": str(dirs["bert", False]), "out": str(tmp / "out.safetensors"),
           "report": str(tmp / "report.json")}
    (tmp / "job.json").write_text(json.dumps(job))
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
           "HF_MODULES_CACHE": str(tmp / "modules"), "OMP_NUM_THREADS": "1"}
    work = tmp / "cwd"
    work.mkdir()
    proc = subprocess.run([str(python), "-I", str(Path(__file__).with_name("stock_load_child.py")), str(tmp / "job.json")],
                          cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "report.json").read_text()), load_file(str(tmp / "out.safetensors"))


def test_the_stock_environment_has_no_kprune(stock_run):
    report, _ = stock_run
    assert report["kprune_importable"] is False


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("qa", [False, True])
def test_stock_transformers_gives_load_pruned_outputs(folders, stock_run, arch, qa):
    root, dirs, models = folders
    report, outputs = stock_run
    assert report["modules"][f"{arch}-{int(qa)}"].startswith("transformers_modules.")  # the folder's own code
    inputs = load_file(str(root / f"{arch}-inputs.safetensors"))
    with torch.no_grad():
        refs = load_pruned(dirs[arch, qa])(**inputs), models[arch, qa](**inputs)  # kprune's load, what was saved
    for key in (["start_logits", "end_logits"] if qa else ["logits"]):
        for ref in refs:
            assert (outputs[f"{arch}-{int(qa)}/{key}"] - ref[key]).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_stock_automodel_gives_the_encoder(folders, stock_run, arch):
    root, dirs, models = folders
    _, outputs = stock_run
    with torch.no_grad():
        ref = models[arch, False].base_model(**load_file(str(root / f"{arch}-inputs.safetensors"))).last_hidden_state
    assert (outputs[f"{arch}-base/last_hidden_state"] - ref).abs().max() <= 1e-5


def test_without_trust_remote_code_transformers_refuses(stock_run):
    report, _ = stock_run
    for name, message in report["refused"].items():
        assert message and "trust_remote_code=True" in message, name
    assert "trust_remote_code=True" in report["config_refused"]


def test_stock_tokenizer_loads(folders, stock_run):
    _, dirs, _ = folders
    report, _ = stock_run
    assert report["tokenized"] == transformers.AutoTokenizer.from_pretrained(dirs["bert", False])("w1 w2 w3")["input_ids"]


@pytest.mark.parametrize("arch", ARCHS)
def test_config_json_describes_the_pruned_shape(folders, arch):
    _, dirs, _ = folders
    cfg = json.loads((dirs[arch, True] / "config.json").read_text())
    assert cfg["model_type"] == f"kprune-{arch}"
    assert cfg["heads_per_layer"] == HEADS and cfg["intermediate_sizes"] == NEURONS
    assert set(cfg["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification",
                                    "AutoModelForQuestionAnswering", "AutoModelForTokenClassification"}
    assert cfg["architectures"] == [cfg["auto_map"]["AutoModelForQuestionAnswering"].split(".")[1]]
    meta = json.loads((dirs[arch, True] / KPRUNE_FILE).read_text())  # provenance unchanged
    assert meta["heads_per_layer"] == HEADS and meta["neurons_per_layer"] == NEURONS and meta["constraint"] == 0.5


@pytest.mark.parametrize("arch", ["bert", "electra"])
def test_registered_auto_classes_build_the_pruned_model(folders, arch):
    """After kprune_lib.register_auto_classes() (every kprune load path calls it), the auto classes build the pruned
    model without remote code."""
    import kprune_lib

    kprune_lib.register_auto_classes()
    root, dirs, models = folders
    model = transformers.AutoModelForSequenceClassification.from_pretrained(dirs[arch, False]).eval()
    assert type(model).__module__ == "kprune_lib.encoder.hf.modeling_kprune"
    a = Arch(model)
    assert a.model_type == arch
    assert [a.heads_in_layer(i) for i in range(3)] == HEADS and [a.neurons_in_layer(i) for i in range(3)] == NEURONS
    inputs = load_file(str(root / f"{arch}-inputs.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, models[arch, False](**inputs).logits, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["roberta", "distilbert"])
def test_folders_from_before_the_model_code_still_load(tmp_path, arch):
    """Backward compatible: a folder with a stock config.json (no auto_map) and kprune.json."""
    from safetensors.torch import save_model

    model = ragged_pruned(arch, qa=False).eval()
    folder = tmp_path / "old"
    model.config.save_pretrained(folder)
    save_model(model, str(folder / WEIGHTS_FILE))
    (folder / KPRUNE_FILE).write_text(json.dumps({"architecture": type(model).__name__, "heads_per_layer": HEADS,
                                                  "neurons_per_layer": NEURONS}))
    inputs = model_inputs(arch)
    with torch.no_grad():
        torch.testing.assert_close(load_pruned(folder)(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_inconsistent_config_is_one_clear_error(folders, tmp_path):
    import shutil

    _, dirs, _ = folders
    folder = shutil.copytree(dirs["bert", False], tmp_path / "bad")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["heads_per_layer"] = HEADS[:2]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="2 head counts .* 3 layers"):
        load_pruned(folder)


def test_workbook_reads_the_kept_units_of_a_new_folder(tmp_path):
    from kprune_lib.workbook.steps import saved_masks

    model = tiny_model("electra", layers=2)
    hm = torch.tensor([[True, False, True, False], [False] * 4])
    nm = torch.arange(Arch(model).ffn_size).expand(2, -1) % 3 == 0
    prune_physically(model, hm, nm, width_multiple=1)
    kept = {"kept_heads": [r.nonzero().flatten().tolist() for r in hm],
            "kept_neurons": [r.nonzero().flatten().tolist() for r in nm]}
    h, n = saved_masks(save_pruned(model, tmp_path / "m", info=kept))
    assert torch.equal(h, hm) and torch.equal(n, nm)


def test_weights_that_do_not_match_the_config_are_refused(folders, tmp_path):
    """from_pretrained would initialise a missing tensor at random; load_pruned refuses instead."""
    import shutil

    _, dirs, _ = folders
    folder = shutil.copytree(dirs["roberta", False], tmp_path / "bad")
    tensors = load_file(str(folder / WEIGHTS_FILE))
    del tensors["classifier.out_proj.weight"]
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(ModelLoadError, match="classifier.out_proj.weight.*re-save"):
        load_pruned(folder)


def test_a_model_loaded_through_kprune_resaves_with_its_code(folders, tmp_path):
    """save_pretrained of a model built by the registered classes writes the code files and auto_map again."""
    _, dirs, models = folders
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(dirs["distilbert", True])
    model.save_pretrained(tmp_path / "again")
    assert {"configuration_kprune.py", "modeling_kprune.py"} <= {p.name for p in (tmp_path / "again").iterdir()}
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["auto_map"] == json.loads((dirs["distilbert", True] / "config.json").read_text())["auto_map"]
    assert cfg["heads_per_layer"] == HEADS and cfg["model_type"] == "kprune-distilbert"


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_a_reloaded_pruned_model_prunes_again(folders, tmp_path, arch):
    """Progressive pruning: load_pruned -> prune_physically (per-layer masks of the current widths) -> save -> load."""
    root, dirs, _ = folders
    model = load_pruned(dirs[arch, False])
    head_masks = [torch.tensor([True, False]), torch.zeros(0, dtype=torch.bool), torch.tensor([False, True, True])]
    neuron_masks = [torch.arange(8) < 5, torch.arange(24) < 0, torch.zeros(0, dtype=torch.bool)]
    prune_physically(model, head_masks, neuron_masks, width_multiple=1)
    again = load_pruned(save_pruned(model, tmp_path / "again"))
    a = Arch(again)
    assert [a.heads_in_layer(i) for i in range(3)] == [1, 0, 2] and [a.neurons_in_layer(i) for i in range(3)] == [5, 0, 0]
    inputs = load_file(str(root / f"{arch}-inputs.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
