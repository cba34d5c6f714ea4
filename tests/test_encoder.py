"""The encoder against a plain per-text forward pass, on real (tiny, random) transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inbedder_index import EmbeddingCache, InBedder
from inbedder_index.encoder import plan_batches
from inbedder_index.errors import ModelNotAvailableError
from inbedder_index.models import DEFAULT_MODEL, resolve_name
from inbedder_index.prompt import INSTRUCTION_PART, PromptBuilder
from tiny_models import count_forward_calls, make_model

INSTRUCTION = "What does the customer want?"
TEXTS = [
    "short",
    "The customer is angry because the parcel never arrived and wants a refund. " * 12,  # truncated
    "",
    "I love this phone, the battery lasts two days. " * 3,
    "Heavy rain is expected in Paris tomorrow.",
]


def reference_vector(style: str, model: torch.nn.Module, encoder: InBedder, text: str, instruction: str) -> torch.Tensor:
    """The pooling rule on one unpadded sequence, read from the full model's hidden states."""
    ids = torch.tensor([encoder.prompts.build(text, instruction).ids])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    if style == "roberta":  # <s> ... Response: <mask> x3 </s>
        return hidden[-1 - encoder.n_mask : -1].mean(dim=0)
    return hidden[-1]


def test_batched_encode_equals_unpadded_forward(tiny, tiny_encoder):
    style, model, _ = tiny
    vectors = tiny_encoder.encode(TEXTS, INSTRUCTION, normalize=False)
    assert vectors.shape == (len(TEXTS), tiny_encoder.dim) and vectors.dtype == np.float32
    for row, text in enumerate(TEXTS):
        expected = reference_vector(style, model, tiny_encoder, text, INSTRUCTION)
        cosine = torch.nn.functional.cosine_similarity(expected, torch.from_numpy(vectors[row]), dim=0)
        assert cosine.item() >= 0.99999, (style, row, cosine.item())


def test_answers_equal_greedy_generation(tiny, tiny_encoder):
    style, model, tokenizer = tiny
    _, answers = tiny_encoder.encode(TEXTS, INSTRUCTION, return_answers=True)
    for text, answer in zip(TEXTS, answers):
        ids = torch.tensor([tiny_encoder.prompts.build(text, INSTRUCTION).ids])
        with torch.no_grad():
            if style == "roberta":
                logits = model(input_ids=ids).logits[0, -1 - tiny_encoder.n_mask : -1]
                expected = tokenizer.decode(logits.argmax(-1), skip_special_tokens=True).strip()
            else:
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert answer == expected


def test_order_normalisation_and_single_text(tiny_encoder):
    vectors = tiny_encoder.encode(TEXTS, INSTRUCTION)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reversed_vectors = tiny_encoder.encode(TEXTS[::-1], INSTRUCTION)
    np.testing.assert_allclose(reversed_vectors[::-1], vectors, atol=1e-5)
    single = tiny_encoder.encode(TEXTS[3], INSTRUCTION)
    assert single.shape == (tiny_encoder.dim,)
    np.testing.assert_allclose(single, vectors[3], atol=1e-5)


def test_instruction_changes_vector_and_list_gives_dict(tiny_encoder):
    other = "How does the customer feel?"
    both = tiny_encoder.encode(TEXTS, [INSTRUCTION, other])
    assert set(both) == {INSTRUCTION, other}
    np.testing.assert_allclose(both[INSTRUCTION], tiny_encoder.encode(TEXTS, INSTRUCTION), atol=1e-5)
    np.testing.assert_allclose(both[other], tiny_encoder.encode(TEXTS, other), atol=1e-5)
    assert not np.allclose(both[INSTRUCTION], both[other], atol=1e-3)


def test_one_query_under_several_instructions_warns_nothing(tiny_encoder, recwarn):
    """A combined search embeds one query under each instruction: the shared-prefix path then hands
    the runtime a read-only view (the suffix broadcast to its one row), which torch warns about in
    a user's log unless the runtime copies it."""
    tiny_encoder.encode(TEXTS[-1], [INSTRUCTION, "How does the customer feel?"])
    assert [str(w.message) for w in recwarn.list] == []


