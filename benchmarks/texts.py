"""Synthetic corpora from templates, deterministic per seed, that tokenise like the real ones:
AG-News-like ``news_texts`` (~40 words, four topics: ``news_topics``), Big-Patent-like
``patent_texts`` (thousands of words: far beyond a 512-token window) and ``mixed_texts`` (mostly
news, some ~150-word digests and patents, shuffled). The word lists and sentence templates are
data, in ``corpora.json``; this module only fills them in."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Slots = Mapping[str, str | list[str]]

_CORPORA = json.loads((Path(__file__).parent / "corpora.json").read_text(encoding="utf-8"))
_POOLS: dict[str, list[str]] = _CORPORA["pools"]  # {NAME} in a template: a fresh draw from the list
_NEWS: dict[str, dict[str, Any]] = _CORPORA["news"]  # per topic: slots (drawn first, in order), headlines, sentences


def cap(text: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case proper nouns)."""
    return text[:1].upper() + text[1:]


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


_SHAPES = {"cap": cap, "title": str.title, "head": lambda s: s.split(" ")[0].title(),
           "tail": lambda s: s.split(" ", 1)[1].title()}


def fill(r: random.Random, template: str, slots: Slots) -> str:
    """``template`` with its fields filled left to right, so that the draws keep their order per seed:
    ``{1-9}`` an integer, ``{a|b}`` one of those, ``{name}`` or ``{name.shape}`` a slot or a fresh draw
    from a list (a slot's or a ``_POOLS`` one)."""

    def field(match: re.Match[str]) -> str:
        key = match.group(1)
        if "|" in key:
            return r.choice(key.split("|"))
        if re.fullmatch(r"\d+-\d+", key):
            low, high = key.split("-")
            return str(r.randint(int(low), int(high)))
        name, _, shape = key.partition(".")
        value = slots[name] if name in slots else _POOLS[name]
        value = r.choice(value) if isinstance(value, list) else value
        return _SHAPES[shape](value) if shape else value

    return re.sub(r"\{([^}]+)\}", field, template)


def _one_news(r: random.Random, topic: str, target_words: int) -> str:
    templates = _NEWS[topic]
    slots: dict[str, str] = {}
    for name, template in templates["slots"].items():
        slots[name] = fill(r, template, slots)
    headline = r.choice([fill(r, template, slots) for template in templates["headlines"]])
    body = [fill(r, template, slots) for template in templates["sentences"]]
    agency = r.choice(_POOLS["AGENCY"])
    r.shuffle(body)
    text = f"{headline} ({agency}) {agency} -"
    words = len(text.split())
    for sentence in body:
        if words >= target_words:
            break
        text += " " + sentence
        words += len(sentence.split())
    return text


def news_topics(n: int, seed: int = 0) -> list[str]:
    """The topic labels of ``news_texts(n, seed)``, in order."""
    r = random.Random(seed)
    return [list(_NEWS)[r.randrange(len(_NEWS))] for _ in range(n)]


def news_texts(n: int, seed: int = 0, words: tuple[int, int] = (15, 50)) -> list[str]:
    """``n`` AG-News-like items (headline, agency, body), each about ``words`` words long (~40 on average)."""
    topics = news_topics(n, seed)
    r = random.Random(seed + 1)
    return [_one_news(r, topic, r.randint(*words)) for topic in topics]


def _one_patent(r: random.Random, target_words: int) -> str:
    """The front matter, paragraphs of shuffled description sentences ({a}, {b}: two parts; {REF}: any
    part) until ``target_words``, then the claims."""
    subject = r.choice(_CORPORA["patent_subjects"])
    title, parts = subject["title"], subject["parts"]
    refs = [f"the {part} {100 + 2 * i + 2 * r.randint(0, 3)}" for i, part in enumerate(parts)]
    slots: dict[str, str | list[str]] = {
        **subject, "PART": parts, "REF": refs,
        "parts": ", ".join(article(p) for p in parts[:-1]) + f" and {article(parts[-1])}"}
    front = (fill(r, template, slots) for template in _CORPORA["patent_front"])
    paragraphs = [title.split(" ", 1)[1].upper(), *front]
    words = sum(len(p.split()) for p in paragraphs)
    figure = 1
    while words < target_words:
        a, b = r.sample(range(len(parts)), 2)
        sentences = [fill(r, template, {**slots, "a": refs[a], "b": refs[b], "figure": str(figure)})
                     for template in _CORPORA["patent_sentences"]]
        r.shuffle(sentences)
        paragraphs.append(" ".join(sentences[: r.randint(3, 6)]))
        words += len(paragraphs[-1].split())
        figure += r.random() < 0.3
    claim = "; ".join(fill(r, f"{article(p)} that {{VERB}} the {{PART}}", slots) for p in parts)
    paragraphs += ["CLAIMS", f"1. {cap(title)} comprising: {claim}"
                   + fill(r, f", wherein the {parts[0]} is configured to {{PURPOSE}}.", slots)]
    dependent = "The {device} of claim 1, wherein the {PART} is formed of {MATERIAL}."
    paragraphs += [f"{number}. " + fill(r, dependent, slots) for number in range(2, r.randint(4, 8))]
    return "\n\n".join(paragraphs)


def patent_texts(n: int, seed: int = 0, words: tuple[int, int] = (1500, 4000)) -> list[str]:
    """``n`` Big-Patent-like descriptions of ``words`` words (thousands: far beyond a 512-token window)."""
    r = random.Random(seed + 7919)
    return [_one_patent(r, r.randint(*words)) for _ in range(n)]


def mixed_texts(n: int, seed: int = 0, medium_fraction: float = 0.1, long_fraction: float = 0.03) -> list[str]:
    """Mostly ~40-word news, ``medium_fraction`` longer news stories (~100-200 words, several items run
    together as in a digest) and ``long_fraction`` patent descriptions (thousands of words), shuffled."""
    r = random.Random(seed + 104729)
    n_long = round(n * long_fraction)
    n_medium = round(n * medium_fraction)
    short = news_texts(n - n_long - n_medium, seed)
    medium_parts = news_texts(4 * n_medium, seed + 1, words=(35, 60))
    medium = [" ".join(medium_parts[4 * i : 4 * i + r.randint(2, 4)]) for i in range(n_medium)]
    texts = short + medium + patent_texts(n_long, seed)
    r.shuffle(texts)
    return texts


INSTRUCTIONS = [
    "What is the topic of this text?",
    "What is the sentiment of this text?",
    "Which organisation is mentioned in this text?",
    "Where does this happen?",
]
