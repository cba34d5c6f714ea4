"""InBedder's prompt, as token ids.

A prompt is ``### Input:\\n{input}\\n\\n### Instruction:\\n{instruction}\\n\\n### Response:``.
It is tokenised in two parts, the *input part* (``### Input:\\n{input}``) and the
*instruction part* (the rest), and the ids are concatenated. Tokenising the parts apart
makes the input part's ids independent of the instruction, which is what lets one key/value
cache of the input serve every instruction (see ``encoder``) and lets training and encoding
agree token for token.

Truncation is on the left of the input part, so the instruction and ``### Response:`` always
survive. The input part gets ``max_length`` minus the room kept for the instruction, where the
room is ``max(instruction_room, length of this instruction)``: a text keeps the same tokens
under every instruction that fits the room, so its vectors do not depend on which other
instructions it is encoded with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

TEMPLATE = "### Input:\n{input}\n\n### Instruction:\n{instruction}\n\n### Response:"
INPUT_PART = "### Input:\n{input}"
INSTRUCTION_PART = "\n\n### Instruction:\n{instruction}\n\n### Response:"
# Bumped whenever the token ids a (text, instruction) pair maps to change; part of a model's fingerprint.
PROMPT_VERSION = "inbedder-v1-split"


def format_prompt(text: str, instruction: str) -> str:
    """The prompt as one string (for display and for the reference procedure)."""
    return TEMPLATE.format(input=text, instruction=instruction)


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. ``<s>`` / ``</s>``)."""
    probe = "Hello world"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    return [], []


@dataclass
class Prompt:
    """One prompt as ids: ``prefix`` depends on the text only, ``suffix`` on the instruction only."""

    prefix: list[int]
    suffix: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prefix + self.suffix

    def __len__(self) -> int:
        return len(self.prefix) + len(self.suffix)


@dataclass
class PromptBuilder:
    """Builds InBedder prompts as token ids for one tokenizer and pooling rule.

    ``n_mask`` > 0 builds masked-LM prompts: ``n_mask`` mask tokens follow ``### Response:``
    and the tokenizer's closing special token (``</s>``, ``[SEP]``) ends the sequence.
    ``n_mask`` == 0 builds causal-LM prompts that end on ``### Response:``'s last token.
    """

    tokenizer: Any
    max_length: int = 512
    n_mask: int = 0
    instruction_room: int = 64
    _head: list[int] = field(init=False, repr=False)
    _tail: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")
        head, tail = _special_affixes(self.tokenizer)
        self._head = head
        if self.n_mask:
            mask_id = getattr(self.tokenizer, "mask_token_id", None)
            if mask_id is None:
                raise ValueError("a masked-LM InBedder needs a tokenizer with a mask token")
            self._tail = [mask_id] * self.n_mask + tail
        else:
            self._tail = []  # a causal prompt must end on its last real token: no EOS
        self.instruction_room = min(self.instruction_room, self.max_length // 2)
        self._instruction_ids = lru_cache(maxsize=256)(self._tokenize_instruction)

    def input_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The untruncated input parts, tokenised in one batched call."""
        parts = [INPUT_PART.format(input=text) for text in texts]
        return list(self.tokenizer(parts, add_special_tokens=False)["input_ids"]) if parts else []

    def _tokenize_instruction(self, instruction: str) -> tuple[int, ...]:
        part = INSTRUCTION_PART.format(instruction=instruction)
        return tuple(self.tokenizer(part, add_special_tokens=False)["input_ids"])

    def input_budget(self, instruction: str) -> int:
        """How many input-part tokens fit beside this instruction."""
        n_instruction = len(self._instruction_ids(instruction))
        room = max(self.instruction_room, n_instruction)
        budget = self.max_length - len(self._head) - room - len(self._tail)
        if budget < 1:
            raise ValueError(
                f"the instruction {instruction[:60]!r} is {n_instruction} tokens, which leaves no room "
                f"for the text within max_length={self.max_length}; shorten it or raise max_length"
            )
        return budget

    def prefix(self, input_ids: Sequence[int], budget: int) -> list[int]:
        """Special head tokens + an input part's ids, left-truncated to ``budget`` tokens."""
        return self._head + list(input_ids[-budget:])

    def suffix(self, instruction: str) -> list[int]:
        """The instruction part + (masked LMs) the mask slots and closing special token."""
        return list(self._instruction_ids(instruction)) + self._tail

    def build(self, text: str, instruction: str) -> Prompt:
        return self.build_many([text], instruction)[0]

    def build_many(self, texts: Sequence[str], instruction: str) -> list[Prompt]:
        budget = self.input_budget(instruction)
        suffix = self.suffix(instruction)
        return [Prompt(self.prefix(ids, budget), suffix) for ids in self.input_ids(texts)]

    @property
    def n_tail(self) -> int:
        """Tokens after the mask slots (masked LMs) that pooling must skip."""
        return len(self._tail) - self.n_mask
