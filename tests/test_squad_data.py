"""SQuAD data: format checks, article splits, pre-processing (offsets, windows) and post-processing."""
import json

import numpy as np
import pytest

from conftest import needs_shared
from kprune_lib.data.glue import DataError
from kprune_lib.data.squad import (QaExample, check_disjoint, load_squad, parse_squad, read_squad_json, split_articles,
                              split_by_article, titles)
from kprune_lib.data.squad_features import QaFeatures, postprocess, prepare_features
from kprune_lib.data.squad_metrics import squad_scores
from kprune_lib.data.tasks import get_task
from squad_helpers import one_thread  # noqa: F401 (autouse)
from squad_helpers import DEV, tokenizer, write_slice

pytestmark = needs_shared(DEV)


@pytest.fixture(scope="module")
def dev():
    return read_squad_json(DEV)


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


# ---- format -------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,match", [
    ({"version": "1.1"}, "no 'data'"),
    ([1, 2], "no 'data'"),
    ({"data": [{"paragraphs": []}]}, r"data\[0\] has no 'title'"),
    ({"data": [{"title": "t", "paragraphs": [{"context": "c"}]}]}, r"paragraphs\[0\] has no 'qas'"),
    ({"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q",
                                                                        "answers": [{"text": "c"}]}]}]}]}, "answer_start"),
    ({"data": [{"title": "t", "paragraphs": []}]}, "no questions"),
])
def test_malformed_files_are_rejected(raw, match):
    with pytest.raises(DataError, match=match):
        parse_squad(raw, "x.json")


