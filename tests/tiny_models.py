"""Tiny random RoBERTa-MLM, OPT and Llama models with tokenizers trained in-process (no hub).

Three tokenizer styles cover the real ones: byte-level BPE with ``<s>``/``</s>`` around a text
(RoBERTa), byte-level BPE with a leading ``</s>`` (OPT), and a sentencepiece-like Metaspace BPE
with a leading ``<s>`` (Llama).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

CORPUS = [
    "### Input:\n", "\n\n### Instruction:\n", "\n\n### Response:",
    "The customer is angry because the parcel never arrived and wants a refund.",
    "I love this phone, the battery lasts two days and the screen is bright.",
    "Heavy rain is expected in Paris tomorrow afternoon with strong winds.",
    "The football match was moved to Sunday because of the storm.",
    "What does the customer want? How does the customer feel? What is the topic?",
    "Where does this happen? Who is speaking? Why is the writer upset?",
    "Stock markets rallied after the central bank kept interest rates unchanged.",
    "Thank you so much for the quick help, my account works again!",
] * 20


def _train(style: str) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if style != "metaspace" else [],
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def make_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """style: 'roberta' (<s> x </s>), 'opt' (</s> x) or 'llama' (<s> x, Metaspace)."""
    tok = _train("metaspace" if style == "llama" else "bytelevel")
    ids = {t: tok.token_to_id(t) for t in ("<s>", "</s>")}
    template = {"roberta": "<s> $A </s>", "opt": "</s> $A", "llama": "<s> $A"}[style]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, i) for t, i in ids.items()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>",
    )


def make_model(style: str, seed: int = 0) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A tiny random model of the given style, in eval mode, with its tokenizer."""
    tokenizer = make_tokenizer(style)
    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        vocab_size=len(tokenizer), num_hidden_layers=2, num_attention_heads=2,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if style == "roberta":
        config = RobertaConfig(hidden_size=32, intermediate_size=64, max_position_embeddings=1100,
                               architectures=["RobertaForMaskedLM"], **common)
        model = RobertaForMaskedLM(config)
    elif style == "opt":
        # word_embed_proj_dim < hidden_size exercises OPT's project_in/project_out (as in opt-350m)
        config = OPTConfig(hidden_size=32, ffn_dim=64, word_embed_proj_dim=16, max_position_embeddings=1100,
                           architectures=["OPTForCausalLM"], **common)
        model = OPTForCausalLM(config)
    else:
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=1,
                             max_position_embeddings=1100, architectures=["LlamaForCausalLM"], **common)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer


def save_tiny(folder: Path, style: str = "llama", seed: int = 0) -> Path:
    """A tiny random model saved as a model folder (what the CLI, a server or a "built-in" loads by path)."""
    model, tokenizer = make_model(style, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def count_forward_calls(encoder: Any) -> list[int]:
    """Wrap ``encoder._forward`` so the returned list grows by the number of prompts each call saw."""
    calls: list[int] = []
    original = encoder._forward

    def counting(prompts: Any, answers: Any) -> Any:
        calls.append(len(prompts))
        return original(prompts, answers)

    encoder._forward = counting
    return calls

