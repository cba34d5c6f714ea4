"""``InBedder``: texts under an instruction -> vectors. The only module that runs the language model.

Pooling follows the architecture:
- causal LM: the last layer's hidden state at the last prompt token (the state from which the
  model would start its answer). One forward pass, no ``generate()``: the reference code's
  generation of three tokens only to read the first step's state is wasted work.
- masked LM: the mean of the last layer's hidden states at ``n_mask`` mask tokens placed right
  after ``### Response:`` (where the answer would be written).

Batches are sorted by length and padded on the right, so every real token keeps the position
it has in an unpadded pass (no position-id bookkeeping for the vectors; the optional answer
decoding continues each row at its own position with explicit position ids).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import EmbeddingCache, text_hash
from .models import DEFAULT_MODEL, Kind, LoadedModel, load_model, model_kind
from .prompt import PROMPT_VERSION, Prompt, PromptBuilder
from .runtimes import Runtime, check_options, load_runtime

logger = logging.getLogger(__name__)

_ANSWER_TOKENS = 3  # the paper's answers are 1-3 words; a causal answer is a greedy 3-token continuation
_CPU_BATCH_TOKENS = 4096  # padded tokens per batch (measured: +28% padding at 16k vs +15% at 4k on mixed lengths)
_GPU_BATCH_TOKENS = 32768
_PROGRESS_MIN_TEXTS = 256  # show_progress_bar=None shows a bar from this many texts to encode


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (bytes, Mapping)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, not str")
    return list(texts)


def _check_instructions(instruction: str | Sequence[str]) -> list[str]:
    if not isinstance(instruction, (str, Sequence)) or isinstance(instruction, bytes):
        raise TypeError(f"instruction must be a string or a list of strings, got {type(instruction).__name__}; "
                        "InBedder needs a question to answer, e.g. 'What is the topic of this text?'")
    items = [instruction] if isinstance(instruction, str) else list(instruction)
    if not items:
        raise ValueError("instruction list is empty; give at least one instruction")
    for position, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"instruction[{position}] is {type(item).__name__}, not str")
        if not item.strip():
            raise ValueError("instruction is empty or blank; InBedder needs a question to answer, "
                             "e.g. 'What is the topic of this text?'")
    return list(dict.fromkeys(items))


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest first, each group within ``batch_size`` texts and ``max_batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and (len(current) >= batch_size or width * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def right_pad(sequences: Sequence[Sequence[int]], value: int, device: torch.device) -> torch.Tensor:
    """Sequences as one right-padded tensor: real tokens keep the positions of an unpadded pass."""
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out.to(device)


def mask_slots(lengths: torch.Tensor, n_mask: int, n_tail: int) -> torch.Tensor:
    """(batch, n_mask) positions of the mask tokens, which sit before ``n_tail`` closing tokens."""
    first = lengths - n_tail - n_mask
    return first[:, None] + torch.arange(n_mask, device=lengths.device)[None, :]


def pool(hidden: torch.Tensor, lengths: torch.Tensor, n_mask: int, n_tail: int) -> torch.Tensor:
    """InBedder's pooling of a right-padded batch (float32): the mean at the mask slots (masked
    LMs, ``n_mask`` > 0) or the last prompt token (causal LMs). Training pools with this too."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if n_mask:
        return hidden[rows[:, None], mask_slots(lengths, n_mask, n_tail)].float().mean(dim=1)
    return hidden[rows, lengths - 1].float()


@dataclass
class _Encoded:
    vectors: np.ndarray  # (n, dim) float32, unnormalised
    answers: list[str] | None


