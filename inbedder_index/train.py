"""Fine-tune a causal or masked language model into an InBedder.

The objective is the paper's: answer a question about a text, with the loss on the answer
tokens only, using InBedder's prompt (``prompt.PromptBuilder``, the same builder the encoder
uses, so training and encoding see the same token ids). An optional added objective
(``contrastive_weight > 0``) trains the pooled vector itself: passages are prompted with one
shared question of an aspect and a supervised-contrastive loss pulls together the vectors of
passages whose answers to that question agree and pushes apart those whose answers differ.

::

    from inbedder_index.train import TrainConfig, train
    folder = train(TrainConfig(data=["inbedder_index/data/train/aspects-qa.jsonl"], output_dir="out"))
    InBedder(str(folder))

Needs ``peft`` for LoRA (``pip install 'inbedder-index[train]'``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import string
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .encoder import pool, right_pad
from .errors import InBedderError, TrainingDataError
from .models import load_model
from .prompt import PROMPT_VERSION, TEMPLATE, PromptBuilder
from .readers import json_lines

__all__ = [
    "EMOTION_FAMILIES",
    "QARecord",
    "TrainConfig",
    "TrainingDataError",
    "build_example",
    "contrastive_loss",
    "load_qa_records",
    "normalise_answer",
    "train",
]

N_MASK = 3  # masked LMs: mask slots after "### Response:" (the encoder's default n_mask)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class QARecord:
    """One training example: the answer ``output`` to ``instruction`` about ``input``."""

    instruction: str
    input: str
    output: str
    aspect: str | None = None
    source: str = ""


def load_qa_records(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[QARecord]:
    """Read JSON Lines files in the C3 shape: ``{"key": passage, "value": question, "value_prefix": answer}``.

    An optional ``aspect`` field is kept. Blank lines are skipped; anything else that is not a
    JSON object with non-empty string ``key``, ``value`` and ``value_prefix`` raises
    ``TrainingDataError`` naming the file and line.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[QARecord] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise TrainingDataError(f"training data file not found: {path}")
        with open(path, encoding="utf-8") as handle:
            rows = json_lines(handle, lambda n, why: TrainingDataError(f"{path}, line {n}: not valid JSON ({why})"))
            for number, row in rows:
                where = f"{path}, line {number}"
                if not isinstance(row, dict):
                    raise TrainingDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
                values = {}
                for name in ("key", "value", "value_prefix"):
                    value = row.get(name)
                    if not isinstance(value, str) or not value.strip():
                        raise TrainingDataError(
                            f"{where}: field {name!r} must be a non-empty string "
                            f"(records need key=passage, value=question, value_prefix=answer)"
                        )
                    values[name] = value
                aspect = row.get("aspect")
                if aspect is not None and not isinstance(aspect, str):
                    raise TrainingDataError(f"{where}: field 'aspect' must be a string")
                records.append(QARecord(values["value"].strip(), values["key"], values["value_prefix"].strip(),
                                        aspect or None, str(path)))
        if not any(r.source == str(path) for r in records):
            raise TrainingDataError(f"{path}: no records")
    return records


_ARTICLES = re.compile(r"^(a|an|the|to|by|at|in|on)\s+")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})