def test_long_text_is_left_truncated_keeping_instruction(tiny_encoder):
    long_text = "opening " + "filler words here. " * 200 + "closing"
    prompt = tiny_encoder.prompts.build(long_text, INSTRUCTION)
    assert len(prompt) <= tiny_encoder.max_length
    decoded = tiny_encoder.tokenizer.decode(prompt.ids)
    assert decoded.rstrip("</s><mask> ").endswith("### Response:") or "### Response:" in decoded
    tail = tiny_encoder.tokenizer(INSTRUCTION_PART.format(instruction=INSTRUCTION), add_special_tokens=False)["input_ids"]
    suffix = prompt.ids[len(prompt.ids) - len(prompt.suffix):]
    assert suffix[: len(tail)] == tail  # the whole instruction part survives
    assert "closing" in decoded and "opening" not in decoded  # the left side was cut
    vector = tiny_encoder.encode([long_text], INSTRUCTION)
    assert vector.shape == (1, tiny_encoder.dim) and np.isfinite(vector).all()


def test_bad_input(tiny_encoder):
    empty = tiny_encoder.encode([], INSTRUCTION)
    assert empty.shape == (0, tiny_encoder.dim) and empty.dtype == np.float32
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tiny_encoder.encode(["ok", 3, "fine"], INSTRUCTION)
    for blank in ("", "   \n"):
        with pytest.raises(ValueError, match="instruction"):
            tiny_encoder.encode(["ok"], blank)
    with pytest.raises(ValueError, match="instruction"):
        tiny_encoder.encode(["ok"], [])
    with pytest.raises(TypeError):
        tiny_encoder.encode(["ok"], INSTRUCTION, bogus=True)
    with pytest.raises(ValueError, match="no room"):
        tiny_encoder.encode(["ok"], "why " * 200)
    blank_text = tiny_encoder.encode(["", "   "], INSTRUCTION)
    assert np.isfinite(blank_text).all() and blank_text.shape == (2, tiny_encoder.dim)


def test_embedding_cache_hit_and_miss(tiny, tmp_path):
    style, model, tokenizer = tiny
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = InBedder.from_model(model, tokenizer, max_length=96, embedding_cache=cache)
    calls = count_forward_calls(encoder)
    first = encoder.encode(TEXTS, INSTRUCTION)
    assert sum(calls) == len(TEXTS)
    again = encoder.encode(TEXTS, INSTRUCTION)
    assert sum(calls) == len(TEXTS)  # all hits: no forward pass
    np.testing.assert_allclose(again, first, atol=1e-6)
    encoder.encode(TEXTS + ["a brand new text"], INSTRUCTION)
    assert sum(calls) == len(TEXTS) + 1  # only the new text is a miss
    encoder.encode(TEXTS, "How does the customer feel?")
    assert sum(calls) == 2 * len(TEXTS) + 1  # another instruction is another key
    _, answers = encoder.encode(TEXTS, INSTRUCTION, return_answers=True)
    assert len(answers) == len(TEXTS)  # rows without answers are re-encoded once ...
    encoder.encode(TEXTS, INSTRUCTION, return_answers=True)
    assert sum(calls) == 3 * len(TEXTS) + 1  # ... and then served with their answers
    # another process (a second connection) reads the same rows
    reader = EmbeddingCache(tmp_path / "cache")
    assert len(reader) == len(cache) == 2 * len(TEXTS) + 1
    # a different model never reads another model's rows
    other_model, other_tokenizer = make_model(style, seed=1)
    other = InBedder.from_model(other_model, other_tokenizer, max_length=96, embedding_cache=cache)
    assert other.fingerprint != encoder.fingerprint
    assert not np.allclose(other.encode(TEXTS, INSTRUCTION), first, atol=1e-3)


