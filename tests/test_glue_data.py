"""Local GLUE files: every shared task parses with the right sizes and labels; malformed files fail clearly."""
import pytest

from conftest import GLUE_DIR, needs_shared
from kprune_lib.data.glue import DataError, load_glue
from kprune_lib.data.tasks import get_glue_task

EXPECTED = {  # (split, examples, first label, label histogram or None)
    ("mrpc", "validation"): (408, {0: 129, 1: 279}),
    ("mrpc", "train"): (3668, {0: 1194, 1: 2474}),
    ("sst2", "validation"): (872, {0: 428, 1: 444}),
    ("cola", "validation"): (1043, None),
    ("cola", "train"): (8551, None),
    ("stsb", "validation"): (1500, None),
    ("stsb", "train"): (5749, None),
    ("rte", "validation"): (277, {0: 146, 1: 131}),
    ("rte", "train"): (2490, {0: 1249, 1: 1241}),
    ("qnli", "validation"): (5463, {0: 2702, 1: 2761}),
}


@needs_shared(GLUE_DIR)
@pytest.mark.parametrize("task,split", list(EXPECTED))
def test_shared_glue_files(task, split):
    n, hist = EXPECTED[(task, split)]
    ex = load_glue(get_glue_task(task), split, GLUE_DIR)
    assert len(ex) == n == len(ex.labels)
    if hist:
        assert {k: ex.labels.count(k) for k in hist} == hist
    assert all(isinstance(t, str) and t for t in ex.text_a)
    if task == "stsb":
        assert all(0.0 <= y <= 5.0 for y in ex.labels)
    assert (ex.text_b is None) == (task in ("sst2", "cola"))


@needs_shared(GLUE_DIR)
def test_mrpc_bom_and_quotes():
    ex = load_glue(get_glue_task("mrpc"), "validation", GLUE_DIR)
    assert ex.labels[0] in (0, 1)  # the BOM did not eat the header
    assert any('"' in t for t in ex.text_a + ex.text_b)  # quote characters kept inside fields


def _write(tmp_path, folder, name, text):
    d = tmp_path / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return tmp_path


def test_missing_file_names_expected_path(tmp_path):
    with pytest.raises(DataError, match="RTE/dev.tsv"):
        load_glue(get_glue_task("rte"), "validation", tmp_path)


def test_short_row_is_reported_with_line(tmp_path):
    root = _write(tmp_path, "RTE", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: 2 fields"):
        load_glue(get_glue_task("rte"), "validation", root)


def test_bad_label_and_wrong_header(tmp_path):
    root = _write(tmp_path, "RTE", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match="bad label 'maybe'"):
        load_glue(get_glue_task("rte"), "validation", root)
    root = _write(tmp_path, "SST-2", "dev.tsv", "text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match="header lacks"):
        load_glue(get_glue_task("sst2"), "validation", root)


def test_empty_split_and_unknown_task(tmp_path):
    root = _write(tmp_path, "SST-2", "train.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match="no examples"):
        load_glue(get_glue_task("sst2"), "train", root)
    with pytest.raises(ValueError, match="unknown task 'glue9'"):
        get_glue_task("glue9")


def test_sample_is_drawn_as_the_authors_code_draws_it():
    """Legacy numpy RandomState seeded once, choice(pool, n) with replacement, n = int(num_tokens / L_seq)."""
    import numpy as np

    from kprune_lib.data.batching import sample_indices

    idx = sample_indices(3668, 20000, 53.24, seed=0)
    np.random.seed(0)  # what transformers.set_seed(0) does to numpy before the authors' draw
    expected = np.random.choice(3668, int(20000 / 53.24))
    assert idx.tolist() == expected.tolist() and len(idx) == 375
    assert len(sample_indices(10, 20000, 53.24, seed=0)) == 10  # at most the pool size, as the reference
    with pytest.raises(DataError, match="increase --num-tokens"):
        sample_indices(100, 10, 53.24, seed=0)
