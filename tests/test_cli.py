"""The ``inbedder-index`` command end to end, on a real (tiny) model folder and real collections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inbedder_index.cli import main
from tiny_models import save_tiny

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
ROWS = [
    {"id": "m1", "text": "I am furious, the parcel never arrived. Refund me.", "shop": "north"},
    {"id": "m2", "text": "Thank you, the kettle works perfectly now!", "shop": "south"},
    {"id": "m3", "text": "Please change my delivery address to Elm Street.", "shop": "north"},
    {"id": "m4", "text": "I'm worried, my card was charged twice.", "shop": "south"},
    {"id": "m5", "text": "The app keeps crashing, so frustrating. How do I fix it?", "shop": "north"},
    {"id": "m6", "text": "Lovely flowers, they arrived early. Can I order them again?", "shop": "south"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(save_tiny(tmp_path_factory.mktemp("model") / "tiny-llama"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["faiss", "qdrant"])
def built(request, tmp_path, model_dir, capsys):
    index = str(tmp_path / "idx")
    source = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    code, out, err = run(capsys, "build", index, "--input", str(source), "--instruction", FEEL,
                         "--instruction", WANT, "--model", model_dir, "--backend", request.param)
    assert code == 0, err
    assert "6 documents" in out
    return index, request.param


def search_ids(capsys, index: str, query: str, instruction: str, *extra: str) -> list[str]:
    code, out, err = run(capsys, "search", index, query, "--instruction", instruction, "--json", *extra)
    assert code == 0, err
    return [hit["id"] for hit in json.loads(out)]


def test_build_search_list_info_drop(built, capsys):
    index, backend = built
    hits = search_ids(capsys, index, ROWS[1]["text"], FEEL)
    assert hits[0] == "m2" and sorted(hits) == sorted(r["id"] for r in ROWS)
    assert set(search_ids(capsys, index, "x", FEEL, "--filter", "shop=north")) == {"m1", "m3", "m5"}
    code, out, _ = run(capsys, "search", index, "refund", "--instruction", WANT, "-k", "2")
    assert code == 0 and out.splitlines()[0].split() == ["id", "score", "answer", "text"] and len(out.splitlines()) == 4
    code, out, _ = run(capsys, "list", index, "--json")
    assert [c["instruction"] for c in json.loads(out)] == [FEEL, WANT]
    assert all(c["count"] == len(ROWS) for c in json.loads(out))
    code, out, _ = run(capsys, "info", index)
    assert code == 0 and "documents   6" in out and backend in out
    code, out, _ = run(capsys, "drop", index, "--instruction", FEEL)
    assert code == 0
    code, out, _ = run(capsys, "list", index, "--json")
    assert [c["instruction"] for c in json.loads(out)] == [WANT]


def test_add_and_cluster(built, tmp_path, capsys):
    index, _ = built
    extra = write_jsonl(tmp_path / "more.jsonl", [{"id": "m7", "text": "Where is my sofa? Three weeks late!", "shop": "east"}])
    code, out, err = run(capsys, "add", index, "--input", str(extra), "--json")
    assert code == 0, err
    assert json.loads(out)["encoded"] == ["m7"]
    assert "m7" in search_ids(capsys, index, "sofa", WANT, "-k", "7")
    plot = tmp_path / "clusters.png"
    code, out, err = run(capsys, "cluster", index, "--instruction", FEEL, "-k", "2", "--json", "--plot", str(plot))
    assert code == 0, err
    report = json.loads(out)
    assert sum(c["size"] for c in report["clusters"]) == 7 and len(report["clusters"]) == 2
    assert all(c["top_words"] for c in report["clusters"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_and_plain_text_inputs(tmp_path, model_dir, capsys):
    csv_file = tmp_path / "docs.csv"
    csv_file.write_text("doc,body,lang\nx1,Hello there,en\nx2,Bonjour,fr\n")
    code, _, err = run(capsys, "build", str(tmp_path / "a"), "--input", str(csv_file), "--text-field", "body",
                       "--id-field", "doc", "--metadata-fields", "lang", "--instruction", FEEL, "--model", model_dir)
    assert code == 0, err
    assert set(search_ids(capsys, str(tmp_path / "a"), "hi", FEEL, "--filter", "lang=fr")) == {"x2"}
    text_file = tmp_path / "docs.txt"
    text_file.write_text("first line\n\nsecond line\n")
    code, _, err = run(capsys, "build", str(tmp_path / "b"), "--input", str(text_file), "--instruction", FEEL,
                       "--model", model_dir)
    assert code == 0, err
    assert sorted(search_ids(capsys, str(tmp_path / "b"), "line", FEEL)) == ["1", "3"]  # ids are line numbers


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ('{"id": "z1", "text": "ok"}\n{"id": "z2", "text": broken}\n', "line 2 is not valid JSON"),
        ('{"id": "z1", "body": "no text field"}\n', "line 1 has no 'text' field"),
        ('{"id": "z1", "text": "a"}\n{"id": "z1", "text": "b"}\n', "duplicate id 'z1'"),
        ('{"id": "m1", "text": "already stored"}\n', "m1"),
    ],
    ids=["missing-file", "malformed-json", "missing-text-field", "duplicate-ids", "existing-id"],
)
def test_bad_input_exits_non_zero_and_touches_nothing(built, tmp_path, capsys, content, message):
    index, _ = built
    before = search_ids(capsys, index, "refund", WANT)
    source = tmp_path / "bad.jsonl"
    if content is not None:
        source.write_text(content)
    code, out, err = run(capsys, "add", index, "--input", str(source))
    assert code == 2 and message in err and err.startswith("inbedder-index add: error:")
    assert search_ids(capsys, index, "refund", WANT) == before
    code, out, _ = run(capsys, "info", index, "--json")
    assert json.loads(out)["documents"] == len(ROWS)


def test_unknown_instruction_lists_known_ones(built, capsys):
    index, _ = built
    code, _, err = run(capsys, "search", index, "refund", "--instruction", "Where is the shop?")
    assert code == 2 and FEEL in err and WANT in err


def test_unreachable_qdrant_server(tmp_path, model_dir, capsys):
    source = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    code, _, err = run(capsys, "build", str(tmp_path / "remote"), "--input", str(source), "--instruction", FEEL,
                       "--model", model_dir, "--backend", "qdrant", "--qdrant-url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach Qdrant at http://127.0.0.1:9" in err


def test_missing_index(tmp_path, capsys):
    code, _, err = run(capsys, "info", str(tmp_path / "nowhere"))
    assert code == 2 and "no index at" in err


def test_train_then_eval(tmp_path, model_dir, capsys):
    """`train` writes an adapter that `eval` loads by folder and scores on a local triplet task."""
    qa = write_jsonl(tmp_path / "qa.jsonl", [
        {"key": r["text"], "value": FEEL, "value_prefix": answer}
        for r, answer in zip(ROWS, ["Angry", "Grateful", "Neutral", "Worried", "Frustrated", "Happy"])
    ])
    out_dir = tmp_path / "adapter"
    code, out, err = run(capsys, "train", "--data", str(qa), "--base", model_dir, "--output", str(out_dir),
                         "--epochs", "1", "--batch-size", "2", "--max-length", "96", "--json")
    assert code == 0, err
    assert json.loads(out)["output"] == str(out_dir) and (out_dir / "adapter_config.json").exists()
    assert json.loads((out_dir / "TRAINING.json").read_text())  # provenance travels with the model
    task = write_jsonl(tmp_path / "triplets.jsonl", [
        {"anchor": ROWS[0]["text"], "positive": ROWS[4]["text"], "negative": ROWS[1]["text"],
         "instruction": FEEL, "aspect": "feeling"},
        {"anchor": ROWS[2]["text"], "positive": ROWS[5]["text"], "negative": ROWS[3]["text"],
         "instruction": WANT, "aspect": "want"},
    ])
    code, out, err = run(capsys, "eval", "--model", str(out_dir), "--model", model_dir, "--task", str(task), "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert set(scores) == {str(out_dir), model_dir}
    for per_model in scores.values():
        values = [v for metrics in per_model.values() for v in metrics.values()]
        assert values and all(0.0 <= v <= 1.0 for v in values)


def test_train_rejects_bad_data(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "passage", "value": "question?"}\n')
    code, _, err = run(capsys, "train", "--data", str(bad), "--base", model_dir, "--output", str(tmp_path / "o"))
    assert code == 2 and "line 1" in err


# ----------------------------------------------------------------- several instructions, facets, answer filters


def test_search_under_several_instructions_equals_the_library(built, capsys):
    from inbedder_index import InstructionIndex

    index, _ = built
    with InstructionIndex.open(index, read_only=True) as opened:  # closed before the CLI opens it
        different = opened.search_combined({FEEL: "angry", WANT: "a refund"}, k=3)
        weighted = opened.search_combined({FEEL: "refund", WANT: "refund"}, k=6, weights={WANT: 2.5})
    code, out, err = run(capsys, "search", index, "--query-under", f"{FEEL}=angry", "--query-under",
                         f"{WANT}=a refund", "-k", "3", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert [h["id"] for h in got] == [h.id for h in different]
    for hit, want in zip(got, different):
        assert hit["scores"] == pytest.approx(want.scores, abs=1e-5) and hit["answers"] == want.answers
    code, out, err = run(capsys, "search", index, "refund", "--instruction", FEEL, "--instruction", WANT,
                         "--weight", f"{WANT}=2.5", "--json")
    assert code == 0, err
    assert [(h["id"], pytest.approx(h["score"], abs=1e-5)) for h in json.loads(out)] == \
        [(h.id, h.score) for h in weighted]
    code, out, _ = run(capsys, "search", index, "--query-under", f"{FEEL}=angry", "--query-under", f"{WANT}=refund",
                       "-k", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and lines[0].split()[:2] == ["id", "score"] and FEEL in lines[0]


def test_facets_and_answer_filters(built, capsys):
    from inbedder_index import InstructionIndex

    index, _ = built
    with InstructionIndex.open(index, read_only=True) as opened:
        facets = opened.facets(FEEL)
        top = next(answer for answer, _ in facets if "," not in answer)
        flt = {"$answer": {FEEL: [top]}, "shop": "north"}
        filtered_facets = opened.facets(WANT, filter=flt)
        filtered_hits = opened.search("refund", WANT, k=6, filter=flt)
    assert sum(count for _, count in facets) == len(ROWS)
    code, out, err = run(capsys, "facets", index, "--instruction", FEEL, "--json")
    assert code == 0, err
    assert json.loads(out) == {"instruction": FEEL, "facets": [{"answer": a, "count": n} for a, n in facets]}
    code, out, err = run(capsys, "facets", index, "--instruction", WANT, "--answer", f"{FEEL}={top.upper()}.",
                         "--filter", "shop=north", "--json")
    assert code == 0, err
    assert [(f["answer"], f["count"]) for f in json.loads(out)["facets"]] == filtered_facets
    assert search_ids(capsys, index, "refund", WANT, "-k", "6", "--answer", f"{FEEL}=no such answer,{top}",
                      "--filter", "shop=north") == [h.id for h in filtered_hits]
    code, out, _ = run(capsys, "facets", index, "--instruction", FEEL, "--k", "1")
    assert code == 0 and out.splitlines()[0].split() == ["answer", "documents"] and len(out.splitlines()) == 3


@pytest.mark.parametrize("argv, message", [
    (["--query-under", "no equals sign"], "is not INSTRUCTION=QUERY"),
    (["refund"], "give QUERY together with --instruction"),
    (["--instruction", FEEL], "give QUERY together with --instruction"),
    ([], "nothing to search for"),
    (["--query-under", f"{FEEL}=x", "--weight", f"{FEEL}=heavy"], "is not a number"),
    (["--query-under", f"{FEEL}=x", "--weight", f"{WANT}=2"], "has no query"),
    (["x", "--instruction", FEEL, "--answer", "no-instruction"], "is not INSTRUCTION=ANSWER"),
])
def test_bad_combined_searches_exit_2_naming_the_problem(built, capsys, argv, message):
    index, _ = built
    code, _, err = run(capsys, "search", index, *argv)
    assert code == 2 and message in err, err


def test_facets_of_an_index_built_without_answers_say_so(tmp_path, model_dir, capsys):
    source = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    index = str(tmp_path / "plain")
    code, _, err = run(capsys, "build", index, "--input", str(source), "--instruction", FEEL, "--model", model_dir,
                       "--no-answers")
    assert code == 0, err
    code, _, err = run(capsys, "facets", index, "--instruction", FEEL)
    assert code == 2 and "answers=False" in err
