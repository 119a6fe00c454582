"""save_pruned -> load_pruned gives the same logits; only safetensors/JSON files are written."""
import json

import pytest
import torch

from conftest import ARCHS, random_batches, tiny_model
from kprune_lib.encoder.arch import Arch
from kprune_lib._atomic import atomic_dir
from kprune_lib.artifacts.checkpoint import load_pruned, save_pruned
from kprune_lib.encoder.physical import prune_physically


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("qa", [False, True])
def test_round_trip_logits(tmp_path, arch, qa):
    model = tiny_model(arch, qa=qa)
    a = Arch(model)
    hm = torch.tensor([[True, False, True, False], [False, False, False, False]])
    nm = torch.arange(a.ffn_size).expand(2, -1) % 3 == 0
    prune_physically(model, hm, nm)
    save_pruned(model, tmp_path / "m", info={"constraint": 0.5})
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "configuration_kprune.py", "kprune.json", "model.safetensors", "modeling_kprune.py"]
    meta = json.loads((tmp_path / "m" / "kprune.json").read_text())
    assert meta["heads_per_layer"] == [2, 0] and meta["constraint"] == 0.5
    loaded = load_pruned(tmp_path / "m")
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if a.table.token_types else [])
    for b in random_batches(token_types=a.table.token_types):
        with torch.no_grad():
            x, y = model(**{k: b[k] for k in keys}), loaded(**{k: b[k] for k in keys})
        for key in (["start_logits", "end_logits"] if qa else ["logits"]):
            torch.testing.assert_close(y[key], x[key], rtol=0, atol=0)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_to_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_dir(tmp_path / "out"):
            pass
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("y")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]
