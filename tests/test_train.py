"""Training: example construction, a few real optimiser steps on tiny random models, saving and loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from tiny_models import make_model

from inbedder_index import InBedder
from inbedder_index.prompt import PromptBuilder
from inbedder_index.train import (
    QARecord,
    TrainConfig,
    TrainingDataError,
    _Runner,
    build_example,
    contrastive_loss,
    load_qa_records,
    normalise_answer,
    train,
)

ROWS = [
    {"key": "The customer is angry because the parcel never arrived and wants a refund.",
     "value": "How does the customer feel?", "value_prefix": "Angry", "aspect": "emotion"},
    {"key": "Thank you so much for the quick help, my account works again!",
     "value": "How does the customer feel?", "value_prefix": "Grateful", "aspect": "emotion"},
    {"key": "I love this phone, the battery lasts two days and the screen is bright.",
     "value": "What is the topic?", "value_prefix": "A phone", "aspect": "topic"},
    {"key": "Heavy rain is expected in Paris tomorrow afternoon with strong winds.",
     "value": "Where does this happen?", "value_prefix": "Paris", "aspect": "location"},
    {"key": "The football match was moved to Sunday because of the storm.",
     "value": "How does the writer feel?", "value_prefix": "Furious", "aspect": "emotion"},
    {"key": "Stock markets rallied after the central bank kept interest rates unchanged.",
     "value": "How does the writer feel?", "value_prefix": "Thankful", "aspect": "emotion"},
]
INSTRUCTION = "What does the customer want?"


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in ROWS) + "\n")
    return path


def _saved(style, tmp_path):
    model, tokenizer = make_model(style)
    folder = tmp_path / f"tiny-{style}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def _config(base, data_file, out, **overrides):
    settings = {"base_model": str(base), "data": [str(data_file)], "output_dir": str(out), "epochs": 6, "batch_size": 2,
                    "learning_rate": 5e-3, "max_length": 96, "warmup_ratio": 0.0, "log_every": 1, "lora_rank": 4,
                    "lora_dropout": 0.0, "device": "cpu"}
    settings.update(overrides)
    return TrainConfig(**settings)


# --------------------------------------------------------------------------- data and examples


def test_load_records_and_aspect(data_file):
    records = load_qa_records(data_file)
    assert len(records) == len(ROWS)
    assert records[0] == QARecord("How does the customer feel?", ROWS[0]["key"], "Angry", "emotion", str(data_file))


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"key": "text", "value": "question?"}', "'value_prefix'"),
    ('{"key": "", "value": "q?", "value_prefix": "a"}', "'key'"),
])
def test_bad_data_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(TrainingDataError) as info:
        load_qa_records([path])
    assert str(path) in str(info.value) and "line 2" in str(info.value) and message in str(info.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(TrainingDataError, match="not found"):
        load_qa_records([tmp_path / "nope.jsonl"])


def test_causal_labels_mask_exactly_the_prompt():
    model, tokenizer = make_model("llama")
    encoder = InBedder.from_model(model, tokenizer, max_length=96)
    builder = PromptBuilder(tokenizer, max_length=96)
    record = QARecord(INSTRUCTION, ROWS[0]["key"], "A refund")
    example = build_example(builder, tokenizer, record)
    prompt = encoder.prompts.build(record.input, record.instruction).ids  # what the encoder pools over
    answer = tokenizer(" A refund", add_special_tokens=False)["input_ids"]
    assert example.input_ids == prompt + answer + [tokenizer.eos_token_id]
    assert example.labels == [-100] * len(prompt) + answer + [tokenizer.eos_token_id]
    assert example.prompt_length == len(prompt)


def test_masked_labels_fill_the_mask_slots():
    model, tokenizer = make_model("roberta")
    encoder = InBedder.from_model(model, tokenizer, max_length=96, n_mask=3)
    builder = PromptBuilder(tokenizer, max_length=96, n_mask=3)
    short = next(w for w in ("the", "The", "is", "a") if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1)
    for answer_text, n_labels in ((short, 1), ("The customer is angry because", 3)):
        _check_masked(tokenizer, builder, encoder, answer_text, n_labels)


def _check_masked(tokenizer, builder, encoder, answer_text, n_labels):
    record = QARecord(INSTRUCTION, ROWS[0]["key"], answer_text)
    example = build_example(builder, tokenizer, record)
    assert example.input_ids == encoder.prompts.build(record.input, record.instruction).ids
    answer = tokenizer(" " + answer_text, add_special_tokens=False)["input_ids"]
    first = len(example.input_ids) - builder.n_tail - 3
    assert example.input_ids[first : first + 3] == [tokenizer.mask_token_id] * 3
    expected = [-100] * len(example.input_ids)
    for offset, token in enumerate(answer[:3]):
        expected[first + offset] = token
    assert example.labels == expected
    assert sum(label != -100 for label in example.labels) == n_labels  # -100 beyond a short answer


def test_normalise_answer():
    assert normalise_answer("The refund.") == "refund"
    assert normalise_answer("A  Refund!") == "refund"
    assert normalise_answer("Furious", "emotion") == normalise_answer("angry", "emotion") == "emotion:anger"
    assert normalise_answer("Furious", "emotion", group_emotions=False) == "furious"
    assert normalise_answer("Furious", "topic") == "furious"


# --------------------------------------------------------------------------- losses


def test_contrastive_loss_finite_and_reaches_the_model():
    model, tokenizer = make_model("llama")
    model.train()
    builder = PromptBuilder(tokenizer, max_length=96)
    runner = _Runner(model, "causal", tokenizer.pad_token_id, 0, 0, torch.device("cpu"))
    prompts = [p.ids for p in builder.build_many([row["key"] for row in ROWS[:4]], "How does the customer feel?")]
    loss = contrastive_loss(runner.vectors(prompts), ["a", "a", "b", "b"], temperature=0.05)
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.model.layers[0].parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # the pooled vector is the encoder's
    encoder = InBedder.from_model(model.eval(), tokenizer, max_length=96)
    with torch.no_grad():
        ours = runner.vectors(prompts[:1])[0].numpy()
    theirs = encoder.encode([ROWS[0]["key"]], "How does the customer feel?", normalize=False)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_contrastive_loss_orders_correctly():
    close = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    far = close[[0, 2, 1, 3]]
    labels = ["x", "x", "y", "y"]
    assert contrastive_loss(close, labels) < contrastive_loss(far, labels)
    assert contrastive_loss(close, ["a", "b", "c", "d"]).item() == 0.0


# --------------------------------------------------------------------------- training runs


def test_lora_causal_trains_saves_and_loads(tmp_path, data_file):
    base, _, _ = _saved("llama", tmp_path)
    folder = train(_config(base, data_file, tmp_path / "lora", epochs=10), progress=False)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base)
    record = json.loads((folder / "TRAINING.json").read_text())
    losses = [row["lm"] for row in record["loss_history"]]
    assert losses[-1] < losses[0] - 0.2, losses
    assert record["data"][0]["records_used"] == len(ROWS) and record["data"][0]["licence"]
    assert record["config"]["method"] == "lora" and record["seconds"] > 0
    tuned = InBedder(str(folder), max_length=96).encode([ROWS[0]["key"]], INSTRUCTION)
    plain = InBedder(str(base), max_length=96).encode([ROWS[0]["key"]], INSTRUCTION)
    assert tuned.shape == plain.shape and not np.allclose(tuned, plain, atol=1e-4)


def test_full_masked_trains_with_contrastive(tmp_path, data_file):
    base, _, _ = _saved("roberta", tmp_path)
    config = _config(base, data_file, tmp_path / "full", method="full", learning_rate=1e-3, epochs=3,
                     contrastive_weight=0.5, contrastive_batch_size=4)
    folder = train(config, progress=False)
    assert (folder / "config.json").exists() and not (folder / "adapter_config.json").exists()
    record = json.loads((folder / "TRAINING.json").read_text())
    assert all(math.isfinite(row["contrastive"]) for row in record["loss_history"])
    assert record["loss_history"][-1]["lm"] < record["loss_history"][0]["lm"]
    encoder = InBedder(str(folder), max_length=96)
    assert encoder.kind == "masked"
    tuned = encoder.encode([ROWS[2]["key"]], INSTRUCTION)
    plain = InBedder(str(base), max_length=96).encode([ROWS[2]["key"]], INSTRUCTION)
    assert not np.allclose(tuned, plain, atol=1e-4)


def test_contrastive_needs_repeated_answers(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"key": "t", "value": "q?", "value_prefix": "a"}) + "\n")
    base, _, _ = _saved("llama", tmp_path)
    with pytest.raises(TrainingDataError, match="aspect"):
        train(_config(base, path, tmp_path / "out", contrastive_weight=1.0), progress=False)


def test_config_validation():
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="qlora")
    assert TrainConfig(lora_rank=8).lora_alpha == 16


# --------------------------------------------------------------------------- checkpoints and resuming

KILL_AT_STEP = """
import os, signal, sys
from inbedder_index import train as training
save = training._save_checkpoint
def save_then_die(out, params, optimiser, progress, rng, key):
    save(out, params, optimiser, progress, rng, key)
    if progress.step == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # as a stopped session or the OOM killer would