def test_not_json_and_duplicate_ids(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("id\tsentence\n1\thello\n")
    with pytest.raises(DataError, match="not a SQuAD JSON file"):
        read_squad_json(bad)
    qa = {"id": "q", "question": "?", "answers": [{"text": "c", "answer_start": 0}]}
    with pytest.raises(DataError, match="twice"):
        parse_squad({"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [qa, qa]}]}]})


def test_squad2_file_needs_squad_v2(tmp_path):
    raw = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Blue sky.", "qas": [
        {"id": "a", "question": "Colour?", "answers": [{"text": "Blue", "answer_start": 0}]},
        {"id": "b", "question": "Who?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "sky", "answer_start": 5}]}]}]}]}
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="squad_v2"):
        load_squad(get_task("squad"), eval_file=path, need_train=False)
    data = load_squad(get_task("squad_v2"), eval_file=path, need_train=False)
    assert [e.answers for e in data.eval] == [("Blue",), ()]  # plausible answers are not gold answers


# ---- splits and disjointness --------------------------------------------------------------------
def test_split_by_article_is_disjoint_deterministic_and_matches_the_files(dev, tmp_path):
    train, evaluation = split_articles(dev, 0.25, seed=3)
    assert len(titles(train)) == 12 and len(titles(evaluation)) == 36  # round(0.25 · 48)
    assert not set(titles(train)) & set(titles(evaluation))
    assert sorted(e.id for e in train + evaluation) == sorted(e.id for e in dev)
    check_disjoint(train, evaluation)
    assert split_articles(dev, 0.25, seed=3) == (train, evaluation)
    assert titles(split_articles(dev, 0.25, seed=4)[0]) != titles(train)
    train_path, eval_path = split_by_article(DEV, 0.25, 3, tmp_path / "split")
    assert read_squad_json(train_path) == train and read_squad_json(eval_path) == evaluation
    assert json.loads(train_path.read_text())["version"] == "1.1"


def test_overlapping_sides_are_rejected(dev):
    a, b = dev[:5], dev[3:8]
    with pytest.raises(DataError, match="question id"):
        check_disjoint(a, b)
    renamed = [QaExample("new-" + e.id, e.title, e.context, e.question, e.answers, e.answer_starts) for e in a]
    with pytest.raises(DataError, match="article title"):
        check_disjoint(renamed, a)
    with pytest.raises(DataError, match="exclude each other"):
        load_squad(get_task("squad"), train_file=DEV, eval_file=DEV, split_fraction=0.5)
    with pytest.raises(DataError, match="at least one article"):
        split_articles(dev[:3], 0.5)  # one article cannot be split


def test_data_dir_lookup_names_the_missing_training_file(tmp_path):
    write_slice(tmp_path / "dev-v1.1.json")
    with pytest.raises(DataError, match="train-v1.1.json.*--split-articles"):
        load_squad(get_task("squad"), data_dir=tmp_path)
    data = load_squad(get_task("squad"), data_dir=tmp_path, split_fraction=0.5)
    assert data.info["train_articles"] == 2 and data.info["eval_articles"] == 2


# ---- pre- and post-processing -------------------------------------------------------------------
def test_gold_spans_map_back_to_the_answer_text(dev, tok):
    examples = dev[:300]
    feats = prepare_features(tok, examples, 384, 128)
    exact = labelled = 0
    for f in range(len(feats)):
        ex = examples[feats.example_index[f]]
        s, e = feats.start_positions[f], feats.end_positions[f]
        if s == feats.cls_index[f]:
            continue
        labelled += 1
        assert feats.inputs[f]["token_type_ids"][s] == 1 and s <= e  # inside the context, question first
        text = ex.context[feats.offsets[f][s][0]:feats.offsets[f][e][1]]
        exact += text == ex.answers[0]
        assert ex.answers[0] in text  # else: the smallest token cover of an answer inside a word ("5" of "50")
    assert labelled >= len(examples)  # every answer lies in at least one window
    assert exact / labelled > 0.95
    first = prepare_features(tok, dev[:1], 384, 128)  # "Denver Broncos", answer_start 177
    assert tok.decode(first.inputs[0]["input_ids"][first.start_positions[0]:first.end_positions[0] + 1]) == "denver broncos"


def test_windows_overlap_by_the_stride_and_cover_the_context(dev, tok):
    ex = max(dev[:200], key=lambda e: len(e.context))
    feats = prepare_features(tok, [ex], 64, 16)
    ctx = [[o for o in offs if o is not None] for offs in feats.offsets]
    assert len(ctx) > 3
    for a, b in zip(ctx, ctx[1:]):
        assert a[-16:] == b[:16]  # consecutive windows share exactly `stride` context tokens
    covered = {o for c in ctx for o in c}
    all_tokens = [o for o in tok(ex.context, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]]
    assert covered == set(map(tuple, all_tokens))
    labelled = [f for f in range(len(feats)) if feats.start_positions[f] != feats.cls_index[f]]
    assert labelled and len(labelled) < len(feats)  # outside its window(s) the answer is labelled CLS


def test_oracle_logits_give_the_gold_answers_through_windows(dev, tok):
    examples = dev[:150]
    feats = prepare_features(tok, examples, 96, 32)  # small windows: many examples span several features
    assert len(feats) > 1.5 * len(examples)
    starts, ends = [], []
    for f in range(len(feats)):
        n = len(feats.inputs[f]["input_ids"])
        s, e = np.zeros(n), np.zeros(n)
        if feats.start_positions[f] != feats.cls_index[f]:
            s[feats.start_positions[f]] = e[feats.end_positions[f]] = 10.0
        starts.append(s)
        ends.append(e)
    pred = postprocess(examples, feats, starts, ends, n_best=20, max_answer_length=30, version_2=False)
    assert all(e.answers[0] in pred[e.id] for e in examples)
    scores = squad_scores(pred, {e.id: list(e.answers) for e in examples})
    assert scores["exact_match"] > 95 and scores["f1"] >= scores["exact_match"]


def _toy(context="Denver Broncos won in 2016", question_tokens=3):
    """A hand-made feature: [CLS] q q q [SEP] context words [SEP] with word offsets."""
    words, offsets, pos = context.split(), [], 0
    for w in words:
        start = context.index(w, pos)
        offsets.append((start, start + len(w)))
        pos = start + len(w)
    offs = [None] * (question_tokens + 2) + offsets + [None]
    ex = QaExample("q1", "t", context, "?", ("Denver Broncos",), (0,))
    feats = QaFeatures([{"input_ids": [0] * len(offs)}], [0], [offs], [0], [0], [0])
    return ex, feats, question_tokens + 2


def test_postprocess_constraints_and_null_answer():
    ex, feats, c0 = _toy()  # context tokens start at c0: Denver, Broncos, won, in, 2016
    n = len(feats.offsets[0])
    s, e = np.full(n, -10.0), np.full(n, -10.0)
    s[1], e[2] = 50, 50  # the best logits sit on question tokens: never an answer
    s[c0], e[c0 + 1] = 5, 5  # "Denver Broncos": 10
    s[c0 + 3] = 14  # start "in" + end "Broncos" = 19 but ends before it starts; "in" alone: 4
    run = lambda **kw: postprocess([ex], feats, [s], [e], **{"n_best": 20, "max_answer_length": 30, "version_2": False, **kw})
    assert run() == {"q1": "Denver Broncos"}
    assert run(max_answer_length=1) == {"q1": "in"}  # one-token spans: "in" 4, "Denver" -5, "Broncos" -5
    assert run(n_best=1) == {"q1": ""}  # top start "in" x top end "Broncos": no valid span left
    s[0], e[0] = 6, 6  # null score 12 > best span 10
    assert run() == {"q1": "Denver Broncos"}  # 1.1 never answers null
    assert run(version_2=True) == {"q1": ""}
    s[0] = e[0] = 4  # null 8 < 10
    assert run(version_2=True) == {"q1": "Denver Broncos"}


def test_unanswerable_questions_are_labelled_cls(tok):
    ex = QaExample("x", "t", "Blue sky over the sea.", "Colour?", (), ())
    feats = prepare_features(tok, [ex], 384, 128)
    assert feats.start_positions == feats.end_positions == feats.cls_index == [0]
    assert feats.inputs[0]["input_ids"][0] == tok.cls_token_id


def test_hub_rows_become_examples(monkeypatch):
    """The hub path (rajpurkar/squad[_v2] schema), with `datasets.load_dataset` stubbed: no network in tests."""
    import datasets

    rows = {"id": ["a", "b"], "title": ["T1", "T2"], "context": ["Blue sky.", "Red sea."],
            "question": ["Colour?", "Which sea?"],
            "answers": [{"text": ["Blue"], "answer_start": [0]}, {"text": [], "answer_start": []}]}
    calls = []
    train_rows = {**rows, "id": ["c", "d"], "title": ["T3", "T4"]}

    def fake(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict(rows if split == "validation" else train_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    data = load_squad(get_task("squad_v2"), need_train=True)
    assert calls == [("rajpurkar/squad_v2", "validation"), ("rajpurkar/squad_v2", "train")]
    assert data.eval[0] == QaExample("a", "T1", "Blue sky.", "Colour?", ("Blue",), (0,))
    assert data.eval[1].answers == () and [e.id for e in data.train] == ["c", "d"]
    assert data.info["eval_source"] == "rajpurkar/squad_v2[validation]"
    # the same split on both sides: the overlap check fires for the hub too
    train_rows = rows
    with pytest.raises(DataError, match="share 2 question id"):
        load_squad(get_task("squad_v2"), need_train=True)


def test_hub_failure_is_one_clear_error(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError("offline\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"could not load rajpurkar/squad \[validation\].*--eval-file"):
        load_squad(get_task("squad"), need_train=False)
