"""SQuAD through the CLI / API: prune a tiny random QA model on a slice of the real dev file split by article
(cached schedule == naive schedule), re-evaluate the pruned output, and one clear error per bad input."""
import json
import re

import pytest

from conftest import GLUE_DIR, needs_shared
from kprune_lib import api, cli
from kprune_lib.data.squad import load_squad, read_squad_json, split_articles
from kprune_lib.data.squad_features import pruning_data
from kprune_lib.data.tasks import get_task
from squad_helpers import one_thread  # noqa: F401 (autouse)
from squad_helpers import DEV, MINILM, tiny_checkpoint, tokenizer, write_slice

pytestmark = needs_shared(DEV)
NUM_TOKENS = 1020  # -> round(1020 / 170) = 6 sample features


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    return {"root": root, "slice": write_slice(root / "slice.json", n_paragraphs=1), "qa": tiny_checkpoint(root / "qa", "qa"),
            "cls": tiny_checkpoint(root / "cls", "classification")}


def run_cli(args, capsys):
    rc = cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def pruned(files):
    """The same tiny QA model pruned at 0.5 with both schedules, through the CLI."""
    outs = {}
    for schedule in ("cached", "naive"):
        out = files["root"] / f"pruned-{schedule}"
        rc = cli.main(["prune", "--model", str(files["qa"]), "--task", "squad", "--eval-file", str(files["slice"]),
                       "--split-articles", "0.5", "--num-tokens", str(NUM_TOKENS), "--constraint", "0.5",
                       "--schedule", schedule, "--device", "cpu", "--output", str(out), "--quiet"])
        assert rc == 0
        outs[schedule] = out
    return outs


def test_prune_writes_the_glue_style_summary(pruned, files):
    s = json.loads((pruned["cached"] / "summary.json").read_text())
    assert s["task"] == "squad" and s["metric"] == "f1" and s["method"] == "kprune"
    for side in ("dense", "pruned"):
        assert set(s[side]) == {"exact_match", "f1"} and all(0 <= v <= 100 for v in s[side].values())
    assert s["seq_len"] == 170.0 and s["sample_examples"] == round(NUM_TOKENS / 170)
    assert s["hyperparameters"]["batch_size"] is None  # -> SQUAD_BATCH_SIZE (12)
    assert s["flops_pruned"] <= 0.5 * s["flops_dense"] and s["flops_removed"] >= 0.5
    assert 0 < sum(s["neurons_kept"]) < 2 * 24  # the case is not trivial
    # the sample side and the evaluation side are the two halves of the slice, by article
    train, evaluation = split_articles(read_squad_json(files["slice"]), 0.5, 0)
    assert s["data"]["train_questions"] == len(train) and s["data"]["eval_questions"] == len(evaluation)
    assert s["sample_tokens"] > 6 * 50  # real features (question + context window), not empty rows


def test_cached_schedule_gives_the_naive_masks(pruned):
    cached, naive = (json.loads((pruned[k] / "model" / "kprune.json").read_text()) for k in ("cached", "naive"))
    assert cached["kept_heads"] == naive["kept_heads"] and cached["kept_neurons"] == naive["kept_neurons"]
    sc, sn = (json.loads((pruned[k] / "summary.json").read_text()) for k in ("cached", "naive"))
    assert sc["dense"] == sn["dense"]
    assert sc["pruned"]["f1"] == pytest.approx(sn["pruned"]["f1"], abs=1e-6)


def test_evaluating_the_pruned_output_reproduces_the_summary(pruned, files, capsys):
    rc, out, _ = run_cli(["evaluate", "--model", str(pruned["cached"] / "model"), "--task", "squad", "--eval-file",
                          str(files["slice"]), "--split-articles", "0.5", "--device", "cpu", "--quiet"], capsys)
    assert rc == 0
    summary = json.loads((pruned["cached"] / "summary.json").read_text())
    assert json.loads(out) == pytest.approx(summary["pruned"])
    # without the split, all questions of the slice are evaluated: a different score set
    everything = api.evaluate(str(files["qa"]), "squad", eval_file=str(files["slice"]), device="cpu", progress=False)
    assert everything != pytest.approx(summary["dense"])


