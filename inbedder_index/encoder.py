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

The forward pass runs in a runtime (``runtimes``): ONNX Runtime on a CPU by default, PyTorch on
a GPU or when asked. Everything here is NumPy, and this module imports neither torch nor
transformers: on a CPU, once a model's graph is in the model cache, ``InBedder(name)`` finds it by
the model's fingerprint (``runtimes.sources``) and loads neither. Where the graph is missing, the
model is loaded with PyTorch once, fingerprinted, exported and then dropped, so its weights are in
memory once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .cache import EmbeddingCache, text_hash
from .embedder import check_instructions, check_texts
from .models import DEFAULT_MODEL, Kind, cache_root, resolve_name
from .prompt import PROMPT_VERSION, Prompt, PromptBuilder
from .runtimes import Runtime, choose_runtime, device_type, ort, sources

if TYPE_CHECKING:
    import torch

    from .models import LoadedModel


_ANSWER_TOKENS = 3  # the paper's answers are 1-3 words; a causal answer is a greedy 3-token continuation
_CPU_BATCH_TOKENS = 4096  # padded tokens per batch (measured: +28% padding at 16k vs +15% at 4k on mixed lengths)
_GPU_BATCH_TOKENS = 32768
_PROGRESS_MIN_TEXTS = 256  # show_progress_bar=None shows a bar from this many texts to encode
_TOKENIZER_PROBE = "Tokenizer probe: ### Response: über 42"
_TORCH_NAMES = ("pool", "right_pad", "mask_slots")  # PyTorch helpers training shares (runtimes.pytorch)