# Coarse emotion families for the contrastive labels: the aspect data's emotion answers use
# ~380 distinct words, and contrasting "furious" against "angry" as if they disagreed would teach
# the wrong thing. A general-purpose grouping (not derived from any evaluation set).
EMOTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "anger": ("angry", "furious", "annoyed", "irritated", "exasperated", "frustrated", "outraged", "livid",
              "enraged", "mad", "fed up", "upset", "indignant", "resentful", "hostile", "bitter", "cross",
              "infuriated", "aggravated", "incensed", "irate", "impatient", "fuming", "displeased", "anger", "rage", "annoyance", "irritation", "frustration", "outrage",
              "fury", "disapproving", "disapproval", "dissatisfied", "unimpressed", "betrayed", "grumpy", "angered"),
    "gratitude": ("grateful", "thankful", "appreciative", "touched", "moved", "indebted", "gratitude", "thanks", "thankfulness",
                  "appreciation"),
    "joy": ("happy", "delighted", "overjoyed", "thrilled", "elated", "joyful", "ecstatic", "excited", "cheerful",
            "pleased", "glad", "content", "satisfied", "enthusiastic", "positive", "jubilant", "euphoric",
            "gleeful", "upbeat", "celebratory", "optimistic", "hopeful", "eager", "amused", "playful", "loving",
            "warm", "affectionate", "charmed", "impressed", "admiring", "enchanted", "proud", "triumphant", "joy", "happiness", "excitement", "delight", "pride",
            "enthusiasm", "satisfaction", "friendly", "humorous", "light hearted", "lighthearted", "admiration",
            "love", "hope", "encouraging", "reassuring", "supportive", "celebration", "fond", "grinning"),
    "fear": ("nervous", "worried", "anxious", "alarmed", "scared", "afraid", "fearful", "frightened", "panicked",
             "terrified", "uneasy", "tense", "stressed", "concerned", "apprehensive", "panicky", "desperate",
             "distressed", "insecure", "overwhelmed", "urgent", "on edge", "jittery", "restless", "worry", "fear", "anxiety", "dread", "panic", "nervousness",
             "concern", "alarm", "stress", "cautious", "wary", "warning", "dreading"),
    "sadness": ("sad", "disappointed", "heartbroken", "grieving", "unhappy", "devastated", "gloomy", "lonely",
                "melancholy", "depressed", "sorrowful", "mournful", "dejected", "let down", "regretful",
                "nostalgic", "wistful", "hurt", "negative", "discouraged", "hopeless", "miserable", "somber",
                "sombre", "dismayed", "defeated", "crushed", "despondent", "sadness", "disappointment", "grief", "regret", "sorrow",
                "nostalgia", "loneliness", "heartbreak", "melancholic", "mournful", "sympathetic"),
    "calm": ("neutral", "calm", "matter of fact", "indifferent", "relaxed", "factual", "informative", "formal",
             "objective", "detached", "composed", "businesslike", "serene", "peaceful", "polite", "professional",
             "unbothered", "dispassionate", "measured", "reserved", "patient", "relieved", "bored", "tired",
             "exhausted", "weary", "apathetic", "resigned", "relief",
             "boredom", "calmness", "neutrality", "deadpan", "dry", "instructional", "practical", "neutral tone",
             "straightforward", "businesslike", "plain", "matter of factly", "informational"),
    "confusion": ("confused", "puzzled", "baffled", "perplexed", "uncertain", "unsure", "curious", "skeptical",
                  "sceptical", "doubtful", "suspicious", "bewildered", "surprised", "shocked", "astonished",
                  "amazed", "stunned", "awed", "in awe", "surprise", "awe", "shock",
                  "confusion", "curiosity", "disbelief", "wonder", "skepticism", "puzzlement", "intrigued"),
    "shame": ("embarrassed", "ashamed", "guilty", "apologetic", "sheepish", "remorseful", "humiliated",
              "self conscious", "awkward", "sorry", "embarrassment", "guilt", "shame",
              "self deprecating", "contrite"),
    "mockery": ("sarcastic", "mocking", "ironic", "cynical", "dismissive", "contemptuous", "scornful", "disgusted",
                "critical", "sneering", "condescending", "jealous", "envious", "sarcasm",
                "mockery", "irony", "disgust", "contempt", "envy", "jealousy", "snarky", "wry", "teasing"),
}
_EMOTION_LOOKUP = {word: family for family, words in EMOTION_FAMILIES.items() for word in words}


def normalise_answer(answer: str, aspect: str | None = None, *, group_emotions: bool = True) -> str:
    """An answer as a contrastive label: lowercase, no punctuation, no leading article/preposition.

    With ``group_emotions``, emotion answers map to a coarse family (``EMOTION_FAMILIES``): the
    whole answer if listed, else its first listed word ("very angry" -> anger).
    """
    text = " ".join(answer.lower().translate(_PUNCT).split())
    while True:
        stripped = _ARTICLES.sub("", text)
        if stripped == text:
            break
        text = stripped
    if group_emotions and aspect == "emotion":
        if text in _EMOTION_LOOKUP:
            return "emotion:" + _EMOTION_LOOKUP[text]
        for word in text.split():
            if word in _EMOTION_LOOKUP:
                return "emotion:" + _EMOTION_LOOKUP[word]
    return text


# --------------------------------------------------------------------------- config