def test_measured_seq_len(files):
    """--seq-len measured: L_seq = mean length of the evaluation features, and the sample size follows it."""
    data = load_squad(get_task("squad"), eval_file=files["slice"], split_fraction=0.5)
    _, n, seq_len, _ = pruning_data(get_task("squad"), tokenizer(), data, num_tokens=NUM_TOKENS, seed=0,
                                    max_length=384, batch_size=12, seq_len="measured")
    enc = tokenizer()([e.question.lstrip() for e in data.eval], [e.context for e in data.eval],
                      truncation="only_second", max_length=384, stride=128, return_overflowing_tokens=True)
    expected = sum(map(len, enc["input_ids"])) / len(enc["input_ids"])
    assert seq_len == pytest.approx(expected) and n == int(NUM_TOKENS / expected)  # the authors' int(N / L_seq)
    assert pruning_data(get_task("squad"), tokenizer(), data, num_tokens=NUM_TOKENS, seed=0, max_length=384,
                        batch_size=12, seq_len=200)[1:3] == (5, 200.0)


# ---- bad input: one line, exit 2 ------------------------------------------------------------------
def _bad_files(root):
    bad = root / "not-squad.json"
    bad.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "c"}]}]}))
    raw = json.loads((root / "slice.json").read_text())
    same_titles = root / "same-titles.json"  # other question ids, same articles
    for a in raw["data"]:
        for p in a["paragraphs"]:
            for q in p["qas"]:
                q["id"] = "copy-" + q["id"]
    same_titles.write_text(json.dumps(raw))
    return bad, same_titles


@pytest.mark.parametrize("case", ["qa-on-glue", "cls-on-squad", "not-squad", "not-json", "same-ids", "same-titles",
                                  "split-and-sample", "squad-option-on-glue", "fisher-on-squad"])
def test_cli_errors(case, files, capsys, tmp_path):
    root, qa, cls, sl = files["root"], str(files["qa"]), str(files["cls"]), str(files["slice"])
    bad, same_titles = _bad_files(root)
    prune = ["prune", "--task", "squad", "--num-tokens", "500", "--output", str(tmp_path / "o"), "--quiet"]
    args, match = {
        "qa-on-glue": (["evaluate", "--model", qa, "--task", "mrpc", "--data-dir", str(GLUE_DIR)], "question-answering"),
        "cls-on-squad": (["evaluate", "--model", cls, "--task", "squad", "--eval-file", sl], "sequence-classification"),
        "not-squad": (["evaluate", "--model", qa, "--task", "squad", "--eval-file", str(bad)], "not a SQuAD JSON"),
        "not-json": (["evaluate", "--model", qa, "--task", "squad", "--eval-file", str(MINILM / "config.json")],
                     "not a SQuAD JSON"),
        "same-ids": (prune + ["--model", qa, "--sample-file", sl, "--eval-file", sl], "share .* question id"),
        "same-titles": (prune + ["--model", qa, "--sample-file", str(same_titles), "--eval-file", sl],
                        "share .* article title"),
        "split-and-sample": (prune + ["--model", qa, "--sample-file", str(same_titles), "--eval-file", sl,
                                      "--split-articles", "0.5"], "exclude each other"),
        "squad-option-on-glue": (["evaluate", "--model", cls, "--task", "mrpc", "--eval-file", sl], "SQuAD tasks only"),
        "fisher-on-squad": (prune + ["--model", qa, "--eval-file", sl, "--split-articles", "0.5",
                                     "--method", "kwon-fisher"], "kwon-fisher needs gold labels"),
    }[case]
    rc, out, err = run_cli(args + (["--quiet"] if args[0] == "evaluate" else []), capsys)
    lines = [l for l in err.splitlines() if l.startswith("kprune: error:")]
    assert rc == 2 and out == "" and len(lines) == 1, err
    assert re.search(match, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()