def __getattr__(name: str) -> Any:
    """``pool``, ``right_pad`` and ``mask_slots`` (PyTorch) from ``runtimes.pytorch``, imported on first use."""
    if name in _TORCH_NAMES:
        from .runtimes import pytorch

        return getattr(pytorch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _identity(tokenizer: Any, kind: Kind, n_mask: int) -> bytes:
    """What besides the weights decides the vectors: the tokenizer, the pooling, the prompt's version."""
    probe = tokenizer(_TOKENIZER_PROBE, add_special_tokens=True)["input_ids"]
    return json.dumps({
        "tokenizer": list(probe),
        "vocab": len(tokenizer),
        "pooling": f"mask-mean-{n_mask}" if kind == "masked" else "last-token",
        "prompt": PROMPT_VERSION,
    }).encode()


def model_fingerprint(weights: str, tokenizer: Any, kind: Kind, n_mask: int) -> str:
    """A model's identity: its weights' digest, its tokenizer, its pooling and the prompt's version.

    Equal fingerprints give equal vectors; the ONNX graph cache is keyed by it.
    """
    return hashlib.sha256(weights.encode() + _identity(tokenizer, kind, n_mask)).hexdigest()[:32]


def sampled_model_fingerprint(sampled_weights: bytes, tokenizer: Any, kind: Kind, n_mask: int) -> str:
    """The fingerprint releases before the full weights digest recorded (from sampled weights)."""
    return hashlib.sha256(sampled_weights + _identity(tokenizer, kind, n_mask)).hexdigest()[:32]


@dataclass
class _Encoded:
    vectors: np.ndarray  # (n, dim) float32, unnormalised
    answers: list[str] | None


class InBedder:
    """An instruction-following text embedder: ``encode(texts, instruction)``.

    ``model`` is a built-in name (``inbedder_index.list_supported_models()``), a Hugging Face id
    (with ``revision``) or a local folder. ``cache_dir`` is where models are downloaded,
    converted and exported; ``embedding_cache`` (a path or ``EmbeddingCache``) keeps computed
    vectors so that re-encoding an unchanged text is free. ``runtime`` runs the forward pass:
    ``None`` (the default) picks ``"onnx"`` on a CPU where onnxruntime is installed and
    ``"torch"`` elsewhere (a GPU); ``"onnx"`` is ONNX Runtime on the CPU with the model exported
    once per fingerprint into the model cache (``inbedder-index export`` does it ahead of time),
    the same vectors without PyTorch; ``"torch"`` is the model as loaded. ``quantize="int8"``
    (onnx only) runs int8 weights, whose vectors differ, so its fingerprint does too.
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
        runtime: str | None = None,
        quantize: Any = None,
    ) -> None:
        chosen = choose_runtime(runtime, quantize, device, dtype)
        self._load_args: dict[str, Any] | None = {"model": model, "revision": revision, "cache_dir": cache_dir,
                                                  "trust_remote_code": trust_remote_code}
        root = cache_root(cache_dir)
        source = sources.locate(model, revision=revision, cache_dir=cache_dir, n_mask=n_mask)
        known = sources.recall(root, source) if source is not None else None
        options = {"max_length": max_length, "n_mask": n_mask, "batch_size": batch_size,
                   "embedding_cache": embedding_cache, "max_batch_tokens": max_batch_tokens,
                   "instruction_room": instruction_room}
        if chosen == "onnx" and known is not None:
            graph = ort.cached(root, known.fingerprint, known.kind, quantize=quantize)
            if graph is not None:  # the graph is cached: neither torch nor transformers is imported
                self._bind_graph(graph, resolve_name(model), known.fingerprint, **options)
                return
        from .models import load_model
        from .runtimes.pytorch import pick_device, pick_dtype

        torch_device = pick_device(device)
        loaded = load_model(model, revision=revision, dtype=pick_dtype(dtype, torch_device),
                            trust_remote_code=trust_remote_code, cache_dir=cache_dir)
        self._bind_model(loaded, torch_device, runtime=chosen, quantize=quantize, root=root, source=source,
                         known=known, **options)

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
        it runs in PyTorch unless ``runtime="onnx"``, which exports it into ``cache_dir``'s graph cache."""
        from .models import LoadedModel, model_kind
        from .runtimes.pytorch import pick_device

        self = cls.__new__(cls)
        self._load_args = None  # in memory: nothing to reload it from
        chosen = choose_runtime(runtime, quantize, device, next(model.parameters()).dtype)
        loaded = LoadedModel(model.eval(), tokenizer, kind or model_kind(model.config), model_id, None)
        self._bind_model(loaded, pick_device(device), runtime=chosen, quantize=quantize, root=cache_root(cache_dir),
                         source=None, known=None, max_length=max_length, n_mask=n_mask, batch_size=batch_size,
                         embedding_cache=embedding_cache, max_batch_tokens=max_batch_tokens,
                         instruction_room=instruction_room)
        return self

    def _bind_model(self, loaded: LoadedModel, device: torch.device, *, runtime: str, quantize: Any, root: Any,
                    source: sources.Source | None, known: sources.Known | None, **options: Any) -> None:
        """A model loaded in PyTorch: run it there, or export it (once) and run its graph instead."""
        loaded.model.requires_grad_(False)
        self._source, self._root = source, root
        if runtime == "torch":
            from .runtimes.pytorch import TorchRuntime

            self.model = loaded.model.to(device)
            self._bind(TorchRuntime(self.model, loaded.kind, device), loaded.tokenizer, loaded.kind, loaded.model_id,
                       known.fingerprint if known is not None else None, device=str(device),
                       dim=int(self.model.get_input_embeddings().embedding_dim), **options)
            return
        fingerprint = known.fingerprint if known is not None else self._fingerprint_of(loaded, options["n_mask"])

        def export(staging: Any) -> dict[str, Any]:
            from .runtimes.export import export_graph

            return export_graph(loaded.model, loaded.tokenizer, loaded.kind, staging, label=loaded.model_id)

        graph = ort.load(root, fingerprint, loaded.kind, quantize=quantize, export=export)
        self._bind_graph(graph, loaded.model_id, fingerprint, **options)  # the PyTorch copy is dropped here

    def _bind_graph(self, graph: ort.OnnxRuntime, model_id: str, fingerprint: str, **options: Any) -> None:
        self.model = None  # the weights live in the graph alone
        self._bind(graph, graph.tokenizer, graph.kind, model_id, fingerprint, device="cpu", dim=graph.dim, **options)

    def _fingerprint_of(self, loaded: LoadedModel, n_mask: int) -> str:
        """Digest the loaded weights (once per source: remembered beside the model cache)."""
        from .runtimes.pytorch import weights_digest

        fingerprint = model_fingerprint(weights_digest(loaded.model), loaded.tokenizer, loaded.kind, n_mask)
        if self._source is not None:
            sources.remember(self._root, self._source, sources.Known(fingerprint, loaded.kind))
        return fingerprint

    def _bind(
        self,
        runtime: Runtime,
        tokenizer: Any,
        kind: Kind,
        model_id: str,
        fingerprint: str | None,
        *,
        device: str,
        dim: int,
        max_length: int,
        n_mask: int,
        batch_size: int,
        embedding_cache: str | os.PathLike[str] | EmbeddingCache | None,
        max_batch_tokens: int | None,
        instruction_room: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if kind == "masked" and n_mask < 1:
            raise ValueError(f"n_mask must be at least 1 for a masked LM, got {n_mask}")
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.kind: Kind = kind
        self.device = device
        self._dim = dim
        self.batch_size = batch_size
        if max_batch_tokens is None:  # CPUs gain nothing from wide batches, only padding; GPUs want them full
            max_batch_tokens = _CPU_BATCH_TOKENS if device_type(device) == "cpu" else _GPU_BATCH_TOKENS
        self.max_batch_tokens = max(max_batch_tokens, max_length)
        self.max_length = max_length
        self.n_mask = n_mask if kind == "masked" else 0
        self._model_id = model_id
        self._base_fingerprint = fingerprint
        self._fingerprint: str | None = None
        self._earlier: tuple[str, ...] | None = None
        self._pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        self.prompts = PromptBuilder(tokenizer, max_length=max_length, n_mask=self.n_mask,
                                     instruction_room=instruction_room)
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
        return self._dim

    @property
    def fingerprint(self) -> str:
        """A digest of all the weights, the tokenizer and pooling: equal fingerprints give equal vectors.

        Every value of every tensor counts, at bfloat16 precision, so that a float32 and a
        bfloat16 load of the same model agree (``runtimes.pytorch.weights_digest``); it is
        computed once per model source and remembered, so later loads only ``stat`` the files. A
        runtime whose vectors differ (int8 weights) adds what makes them differ, so an index
        built without it refuses it.
        """
        if self._fingerprint is None:
            if self._base_fingerprint is None:  # PyTorch runtime: digested on first use
                from .models import LoadedModel

                loaded = LoadedModel(self.model, self.tokenizer, self.kind, self.model_id, None)
                self._base_fingerprint = self._fingerprint_of(loaded, self.n_mask)
            self._fingerprint = self._tagged(self._base_fingerprint)
        return self._fingerprint

    def earlier_fingerprints(self) -> tuple[str, ...]:
        """This model's fingerprints under earlier releases' schemes: what indexes built by them record.

        Asked for only when an index records a fingerprint other than the current one. It needs
        the weights in PyTorch, so on the ONNX runtime the model is loaded once more for it.
        """
        if self._earlier is None:
            model = self.model
            if model is None and self._load_args is not None:
                from .models import load_model

                model = load_model(**self._load_args).model
            if model is None:  # an in-memory model run as a graph: no earlier release saw it
                self._earlier = ()
            else:
                from .runtimes.pytorch import sampled_weights_stream

                sampled = sampled_model_fingerprint(sampled_weights_stream(model), self.tokenizer, self.kind,
                                                    self.n_mask)
                self._earlier = (self._tagged(sampled),)
        return self._earlier

    def _tagged(self, base: str) -> str:
        """A runtime whose vectors differ (int8 weights) adds what makes them differ."""
        tag = self.runtime.vector_tag
        return base if tag is None else hashlib.sha256(f"{base}|{tag}".encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        quantized = f", quantize={self.runtime.quantize!r}" if self.runtime.quantize else ""
        return (f"InBedder(model={self.model_id!r}, kind={self.kind!r}, dim={self.dim}, device={self.device!r}, "
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
        text_list = [texts] if single else check_texts(texts)  # type: ignore[list-item]
        instructions = check_instructions(instruction)
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
            item: self.embedding_cache.get(self._cache_key, item, list(unique), dim=self.dim,
                                          need_answers=answers)
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

    def _pad(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids and their attention mask: real tokens keep the positions of an unpadded pass."""
        width = max(len(s) for s in sequences)
        ids = np.full((len(sequences), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask

    def _forward(self, prompts: Sequence[Prompt], answers: bool) -> tuple[np.ndarray, list[str] | None]:
        """One forward pass over whole prompts: pooled vectors (float32) and, when asked, answers."""
        ids, mask = self._pad([p.ids for p in prompts])
        lengths = mask.sum(axis=1)
        if self.kind == "masked":  # the mask slots sit before the closing special tokens
            slots = (lengths - self.prompts.n_tail - self.n_mask)[:, None] + np.arange(self.n_mask)[None, :]
            step = self.runtime.forward(ids, mask, slots, tokens=answers)
            texts = self._decode(step.tokens) if step.tokens is not None else None
            return step.states.mean(axis=1, dtype=np.float32), texts
        step = self.runtime.forward(ids, mask, (lengths - 1)[:, None], keep=answers, tokens=answers)
        texts = self._continue(step.tokens[:, 0], step.cache, mask, lengths) if step.tokens is not None else None
        return step.states[:, 0], texts

    def _forward_shared(
        self, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]], answers: bool
    ) -> list[tuple[np.ndarray, list[str] | None]]:
        """Causal LMs: run the prefixes once, then each suffix on top of their cached keys/values."""
        if len(suffixes) == 1:
            return [self._forward([Prompt(list(p), list(suffixes[0])) for p in prefixes], answers)]
        ids, mask = self._pad(prefixes)
        prefix_lengths = mask.sum(axis=1)
        rows = len(prefixes)
        cache = self.runtime.forward(ids, mask, np.zeros((rows, 1), dtype=np.int64), keep=True).cache
        width = ids.shape[1]
        results = []
        for suffix in suffixes:
            tail = np.broadcast_to(np.asarray(suffix, dtype=np.int64), (rows, len(suffix)))
            full_mask = np.concatenate([mask, np.ones((rows, len(suffix)), dtype=np.int64)], axis=1)
            positions = prefix_lengths[:, None] + np.arange(len(suffix))[None, :]
            step = self.runtime.forward(tail, full_mask, np.full((rows, 1), len(suffix) - 1), positions=positions,
                                        past=cache, keep=answers, tokens=answers)
            lengths = prefix_lengths + len(suffix)
            # the continuation sits after the suffix's columns, at each row's own next position
            texts = self._continue(step.tokens[:, 0], step.cache, full_mask, lengths) if answers else None
            cache = self.runtime.crop(cache, width)  # drop the suffix (and answer) tokens again
            results.append((step.states[:, 0], texts))
        return results

    def _continue(self, token: np.ndarray, cache: Any, mask: np.ndarray, lengths: np.ndarray) -> list[str]:
        """Greedy answer of up to ``_ANSWER_TOKENS`` tokens from the first one, continuing each
        right-padded row in place (each at its own next position)."""
        steps = [token]
        eos = self.tokenizer.eos_token_id
        done = token == eos if eos is not None else np.zeros(token.shape, dtype=bool)
        rows = len(token)
        for step in range(1, _ANSWER_TOKENS):
            if bool(done.all()):
                break
            mask = np.concatenate([mask, np.ones((rows, 1), dtype=np.int64)], axis=1)
            out = self.runtime.forward(token[:, None], mask, np.zeros((rows, 1), dtype=np.int64),
                                       positions=(lengths + step - 1)[:, None], past=cache, keep=True, tokens=True)
            cache, token = out.cache, out.tokens[:, 0]  # type: ignore[index]
            steps.append(token)
            if eos is not None:
                done = done | (token == eos)
        return self._decode(np.stack(steps, axis=1), stop=eos)

    def _decode(self, tokens: np.ndarray, stop: int | None = None) -> list[str]:
        decoded = []
        for row in tokens.tolist():
            if stop is not None and stop in row:
                row = row[: row.index(stop)]
            decoded.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return decoded


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