def test_fingerprint_is_stable_and_tracks_weights_and_pooling(tiny):
    style, model, tokenizer = tiny
    a = InBedder.from_model(model, tokenizer)
    b = InBedder.from_model(model, tokenizer)
    assert a.fingerprint == b.fingerprint
    changed, _ = make_model(style, seed=7)
    assert InBedder.from_model(changed, tokenizer).fingerprint != a.fingerprint
    if style == "roberta":
        assert InBedder.from_model(model, tokenizer, n_mask=2).fingerprint != a.fingerprint


def test_local_folder_round_trip(tiny, tmp_path):
    style, model, tokenizer = tiny
    model.save_pretrained(tmp_path / style)
    tokenizer.save_pretrained(tmp_path / style)
    loaded = InBedder(str(tmp_path / style), max_length=96, cache_dir=tmp_path / "cache")  # ONNX Runtime: exported
    assert loaded.kind == ("masked" if style == "roberta" else "causal") and loaded.runtime.name == "onnx"
    in_memory = InBedder.from_model(model, tokenizer, max_length=96)
    assert loaded.fingerprint == in_memory.fingerprint
    np.testing.assert_allclose(loaded.encode(TEXTS, INSTRUCTION), in_memory.encode(TEXTS, INSTRUCTION), atol=1e-5)


def test_hub_model_offline_gives_actionable_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="offline.*pass its path"):
        InBedder("BrandonZYW/roberta-large-InBedder", revision="main", cache_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError, match="built-in"):
        InBedder(str(tmp_path / "no" / "such" / "folder"))


def test_plan_batches_respects_both_budgets():
    lengths = [5, 100, 7, 100, 50, 3, 3, 3]
    batches = plan_batches(lengths, batch_size=3, max_batch_tokens=200)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3 and max(lengths[i] for i in batch) * len(batch) <= 200
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)


def test_prompt_parts_do_not_depend_on_each_other(tiny):
    _, _, tokenizer = tiny
    builder = PromptBuilder(tokenizer, max_length=64)
    a = builder.build("the same text", "first question?")
    b = builder.build("the same text", "a quite different second question?")
    assert a.prefix == b.prefix and a.suffix != b.suffix


@pytest.mark.slow
def test_default_model_loads_offline_and_follows_instructions(default_encoder):
    """On a crafted 2 feelings x 3 wants sample, each text's nearest neighbour shares the instructed aspect."""
    assert default_encoder.model_id == resolve_name(DEFAULT_MODEL)
    samples = [  # (text, feeling, want): every feeling meets every want
        ("I am furious, my laptop arrived broken. I want my money back.", "angry", "refund"),
        ("Thanks so much, lovely service! I'd still like a refund for the extra charge though.", "happy", "refund"),
        ("This is outrageous, nobody answers my emails. Update my delivery address to 5 Oak Road now.", "angry", "address"),
        ("You have been wonderful! Could you please change my shipping address to 12 Pine Street?", "happy", "address"),
        ("I'm fed up with your app crashing. Cancel my subscription today.", "angry", "cancel"),
        ("Great experience overall, thank you. Please cancel my subscription as I'm moving abroad.", "happy", "cancel"),
    ]
    texts = [text for text, _, _ in samples]
    aspects = {"How does the customer feel?": 1, "What does the customer want?": 2}
    both = default_encoder.encode(texts, list(aspects))
    neighbours = {}
    for instruction, column in aspects.items():
        vectors = both[instruction]
        assert vectors.shape == (len(texts), default_encoder.dim)
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        neighbours[instruction] = scores.argmax(axis=1).tolist()
        for row, nearest in enumerate(neighbours[instruction]):
            assert samples[nearest][column] == samples[row][column], (instruction, texts[row], texts[nearest])
    assert neighbours["How does the customer feel?"] != neighbours["What does the customer want?"]


@pytest.mark.slow
def test_untrained_base_stays_available():
    base = InBedder("smollm2-135m", runtime="torch")  # no export of a model only this test loads
    assert base.kind == "causal" and base.dim == 576
    assert base.fingerprint != InBedder().fingerprint