training._save_checkpoint = save_then_die
training.train(training.TrainConfig(**__import__("json").loads(sys.argv[2])), progress=False)
"""


def _adapter_weights(folder):
    from safetensors.numpy import load_file
    return load_file(str(folder / "adapter_model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(tmp_path, data_file):
    import subprocess
    import sys
    from dataclasses import asdict

    base, _, _ = _saved("llama", tmp_path)
    settings = {"epochs": 6, "lora_dropout": 0.1, "contrastive_weight": 0.5, "contrastive_batch_size": 4,
                "contrastive_every": 2, "checkpoint_steps": 2,
                "num_threads": 1}  # one thread: the same sums in the same order in every process, any machine
    whole = train(_config(base, data_file, tmp_path / "whole", **settings), progress=False)

    config = _config(base, data_file, tmp_path / "killed", **settings)
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP, "6", json.dumps(asdict(config))],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "killed" / "adapter_model.safetensors").exists()  # it really stopped mid-way
    with pytest.raises(Exception, match="resume"):  # a fresh run never silently overwrites a checkpoint
        train(config, progress=False)
    resumed = train(_config(base, data_file, tmp_path / "killed", resume=True, **settings), progress=False)

    expected, got = _adapter_weights(whole), _adapter_weights(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name], err_msg=name)
    record = json.loads((resumed / "TRAINING.json").read_text())
    assert [p["resumed"] for p in record["parts"]] == [False, True]
    assert record["parts"][0]["to_step"] == 6 == record["parts"][1]["from_step"]
    assert record["steps"] == json.loads((whole / "TRAINING.json").read_text())["steps"]
    assert record["seconds_by_kind"]["contrastive"] > 0


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, data_file):
    base, _, _ = _saved("llama", tmp_path)
    train(_config(base, data_file, tmp_path / "out", epochs=1), progress=False)
    with pytest.raises(Exception, match="learning_rate"):
        train(_config(base, data_file, tmp_path / "out", epochs=1, learning_rate=1e-2, resume=True), progress=False)