class InBedder:
    """An instruction-following text embedder: ``encode(texts, instruction)``.

    ``model`` is a built-in name (``inbedder_index.list_supported_models()``), a Hugging Face id
    (with ``revision``) or a local folder. ``cache_dir`` is where models are downloaded or
    converted; ``embedding_cache`` (a path or ``EmbeddingCache``) keeps computed vectors so that
    re-encoding an unchanged text is free. ``runtime`` runs the forward pass: ``"torch"`` (the
    model as loaded) or ``"onnx"`` (ONNX Runtime on the CPU, exported once into the model cache,
    same vectors); ``quantize="int8"`` (onnx only) runs int8 weights, whose vectors differ, so
    its fingerprint does too.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 512,
        n_mask: int = 3,
        batch_size: int = 32,
        trust_remote_code: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        embedding_cache: str | os.PathLike[str] | EmbeddingCache | None = None,
        max_batch_tokens: int | None = None,
        instruction_room: int = 64,
        runtime: str = "torch",
        quantize: Any = None,
    ) -> None:
        torch_device = _pick_device(device)
        torch_dtype = _pick_dtype(dtype, torch_device)
        check_options(runtime, quantize, torch_device, torch_dtype)
        loaded = load_model(model, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                            cache_dir=cache_dir)
        self._bind(loaded, torch_device, max_length=max_length, n_mask=n_mask, batch_size=batch_size,
                   embedding_cache=embedding_cache, max_batch_tokens=max_batch_tokens,
                   instruction_room=instruction_room, runtime=runtime, quantize=quantize, cache_dir=cache_dir)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        model_id: str = "in-memory",
        kind: Kind | None = None,
        device: str | torch.device | None = None,
        max_length: int = 512,
        n_mask: int = 3,
        batch_size: int = 32,
        embedding_cache: str | os.PathLike[str] | EmbeddingCache | None = None,
        max_batch_tokens: int | None = None,
        instruction_room: int = 64,
        runtime: str = "torch",
        quantize: Any = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> InBedder:
        """Wrap a model already in memory (a fine-tuned one, or a test model built from a config);
        ``cache_dir`` is where ``runtime="onnx"`` keeps its exported graph."""
        self = cls.__new__(cls)
        torch_device = _pick_device(device)
        check_options(runtime, quantize, torch_device, next(model.parameters()).dtype)
        loaded = LoadedModel(model.eval(), tokenizer, kind or model_kind(model.config), model_id, None)
        self._bind(loaded, torch_device, max_length=max_length, n_mask=n_mask, batch_size=batch_size,
                   embedding_cache=embedding_cache, max_batch_tokens=max_batch_tokens,
                   instruction_room=instruction_room, runtime=runtime, quantize=quantize, cache_dir=cache_dir)
        return self

    def _bind(
        self,
        loaded: LoadedModel,
        device: torch.device,
        *,
        max_length: int,
        n_mask: int,
        batch_size: int,
        embedding_cache: str | os.PathLike[str] | EmbeddingCache | None,
        max_batch_tokens: int | None,
        instruction_room: int,
        runtime: str,
        quantize: Any,
        cache_dir: str | os.PathLike[str] | None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if loaded.kind == "masked" and n_mask < 1:
            raise ValueError(f"n_mask must be at least 1 for a masked LM, got {n_mask}")
        self.model = loaded.model.to(device)
        self.model.requires_grad_(False)
        self.tokenizer = loaded.tokenizer
        self.kind: Kind = loaded.kind
        self.device = device
        self.batch_size = batch_size
        if max_batch_tokens is None:  # CPUs gain nothing from wide batches, only padding; GPUs want them full
            max_batch_tokens = _CPU_BATCH_TOKENS if device.type == "cpu" else _GPU_BATCH_TOKENS
        self.max_batch_tokens = max(max_batch_tokens, max_length)
        self.max_length = max_length
        self.n_mask = n_mask if loaded.kind == "masked" else 0
        self._model_id = loaded.model_id
        self._pad_id = next(
            (t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if t is not None), 0
        )
        self.prompts = PromptBuilder(self.tokenizer, max_length=max_length, n_mask=self.n_mask,
                                     instruction_room=instruction_room)
        self._fingerprint: str | None = None
        self._weights_digest: str | None = None
        self.runtime: Runtime = load_runtime(runtime, self.model, self.kind, quantize=quantize, cache_dir=cache_dir,
                                             fingerprint=self._weights_fingerprint() if runtime != "torch" else "")
        if embedding_cache is None or isinstance(embedding_cache, EmbeddingCache):
            self.embedding_cache = embedding_cache
        else:
            self.embedding_cache = EmbeddingCache(embedding_cache)

    # ----------------------------------------------------------------- identity

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def fingerprint(self) -> str:
        """A stable digest of the weights, tokenizer and pooling: equal fingerprints give equal vectors.

        Weights are sampled (a fixed spread of values from every tensor, rounded to bfloat16 so
        that a float32 and a bfloat16 load of the same model agree), which catches any training
        or revision change at a fraction of hashing whole files. A runtime whose vectors differ
        (int8 weights) adds what makes them differ, so an index built without it refuses it.
        """
        if self._fingerprint is None:
            tag = self.runtime.vector_tag
            base = self._weights_fingerprint()
            self._fingerprint = base if tag is None else hashlib.sha256(f"{base}|{tag}".encode()).hexdigest()[:32]
        return self._fingerprint

    def _weights_fingerprint(self) -> str:
        """The fingerprint of the model itself (what the ONNX graph cache is keyed by)."""
        if self._weights_digest is None:
            digest = hashlib.sha256()
            with torch.no_grad():
                for name, tensor in sorted(self.model.state_dict().items()):
                    flat = tensor.detach().reshape(-1)
                    if flat.numel() == 0 or not flat.is_floating_point():
                        continue
                    count = min(flat.numel(), 64)
                    picks = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
                    sample = flat[picks].to(torch.bfloat16).float().cpu().numpy()
                    digest.update(name.encode())
                    digest.update(sample.tobytes())
            probe = self.tokenizer("Tokenizer probe: ### Response: über 42", add_special_tokens=True)["input_ids"]
            digest.update(json.dumps({
                "tokenizer": list(probe),
                "vocab": len(self.tokenizer),
                "pooling": f"mask-mean-{self.n_mask}" if self.kind == "masked" else "last-token",
                "prompt": PROMPT_VERSION,
            }).encode())
            self._weights_digest = digest.hexdigest()[:32]
        return self._weights_digest

    def __repr__(self) -> str:
        quantized = f", quantize={self.runtime.quantize!r}" if self.runtime.quantize else ""
        return (f"InBedder(model={self.model_id!r}, kind={self.kind!r}, dim={self.dim}, device={str(self.device)!r}, "
                f"runtime={self.runtime.name!r}{quantized})")

    # ----------------------------------------------------------------- encoding

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | Sequence[str],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress_bar: bool | None = None,
        return_answers: bool = False,
    ) -> Any:
        """Embed ``texts`` under ``instruction``.

        Returns a float32 array ``(len(texts), dim)`` in input order (1-D for a single string),
        or ``(vectors, answers)`` with ``return_answers=True``, where ``answers[i]`` is the
        model's short answer for text ``i``. With a list of instructions, a dict
        ``instruction -> result``. Empty strings are valid texts (the model still answers the
        question about an empty input); an empty list gives a ``(0, dim)`` array.
        """
        single = isinstance(texts, str)
        text_list = [texts] if single else _check_texts(texts)  # type: ignore[list-item]
        instructions = _check_instructions(instruction)
        size = batch_size or self.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {size}")
        encoded = self._encode_cached(text_list, instructions, size, show_progress_bar, return_answers)
        results: dict[str, Any] = {}
        for item, result in encoded.items():
            vectors = _normalise(result.vectors) if normalize else result.vectors
            if single:
                results[item] = (vectors[0], result.answers[0]) if return_answers else vectors[0]
            else:
                results[item] = (vectors, result.answers) if return_answers else vectors
        return results if not isinstance(instruction, str) else results[instruction]

    def _encode_cached(
        self, texts: list[str], instructions: list[str], batch_size: int, progress: bool | None, answers: bool
    ) -> dict[str, _Encoded]:
        """Encode the unique texts the embedding cache lacks under any instruction; assemble in input order."""
        hashes = [text_hash(text) for text in texts]
        unique = dict(zip(hashes, texts))
        found: dict[str, dict[str, tuple[np.ndarray, str | None]]] = {
            item: self.embedding_cache.get(self._cache_key, item, list(unique), need_answers=answers)
            if self.embedding_cache is not None else {}
            for item in instructions
        }
        todo = [digest for digest in unique if any(digest not in found[item] for item in instructions)]
        if todo:
            fresh = self._encode_texts([unique[d] for d in todo], instructions, batch_size, progress, answers)
            for item, result in fresh.items():
                missing = [row for row, digest in enumerate(todo) if digest not in found[item]]
                if self.embedding_cache is not None and missing:
                    self.embedding_cache.put(
                        self._cache_key, item, [todo[row] for row in missing], result.vectors[missing],
                        [result.answers[row] for row in missing] if result.answers else None,
                    )
                for row, digest in enumerate(todo):
                    found[item][digest] = (result.vectors[row], result.answers[row] if result.answers else None)
        assembled = {}
        for item in instructions:
            vectors = np.empty((len(texts), self.dim), dtype=np.float32)
            for row, digest in enumerate(hashes):
                vectors[row] = found[item][digest][0]
            assembled[item] = _Encoded(vectors, [found[item][d][1] or "" for d in hashes] if answers else None)
        return assembled

    @property
    def _cache_key(self) -> str:
        return f"{self.fingerprint}:L{self.max_length}:R{self.prompts.instruction_room}"

    def _encode_texts(
        self, texts: list[str], instructions: list[str], batch_size: int, progress: bool | None, answers: bool
    ) -> dict[str, _Encoded]:
        """Encode every text under every instruction.

        Causal LMs share work: instructions whose prompts keep the same input tokens (all of
        them, unless an instruction is longer than ``instruction_room``) form one group, and
        each batch of texts runs its input part once; every instruction then only costs its
        short suffix on top of the cached keys/values. Masked LMs attend both ways, so the
        input's states depend on the instruction and each instruction is its own pass.
        """
        groups: dict[int | str, list[str]] = {}  # causal: by input budget; masked: one per instruction
        for item in instructions:
            groups.setdefault(self.prompts.input_budget(item) if self.kind == "causal" else item, []).append(item)
        input_ids = self.prompts.input_ids(texts)
        out = {item: _Encoded(np.empty((len(texts), self.dim), dtype=np.float32), [""] * len(texts) if answers else None)
               for item in instructions}
        show = len(texts) * len(instructions) >= _PROGRESS_MIN_TEXTS if progress is None else progress
        with tqdm(total=len(texts) * len(instructions), desc="encoding", unit="text", disable=not show) as bar:
            for members in groups.values():
                budget = self.prompts.input_budget(members[0])  # the same for every member of a group
                prefixes = [self.prompts.prefix(ids, budget) for ids in input_ids]
                suffixes = [self.prompts.suffix(item) for item in members]
                widest = max(len(s) for s in suffixes)
                lengths = [len(p) + widest for p in prefixes]
                for batch in plan_batches(lengths, batch_size, self.max_batch_tokens):
                    batch_prefixes = [prefixes[i] for i in batch]
                    if self.kind == "causal":
                        pooled = self._forward_shared(batch_prefixes, suffixes, answers)
                    else:
                        pooled = [self._forward([Prompt(p, suffixes[0]) for p in batch_prefixes], answers)]
                    for item, (vectors, batch_answers) in zip(members, pooled):
                        out[item].vectors[batch] = vectors
                        for i, answer in zip(batch, batch_answers or []):
                            out[item].answers[i] = answer  # type: ignore[index]
                        bar.update(len(batch))
        return out

    def _pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and their attention mask."""
        ids = right_pad(sequences, self._pad_id, self.device)
        return ids, right_pad([[1] * len(s) for s in sequences], 0, self.device)

    @torch.inference_mode()
    def _forward(self, prompts: Sequence[Prompt], answers: bool) -> tuple[np.ndarray, list[str] | None]:
        """One forward pass over whole prompts: pooled vectors (float32) and, when asked, answers."""
        ids, mask = self._pad([p.ids for p in prompts])
        lengths = mask.sum(dim=1)
        if self.kind == "masked":
            if answers:  # the MLM head is needed anyway: one full PyTorch pass gives both
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                hidden, logits = out.hidden_states[-1], out.logits
            else:
                hidden, logits = self.runtime.forward(ids, mask)[0], None
            pooled = pool(hidden, lengths, self.n_mask, self.prompts.n_tail)
            texts = None
            if logits is not None:
                rows = torch.arange(len(prompts), device=self.device)[:, None]
                texts = self._decode(logits[rows, mask_slots(lengths, self.n_mask, self.prompts.n_tail)].argmax(-1))
            return pooled.cpu().numpy(), texts
        hidden, cache = self.runtime.forward(ids, mask, keep=answers)
        last = pool(hidden, lengths, 0, 0)
        texts = self._continue(last, cache, mask, lengths) if answers else None
        return last.cpu().numpy(), texts

    @torch.inference_mode()
    def _forward_shared(
        self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]], answers: bool
    ) -> list[tuple[np.ndarray, list[str] | None]]:
        """Causal LMs: run the prefixes once, then each suffix on top of their cached keys/values."""
        if len(suffixes) == 1:
            return [self._forward([Prompt(list(p), list(suffixes[0])) for p in prefixes], answers)]
        ids, mask = self._pad(prefixes)
        prefix_lengths = mask.sum(dim=1)
        cache = self.runtime.forward(ids, mask, keep=True)[1]
        width = ids.shape[1]
        rows = torch.arange(len(prefixes), device=self.device)
        results = []
        for suffix in suffixes:
            tail = torch.tensor(suffix, dtype=torch.long, device=self.device).expand(len(prefixes), -1)
            full_mask = torch.cat([mask, torch.ones_like(tail)], dim=1)
            positions = prefix_lengths[:, None] + torch.arange(len(suffix), device=self.device)[None, :]
            hidden, extended = self.runtime.forward(tail, full_mask, positions=positions, past=cache, keep=answers)
            last = hidden[rows, -1]
            lengths = prefix_lengths + len(suffix)
            # the continuation sits after the suffix's columns, at each row's own next position
            texts = self._continue(last, extended, full_mask, lengths) if answers else None
            cache = self.runtime.crop(cache, width)  # drop the suffix (and answer) tokens again
            results.append((last.float().cpu().numpy(), texts))
        return results

    def _continue(self, last: torch.Tensor, cache: Any, mask: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Greedy answer of up to ``_ANSWER_TOKENS`` tokens, continuing each right-padded row in place."""
        head = self.model.get_output_embeddings()
        token = head(last).argmax(-1)
        steps = [token]
        eos = self.tokenizer.eos_token_id
        done = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
        for step in range(1, _ANSWER_TOKENS):
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            hidden, cache = self.runtime.forward(token[:, None], mask, positions=(lengths + step - 1)[:, None],
                                                 past=cache, keep=True)
            token = head(hidden[:, -1]).argmax(-1)
            steps.append(token)
            if eos is not None:
                done = done | (token == eos)
        return self._decode(torch.stack(steps, dim=1), stop=eos)

    def _decode(self, tokens: torch.Tensor, stop: int | None = None) -> list[str]:
        decoded = []
        for row in tokens.tolist():
            if stop is not None and stop in row:
                row = row[: row.index(stop)]
            decoded.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return decoded


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
