"""The one atomic writer: a target appears whole or not at all, and a failure leaves nothing behind."""
import json

import pytest

from kprune_lib._atomic import atomic_dir, atomic_file, write_json


def test_file_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            (tmp.parent / (tmp.name + ".data")).write_text("side file")
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()  # the folders it created are gone too
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_file_refuses_an_existing_target_unless_overwrite(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_file(target, overwrite=False):
            pass
    assert target.read_text() == "old"


def test_folder_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "b").write_text("2")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in target.iterdir()] == ["a"]
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_dir(target):
            pass