KNOWN_SOURCES: dict[str, dict[str, str]] = {
    "aspects-qa.jsonl": {
        "provenance": "written from scratch for inbedder-index (inbedder_index/data/train/README.md); "
                      "no third-party text; no link to the evaluation sets",
        "licence": "MIT",
    },
    "c3.train.en.jsonl": {
        "provenance": "C3 reading comprehension (Sun et al., 2020), English translation from the InBedder "
                      "repository github.com/zhang-yu-wei/InBedder (alpaca_train/data/c3.zip)",
        "licence": "InBedder repository MIT; the original C3 corpus is released for research use only",
    },
    "c3.validation.en.jsonl": {
        "provenance": "C3 validation split, English translation from the InBedder repository",
        "licence": "InBedder repository MIT; the original C3 corpus is released for research use only",
    },
}


@dataclass
class TrainConfig:
    """What ``train`` does. Paths may be strings; ``output_dir`` is created.

    ``data_limits`` caps the records taken from a file (keyed by the path as given in ``data``;
    a random subset with ``seed``). ``contrastive_weight`` > 0 adds the vector objective on
    aspect-labelled records (see the module docstring); 0 is the plain InBedder objective.
    ``exclude_aspects`` drops records whose ``aspect`` is listed, to train with whole kinds held out.
    """

    base_model: str = "smollm2-135m"
    data: list[str] = field(default_factory=lambda: ["inbedder_index/data/train/aspects-qa.jsonl"])
    output_dir: str = "inbedder-finetuned"
    method: Literal["lora", "full"] = "lora"
    lora_rank: int = 16
    lora_alpha: int | None = None  # None: 2 * lora_rank
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 3e-4
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    seed: int = 0
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    data_limits: dict[str, int] = field(default_factory=dict)
    exclude_aspects: list[str] = field(default_factory=list)  # aspect kinds left out (leave-aspects-out runs)
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.05
    contrastive_batch_size: int = 16
    contrastive_every: int = 1  # a contrastive batch on every n-th optimiser step
    contrastive_per_label: int = 3  # records per answer group in a contrastive batch
    group_emotions: bool = True
    contrastive_aspects: list[str] | None = None  # None: every aspect with repeated answers
    device: str | None = None
    bf16: bool = True  # autocast on CUDA only; CPU trains in float32
    num_threads: int | None = None
    log_every: int = 10
    max_seconds: float | None = None  # a time budget: the LR schedule anneals by steps or time, whichever ends first
    cache_dir: str | None = None
    hard_negatives: float = 0.5  # share of a contrastive batch's negatives that agree with a positive on another aspect
    checkpoint_seconds: float = 300.0  # write a resumable checkpoint this often (and at the end)
    checkpoint_steps: int | None = None  # ... or every n optimiser steps, whichever comes first
    resume: bool = False  # continue from output_dir/checkpoint if one is there

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.data = [str(p) for p in self.data]
        self.output_dir = str(self.output_dir)
        if self.method not in ("lora", "full"):
            raise ValueError(f"method must be 'lora' or 'full', got {self.method!r}")
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_rank
        for name in ("batch_size", "grad_accum", "contrastive_batch_size", "contrastive_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError("epochs and learning_rate must be positive")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ValueError("contrastive_weight must be >= 0 and contrastive_temperature > 0")


# --------------------------------------------------------------------------- examples


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int  # the pooled state: causal -> index prompt_length - 1


def build_example(builder: PromptBuilder, tokenizer: Any, record: QARecord) -> Example:
    """Token ids and labels of one record, with the encoder's exact prompt ids.

    Causal: prompt + `` answer`` + EOS; labels -100 on the prompt. Masked: the prompt with
    ``builder.n_mask`` mask slots whose labels are the answer's first tokens (-100 beyond it).
    """
    prompt = builder.build(record.input, record.instruction).ids
    answer = list(tokenizer(" " + record.output, add_special_tokens=False)["input_ids"])
    if builder.n_mask:
        first = len(prompt) - builder.n_tail - builder.n_mask
        labels = [-100] * len(prompt)
        for slot, token in zip(range(first, first + builder.n_mask), answer):
            labels[slot] = token
        return Example(prompt, labels, len(prompt))
    eos = tokenizer.eos_token_id
    tail = answer + ([eos] if eos is not None else [])
    return Example(prompt + tail, [-100] * len(prompt) + tail, len(prompt))


def _length_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (less padding): sort inside chunks of 50 batches."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(examples[i].input_ids))
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


class _ContrastiveSampler:
    """Batches of one aspect's records, grouped by normalised answer so most anchors have a positive.

    Negatives are made hard on purpose: a share ``hard`` of them are passages that give the same
    answer as a chosen passage to *another* question but not to this one, so the vector cannot
    agree by a shared topic or style and must follow the question asked.
    """

    def __init__(self, records: Sequence[QARecord], batch_size: int, per_label: int, group_emotions: bool,
                 rng: random.Random, hard: float = 0.5) -> None:
        self.rng = rng
        self.batch_size = batch_size
        self.per_label = max(2, per_label)
        self.hard = hard
        self.group_emotions = group_emotions
        groups: dict[str, dict[str, list[QARecord]]] = defaultdict(lambda: defaultdict(list))
        self.label_of: dict[tuple[str, str], str] = {}  # (aspect, passage) -> label
        self.record_of: dict[tuple[str, str], QARecord] = {}
        sharing: dict[tuple[str, str], set[str]] = defaultdict(set)  # (aspect, label) -> passages
        for record in records:
            if record.aspect:
                label = self._label(record)
                groups[record.aspect][label].append(record)
                self.label_of[(record.aspect, record.input)] = label
                self.record_of[(record.aspect, record.input)] = record
                sharing[(record.aspect, label)].add(record.input)
        self.aspects_of: dict[str, list[str]] = defaultdict(list)
        for aspect, passage in self.label_of:
            self.aspects_of[passage].append(aspect)
        # only labels that two or more passages share can make a hard negative
        self.sharing = {key: sorted(passages) for key, passages in sharing.items() if len(passages) >= 2}
        self.aspects: dict[str, tuple[list[list[QARecord]], list[QARecord]]] = {}
        weights = []
        for aspect, by_label in groups.items():
            multi = [group for group in by_label.values() if len({r.input for r in group}) >= 2]
            if len(multi) < 2:
                continue  # needs two answers that each have two texts
            self.aspects[aspect] = (multi, [r for group in by_label.values() for r in group])
            weights.append(sum(len(group) for group in multi))
        self.names = list(self.aspects)
        self.weights = weights

    def _label(self, record: QARecord) -> str:
        return normalise_answer(record.output, record.aspect, group_emotions=self.group_emotions)

    def __bool__(self) -> bool:
        return bool(self.names)

    def describe(self) -> dict[str, Any]:
        return {aspect: {"answer_groups_with_positives": len(multi),
                         "records_in_those_groups": sum(len(g) for g in multi), "records": len(pool)}
                for aspect, (multi, pool) in self.aspects.items()}

    def _hard_negative(self, aspect: str, chosen: Sequence[QARecord], seen: set[str]) -> QARecord | None:
        """A passage that agrees with a chosen one on another aspect and differs on ``aspect``."""
        anchor = self.rng.choice(chosen)
        others = [a for a in self.aspects_of[anchor.input] if a != aspect]
        self.rng.shuffle(others)
        for other in others:
            peers = self.sharing.get((other, self.label_of[(other, anchor.input)]), [])
            candidates = [p for p in peers if p not in seen and (aspect, p) in self.record_of
                          and self.label_of[(aspect, p)] != self._label(anchor)]
            if candidates:
                return self.record_of[(aspect, self.rng.choice(candidates))]
        return None

    def sample(self) -> tuple[str, list[QARecord], list[str]]:
        """(shared question, records, labels) for one batch."""
        aspect = self.rng.choices(self.names, weights=self.weights)[0]
        multi, pool = self.aspects[aspect]
        chosen: list[QARecord] = []
        seen: set[str] = set()
        # groups drawn with probability ~ sqrt(size): big answer groups (emotion families) recur often
        order = sorted(multi, key=lambda g: -self.rng.random() ** (1.0 / math.sqrt(len(g))))
        positives_until = self.batch_size - max(1, round(self.batch_size * 0.25))  # room for negatives
        for group in order:
            if len(chosen) >= positives_until:
                break
            members = [r for r in self.rng.sample(group, len(group)) if r.input not in seen]
            take = members[: min(self.per_label, positives_until - len(chosen))]
            if len(take) < 2:
                continue
            for record in take:
                seen.add(record.input)
                chosen.append(record)
        fill = iter(self.rng.sample(pool, min(len(pool), 4 * self.batch_size)))
        while len(chosen) < self.batch_size:
            record = self._hard_negative(aspect, chosen, seen) if self.rng.random() < self.hard else None
            if record is None:
                record = next((r for r in fill if r.input not in seen), None)
                if record is None:
                    break
            seen.add(record.input)
            chosen.append(record)
        question = self.rng.choice(chosen).instruction
        return question, chosen, [self._label(r) for r in chosen]


# --------------------------------------------------------------------------- losses


def contrastive_loss(vectors: torch.Tensor, labels: Sequence[str], temperature: float = 0.05) -> torch.Tensor:
    """Supervised-contrastive loss (Khosla et al., 2020) over L2-normalised ``vectors``.

    Rows with the same label are positives, all other rows negatives; anchors without a positive
    only serve as negatives. Returns 0 (with a graph) when no anchor has a positive.
    """
    z = F.normalize(vectors.float(), dim=-1)
    n = len(labels)
    ids = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    target = torch.tensor([ids[label] for label in labels], device=z.device)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (target[:, None] == target[None, :]) & ~eye
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    has = positives.any(dim=1)
    if not bool(has.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(dim=1) / positives.sum(dim=1).clamp(min=1))
    return per_anchor[has].mean()


class _Runner:
    """Forward passes that return the pooled vector (the encoder's pooling) and the LM loss."""

    def __init__(self, model: torch.nn.Module, kind: str, pad_id: int, n_mask: int, n_tail: int,
                 device: torch.device) -> None:
        self.model = model
        self.kind = kind
        self.pad_id = pad_id
        self.n_mask = n_mask
        self.n_tail = n_tail
        self.device = device
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.backbone = inner.base_model  # LlamaModel / RobertaModel / OPTModel, LoRA layers injected in place
        self.head = inner.get_output_embeddings()
        self.mlm_head = getattr(inner, "lm_head", None) if kind == "masked" else None

    def _pad(self, sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
        return right_pad(sequences, value, self.device)

    def hidden(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self._pad(sequences, self.pad_id)
        mask = self._pad([[1] * len(s) for s in sequences], 0)
        return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def pooled(self, hidden: torch.Tensor, prompt_lengths: Sequence[int]) -> torch.Tensor:
        lengths = torch.tensor(list(prompt_lengths), device=hidden.device)
        n_mask = self.n_mask if self.kind == "masked" else 0
        return pool(hidden, lengths, n_mask, self.n_tail)

    def lm_loss(self, examples: Sequence[Example]) -> torch.Tensor:
        hidden, _ = self.hidden([e.input_ids for e in examples])
        labels = self._pad([e.labels for e in examples], -100)
        if self.kind == "causal":  # position t predicts token t + 1
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        keep = labels != -100
        if not bool(keep.any()):
            return hidden.sum() * 0.0
        states = hidden[keep]  # logits only where there is a label: the vocabulary projection is costly
        head = self.mlm_head if self.kind == "masked" and self.mlm_head is not None else self.head
        logits = head(states).float()
        return F.cross_entropy(logits, labels[keep])

    def vectors(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        hidden, _ = self.hidden(prompts)
        return self.pooled(hidden, [len(p) for p in prompts])


# --------------------------------------------------------------------------- training


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_info(path: str, available: int, used: int, records: Sequence[QARecord]) -> dict[str, Any]:
    known = KNOWN_SOURCES.get(Path(path).name, {
        "provenance": "user-supplied file (see its README for provenance)",
        "licence": "unknown: check before shipping a model trained on it",
    })
    aspects: dict[str, int] = defaultdict(int)
    for record in records:
        if record.source == path and record.aspect:
            aspects[record.aspect] += 1
    return {"path": path, "sha256": _file_sha256(path), "records_in_file": available, "records_used": used,
            **known, **({"aspects": dict(sorted(aspects.items()))} if aspects else {})}


def _select(config: TrainConfig, rng: random.Random) -> tuple[list[QARecord], list[dict[str, Any]]]:
    selected: list[QARecord] = []
    sources = []
    for path in config.data:
        loaded = load_qa_records([path])
        records = [replace(record, source=path) for record in loaded if record.aspect not in config.exclude_aspects]
        limit = config.data_limits.get(path)
        used = rng.sample(records, limit) if limit is not None and limit < len(records) else records
        selected.extend(used)
        sources.append((path, len(loaded), len(used)))
    return selected, [_source_info(p, n, u, selected) for p, n, u in sources]


def _base_reference(base: str) -> str:
    """The base as the adapter should name it: as given, or an absolute path for a relative folder."""
    path = Path(base).expanduser()
    if path.is_dir() and not path.is_absolute():
        return str(path.resolve())
    return base


def _schedule(step: int, total: int, warmup: int, time_fraction: float = 0.0) -> float:
    """Linear warmup, then cosine decay over the steps (or the time budget, if that runs out first)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = max((step - warmup) / max(1, total - warmup), time_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


CHECKPOINT = "checkpoint"  # the resumable state, a folder inside output_dir


def _resume_key(config: TrainConfig, sources: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run: everything but budgets and logging."""
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("resume", "max_seconds", "checkpoint_seconds", "checkpoint_steps", "log_every",
                             "num_threads", "output_dir", "cache_dir", "device")}
    return {"config": settings, "data_sha256": [s["sha256"] for s in sources]}


@dataclass
class _Progress:
    """Where a run stands: enough, with the model and optimiser, to continue it exactly."""

    batch: int = 0  # index of the next micro-batch in the run's fixed batch order
    step: int = 0  # optimiser steps done
    train_seconds: float = 0.0  # time spent in the training loop over every part
    history: list[dict[str, float]] = field(default_factory=list)
    window: dict[str, list[float]] = field(default_factory=dict)
    parts: list[dict[str, Any]] = field(default_factory=list)  # one per process that trained
    timings: dict[str, float] = field(default_factory=lambda: {"lm": 0.0, "contrastive": 0.0, "optimiser": 0.0,
                                                               "checkpoint": 0.0})


def _save_checkpoint(out: Path, params: dict[str, torch.Tensor], optimiser: torch.optim.Optimizer,
                     progress: _Progress, rng: random.Random, key: dict[str, Any]) -> None:
    """Write the resumable state into ``out/checkpoint`` atomically (staged folder, then a rename)."""
    staging = out / f".{CHECKPOINT}.staging"
    if staging.exists():
        for child in staging.iterdir():
            child.unlink()
    staging.mkdir(parents=True, exist_ok=True)
    torch.save({name: t.detach().cpu() for name, t in params.items()}, staging / "weights.pt")
    torch.save({"optimiser": optimiser.state_dict(), "torch_rng": torch.get_rng_state()}, staging / "optimiser.pt")
    state = {"format": "inbedder-index training checkpoint v1", "key": key, "progress": asdict(progress),
             "python_rng": rng.getstate()}
    (staging / "state.json").write_text(json.dumps(state))
    for child in staging.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
    target = out / CHECKPOINT
    old = out / f".{CHECKPOINT}.old"
    if target.exists():
        if old.exists():
            _remove_folder(old)
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        _remove_folder(old)


def _remove_folder(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def _load_checkpoint(out: Path, key: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(weights, optimiser+rng, state) of ``out/checkpoint``, or None if there is none.

    Tensors are read with ``weights_only=True`` (no arbitrary unpickling). A checkpoint of a
    different run (other data, base, or settings) is refused with what differs.
    """
    folder = out / CHECKPOINT
    if not folder.is_dir() and (out / f".{CHECKPOINT}.old").is_dir():
        folder = out / f".{CHECKPOINT}.old"  # killed between the two renames
    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    if state.get("key") != key:
        saved = state.get("key", {})
        differs = sorted(k for k in set(saved.get("config", {})) | set(key["config"])
                         if saved.get("config", {}).get(k) != key["config"].get(k))
        if saved.get("data_sha256") != key["data_sha256"]:
            differs.append("data files' contents")
        raise InBedderError(f"{folder} was written by a different training run (differs: {', '.join(differs)}); "
                            "resume with the same settings and data, or choose a new --output")
    weights = torch.load(folder / "weights.pt", weights_only=True)
    extra = torch.load(folder / "optimiser.pt", weights_only=True)
    return weights, extra, state


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Fine-tune ``config.base_model`` into an InBedder; returns the saved folder.

    LoRA saves an adapter folder whose ``adapter_config.json`` names the base as given (so
    ``InBedder(folder)`` loads it); full fine-tuning saves a model folder with its tokenizer.
    Both hold ``TRAINING.json``: the config, data sources with counts, provenance and licences,
    losses, and the steps and seconds of every part of the run. A checkpoint is written to
    ``output_dir/checkpoint`` every ``checkpoint_seconds``; ``resume=True`` continues from it and
    ends with the same weights as an uninterrupted run (same seed, no time budget).
    """
    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(config, progress)
    finally:  # the caller's process keeps its own thread count
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig, progress: bool) -> Path:
    started = time.time()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = device.type == "cuda" and config.bf16
    out = Path(config.output_dir)

    records, sources = _select(config, rng)
    key = _resume_key(config, sources)
    loaded = load_model(config.base_model, dtype=torch.float32, cache_dir=config.cache_dir)
    model, tokenizer, kind = loaded.model, loaded.tokenizer, loaded.kind
    n_mask = N_MASK if kind == "masked" else 0
    builder = PromptBuilder(tokenizer, max_length=config.max_length, n_mask=n_mask)
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    examples = [build_example(builder, tokenizer, record) for record in records]

    if config.method == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("LoRA training needs peft: pip install 'inbedder-index[train]'") from error
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules, bias="none",
                          task_type="CAUSAL_LM" if kind == "causal" else None)
        model = get_peft_model(model, lora)
    model.to(device).train()
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    n_trainable = sum(p.numel() for p in params)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    runner = _Runner(model, kind, pad_id, n_mask, builder.n_tail, device)

    pool = [r for r in records if config.contrastive_aspects is None or r.aspect in config.contrastive_aspects]
    sampler = _ContrastiveSampler(pool, config.contrastive_batch_size, config.contrastive_per_label,
                                  config.group_emotions, rng, config.hard_negatives) \
        if config.contrastive_weight > 0 else None
    if sampler is not None and not sampler:
        raise TrainingDataError("contrastive_weight > 0 needs aspect-labelled records with repeated answers "
                                "(at least two answers that each have two texts, within one aspect)")

    epoch_batches = math.ceil(len(examples) / config.batch_size)
    total_batches = max(1, round(epoch_batches * config.epochs))
    total_steps = math.ceil(total_batches / config.grad_accum)
    warmup = int(config.warmup_ratio * total_steps)
    batches: list[list[int]] = []
    while len(batches) < total_batches:
        batches.extend(_length_batches(examples, config.batch_size, rng))
    batches = batches[:total_batches]

    state = _Progress()
    checkpoint = _load_checkpoint(out, key) if config.resume else None
    if checkpoint is not None:
        weights, extra, saved = checkpoint
        with torch.no_grad():
            for name, tensor in weights.items():
                named[name].copy_(tensor.to(device))
        optimiser.load_state_dict(extra["optimiser"])
        torch.set_rng_state(extra["torch_rng"])
        version, internal, gauss = saved["python_rng"]
        rng.setstate((version, tuple(internal), gauss))
        state = _Progress(**saved["progress"])
    elif not config.resume and (out / CHECKPOINT).exists():
        raise InBedderError(f"{out / CHECKPOINT} holds an earlier run's checkpoint: pass resume=True "
                            "(--resume) to continue it, or choose a new output folder")
    part = {"from_step": state.step, "resumed": checkpoint is not None, "setup_seconds": round(time.time() - started, 1)}
    state.parts.append(part)

    window: dict[str, list[float]] = defaultdict(list, state.window)
    stopped_early = False
    loop_started = time.time() - state.train_seconds
    last_checkpoint = time.time()
    bar = tqdm(total=total_steps, initial=state.step, desc="training", unit="step", disable=not progress)
    optimiser.zero_grad(set_to_none=True)

    def tick(name: str, since: float) -> float:
        now = time.time()
        state.timings[name] = state.timings.get(name, 0.0) + now - since
        return now

    def checkpoint_now() -> None:
        nonlocal last_checkpoint
        since = time.time()
        state.window = {k: v[-config.log_every:] for k, v in window.items()}
        state.train_seconds = time.time() - loop_started
        part["to_step"], part["seconds"] = state.step, round(time.time() - started, 1)
        _save_checkpoint(out, named, optimiser, state, rng, key)
        last_checkpoint = tick("checkpoint", since)

    for index in range(state.batch, len(batches)):
        batch = batches[index]
        since = time.time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            lm = runner.lm_loss([examples[i] for i in batch])
        (lm / config.grad_accum).backward()
        window["lm"].append(float(lm.detach()))
        since = tick("lm", since)
        last_micro = (index + 1) % config.grad_accum == 0 or index + 1 == len(batches)
        if sampler is not None and last_micro and state.step % config.contrastive_every == 0:
            question, chosen, labels = sampler.sample()
            prompts = [p.ids for p in builder.build_many([r.input for r in chosen], question)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                con = contrastive_loss(runner.vectors(prompts), labels, config.contrastive_temperature)
            (config.contrastive_weight * con).backward()
            window["contrastive"].append(float(con.detach()))
            since = tick("contrastive", since)
        if not last_micro:
            continue
        time_fraction = (time.time() - loop_started) / config.max_seconds if config.max_seconds else 0.0
        scale = _schedule(state.step, total_steps, warmup, time_fraction)
        for group in optimiser.param_groups:
            group["lr"] = config.learning_rate * scale
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        tick("optimiser", since)
        state.step += 1
        state.batch = index + 1
        bar.update(1)
        means = {name: sum(v[-config.log_every:]) / len(v[-config.log_every:]) for name, v in window.items() if v}
        bar.set_postfix({("loss" if k == "lm" else "con"): f"{v:.3f}" for k, v in means.items()})
        if state.step % config.log_every == 0 or state.step == total_steps:
            state.history.append({"step": state.step, **{k: round(v, 4) for k, v in means.items()},
                                  "seconds": round(time.time() - loop_started, 1)})
            window = defaultdict(list, {k: v[-config.log_every:] for k, v in window.items()})
        out_of_time = time_fraction >= 1.0 and state.step < total_steps
        if out_of_time:
            stopped_early = True
            state.history.append({"step": state.step, **{k: round(v, 4) for k, v in means.items()},
                                  "seconds": round(time.time() - loop_started, 1)})
        due = time.time() - last_checkpoint >= config.checkpoint_seconds or (
            config.checkpoint_steps is not None and state.step % config.checkpoint_steps == 0)
        if due or out_of_time or state.step == total_steps:
            out.mkdir(parents=True, exist_ok=True)
            checkpoint_now()
        if out_of_time:
            break
    bar.close()

    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    if config.method == "lora":
        model.save_pretrained(out)
        adapter_file = out / "adapter_config.json"
        adapter = json.loads(adapter_file.read_text())
        adapter["base_model_name_or_path"] = _base_reference(config.base_model)
        adapter_file.write_text(json.dumps(adapter, indent=2))
    else:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    part["to_step"], part["seconds"] = state.step, round(time.time() - started, 1)
    final = state.history[-1] if state.history else {}
    report = {
        "format": "inbedder-index training record v1",
        "objective": "InBedder answer-only LM loss" + (
            f" + {config.contrastive_weight} x supervised-contrastive loss on pooled vectors every "
            f"{config.contrastive_every} step(s) (shared question per batch, temperature "
            f"{config.contrastive_temperature}, {config.hard_negatives:.0%} hard negatives)"
            if config.contrastive_weight > 0 else ""),
        "template": TEMPLATE,
        "prompt_version": PROMPT_VERSION,
        "model_kind": kind,
        "pooling": f"mean of {n_mask} mask slots" if kind == "masked" else "last prompt token, last layer",
        "base_model": config.base_model,
        "config": asdict(config),
        "data": sources,
        "records": len(records),
        "contrastive_groups": sampler.describe() if sampler is not None else None,
        "trainable_parameters": n_trainable,
        "steps": state.step,
        "planned_steps": total_steps,
        "stopped_by_time_budget": stopped_early,
        "epochs_done": round(state.step * config.grad_accum / max(1, epoch_batches), 3),
        "final_losses": {k: v for k, v in final.items() if k in ("lm", "contrastive")},
        "loss_history": state.history,
        "parts": state.parts,
        "seconds_by_kind": {k: round(v, 1) for k, v in state.timings.items()},
        "seconds": round(sum(p.get("seconds", 0.0) for p in state.parts), 1),  # every part, set-up included
        "train_seconds": round(time.time() - loop_started, 1),
        "seconds_per_step": round((time.time() - loop_started) / max(1, state.step), 3),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "TRAINING.json").write_text(json.dumps(report, indent=2))
    return out
