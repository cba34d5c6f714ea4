"""The model's tokenizer without transformers: its ``tokenizer.json`` run by the ``tokenizers`` package.

A Hugging Face fast tokenizer is a thin Python shell around a ``tokenizers.Tokenizer``: calling it
encodes with the backend (truncation and padding off unless asked), and ``decode`` decodes with
the backend and, for some tokenizers, tidies spaces before punctuation. ``TokenizerSpec`` records
what the shell adds (special ids, whether special tokens in the text are split, whether decoding
tidies spaces) when a graph is exported, so ``FastTokenizer`` gives the same ids and the same
answers as the shell it was saved from, and ONNX Runtime encoding never imports transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerSpec:
    """What a Hugging Face tokenizer adds to its backend, as plain values (stored with the graph)."""

    pad_token_id: int | None
    eos_token_id: int | None
    mask_token_id: int | None
    vocab_size: int  # len(tokenizer): the backend's vocabulary with its added tokens
    split_special_tokens: bool  # special tokens written in a text are split like any text
    clean_up_spaces: bool  # decode tidies " ." -> "." (transformers' clean_up_tokenization)

    @classmethod
    def from_hf(cls, tokenizer: Any) -> TokenizerSpec:
        backend = tokenizer.backend_tokenizer
        clean = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        if clean and type(backend.model).__name__ == "BPE":  # transformers skips the tidy-up for BPE ...
            clean = bool(getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
                                 False))  # ... unless forced
        return cls(tokenizer.pad_token_id, tokenizer.eos_token_id, getattr(tokenizer, "mask_token_id", None),
                   len(tokenizer), bool(getattr(tokenizer, "split_special_tokens", False)), clean)

    @classmethod
    def from_record(cls, record: Any) -> TokenizerSpec:
        """From a graph record's ``tokenizer`` field; ``ValueError`` when it is not one."""
        if not isinstance(record, dict) or set(record) != set(cls.__dataclass_fields__):
            raise ValueError("the tokenizer settings are missing or incomplete")
        ids = ("pad_token_id", "eos_token_id", "mask_token_id")
        if any(record[k] is not None and (type(record[k]) is not int or record[k] < 0) for k in ids) \
                or type(record["vocab_size"]) is not int or record["vocab_size"] < 1 \
                or any(type(record[k]) is not bool for k in ("split_special_tokens", "clean_up_spaces")):
            raise ValueError("the tokenizer settings have values of the wrong type")
        return cls(**record)

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def save_tokenizer(tokenizer: Any, folder: Path) -> TokenizerSpec:
    """Write a Hugging Face fast tokenizer's backend into ``folder`` and return what it adds."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer, which ONNX Runtime encoding "
                         "needs; use runtime='torch' for this model")
    (folder / TOKENIZER_FILE).write_text(backend.to_str())
    return TokenizerSpec.from_hf(tokenizer)


def _clean_up(text: str) -> str:
    """transformers' ``clean_up_tokenization``."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class FastTokenizer:
    """The part of a Hugging Face tokenizer's interface that prompts and answers use."""

    def __init__(self, folder: Path, spec: TokenizerSpec) -> None:
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._backend.no_truncation()
        self._backend.no_padding()
        self._backend.encode_special_tokens = spec.split_special_tokens
        self.spec = spec
        self.pad_token_id = spec.pad_token_id
        self.eos_token_id = spec.eos_token_id
        self.mask_token_id = spec.mask_token_id

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        """``{"input_ids": ...}`` for one text (a list of ids) or several (a list of lists)."""
        if isinstance(text, str):
            return {"input_ids": self._backend.encode(text, add_special_tokens=add_special_tokens).ids}
        encodings = self._backend.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [encoding.ids for encoding in encodings]}

    def __len__(self) -> int:
        return self.spec.vocab_size

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up(text) if self.spec.clean_up_spaces else text
