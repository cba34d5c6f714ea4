"""Shared helpers for the benchmark scripts: machine info, timing, JSON results, realistic texts.

Texts are generated, not downloaded (the benchmarks run offline), from templates with enough
vocabulary and structure to tokenise like the real corpora:

- ``news_texts``: short AG-News-like items, ``"Headline (Agency) Agency - body"``, about
  40 words, in four topics (world, sports, business, sci/tech); ``news_topics`` gives the labels.
- ``patent_texts``: long Big-Patent-like descriptions (title, technical field, background,
  summary, detailed description with reference numerals, claims), thousands of words each.
- ``mixed_texts``: mostly news with a share of medium and long (patent) texts.

Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

logger = logging.getLogger("benchmarks")


# --------------------------------------------------------------------------- setup


def setup_logging(verbose: bool = False) -> None:
    """Progress goes to stderr through logging; figures are printed to stdout by each script."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:  # generate() warns about unused sampling flags of the model's generation config
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first paragraph as description, the common flags added."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    return parser


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as the benchmark's PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for checking that the script works")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    parser.add_argument("-v", "--verbose", action="store_true")


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")) -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in have]
    except OSError:
        pass
    return []


def machine_info(device: Any = "cpu") -> dict[str, Any]:
    """What a figure was measured on: CPU, cores, threads, library versions, device."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# --------------------------------------------------------------------------- timing


def sync(device: Any = "cpu") -> None:
    """Wait for queued GPU work so that wall-clock timings are honest (a no-op on the CPU)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: Any = "cpu") -> tuple[float, Any]:
    """Seconds one call takes (device-synchronised) and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def summarise(seconds: Sequence[float]) -> dict[str, Any]:
    return {
        "best_s": min(seconds),
        "median_s": statistics.median(seconds),
        "all_s": [round(s, 4) for s in seconds],
    }


# --------------------------------------------------------------------------- results


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def save_results(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``<directory>/<name>.json`` atomically (a ``.tmp`` file, then a rename)."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    body = {"benchmark": name, "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    body.update(_jsonable(payload))
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-300)


# --------------------------------------------------------------------------- texts: news


def cap(text: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case proper nouns)."""
    return text[:1].upper() + text[1:]


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun

_COUNTRIES = ["France", "Germany", "Japan", "Brazil", "India", "Kenya", "Canada", "Mexico", "Egypt", "Australia",
              "South Korea", "Nigeria", "Indonesia", "Turkey", "Argentina", "Poland", "Vietnam", "Chile", "Ukraine",
              "Pakistan", "Spain", "Italy", "Ethiopia", "Peru", "the Philippines"]
_CITIES = ["Paris", "Berlin", "Tokyo", "Sao Paulo", "New Delhi", "Nairobi", "Ottawa", "Mexico City", "Cairo",
           "Sydney", "Seoul", "Lagos", "Jakarta", "Ankara", "Buenos Aires", "Warsaw", "Hanoi", "Santiago", "Kyiv",
           "Islamabad", "Madrid", "Rome", "Addis Ababa", "Lima", "Manila", "Geneva", "Brussels", "Washington"]
_AGENCIES = ["Reuters", "AP", "AFP", "Canadian Press", "Bloomberg"]
_OFFICIALS = ["the prime minister", "the foreign minister", "the president", "opposition leaders",
              "the defence ministry", "a government spokesman", "the interior minister", "election officials",
              "the UN envoy", "senior diplomats"]
_WORLD_ISSUES = ["a border dispute", "ceasefire talks", "a disputed election", "refugee flows", "a new trade pact",
                 "nuclear inspections", "flood relief", "a corruption inquiry", "drought aid",
                 "a hostage crisis", "constitutional reform", "peace negotiations"]
_TEAMS = ["Manchester United", "Real Madrid", "the Boston Red Sox", "the New York Yankees", "Bayern Munich",
          "the Los Angeles Lakers", "Juventus", "the Chicago Bears", "Arsenal", "the Toronto Maple Leafs",
          "Barcelona", "the Green Bay Packers", "Liverpool", "the San Antonio Spurs", "AC Milan"]
_ATHLETES = ["Roger Federer", "Serena Williams", "Michael Phelps", "Tiger Woods", "Lance Armstrong",
             "Paula Radcliffe", "Andy Roddick", "Thierry Henry", "Yao Ming", "Jana Novotna", "Ichiro Suzuki",
             "Kelly Holmes", "Shaquille O'Neal", "Marat Safin", "Ian Thorpe"]
_EVENTS = ["the Olympic final", "the Champions League", "the US Open", "the World Series", "the Tour de France",
           "the playoffs", "the season opener", "the Ryder Cup", "the Davis Cup semifinal", "the title race"]
_COMPANIES = ["Oracle", "PeopleSoft", "General Motors", "Delta Air Lines", "Wal-Mart", "Citigroup", "Boeing",
              "Sony", "Nokia", "Pfizer", "ExxonMobil", "Kmart", "Sears", "Merck", "Intel", "Google", "Yahoo",
              "Vodafone", "Airbus", "Toyota", "Unilever", "Siemens"]
_MARKET_THINGS = ["crude oil prices", "the dollar", "Treasury yields", "the Nasdaq", "the Dow Jones industrial average",
                  "the euro", "gold futures", "Asian stocks", "bond prices", "retail sales", "jobless claims",
                  "consumer confidence"]
_TECH_THINGS = ["a new search engine", "a faster microprocessor", "an open-source browser", "a Mars rover",
                "a space telescope", "a flat-panel display", "a music download service", "a broadband network",
                "a genome sequencing method", "a spam filter", "a handheld game console", "a wireless standard",
                "a hybrid car battery", "an antivirus update", "a climate model", "a fuel cell"]
_SCIENCE_BODIES = ["NASA", "the European Space Agency", "Microsoft", "IBM", "Apple", "researchers at MIT",
                   "scientists in Britain", "astronomers", "a team of biologists", "Linux developers",
                   "Sun Microsystems", "Intel engineers"]
_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve", "15", "20", "30"]
_DAYS = ["on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "over the weekend", "late on Sunday",
         "early on Saturday", "this week", "yesterday"]


def _news_world(r: random.Random) -> tuple[str, list[str]]:
    country, city, official, issue = r.choice(_COUNTRIES), r.choice(_CITIES), r.choice(_OFFICIALS), r.choice(_WORLD_ISSUES)
    headline = r.choice([
        f"{country} Vows to Press Ahead With {issue.split(' ', 1)[1].title()}",
        f"Talks on {issue.split(' ', 1)[1].title()} Stall in {city}",
        f"{country} Recalls Envoy Amid Row Over {issue.split(' ', 1)[1].title()}",
        f"Thousands Rally in {city} as Tensions Rise",
        f"UN Urges Calm After Clashes in {country}",
    ])
    body = [
        (f"{cap(official)} of {country} said {r.choice(_DAYS)} that {issue} would top the agenda when "
        f"regional leaders meet in {city} next month."),
        (f"At least {r.choice(_NUMBERS)} people were killed and dozens wounded when fighting broke out near the "
        f"capital, {r.choice(['police', 'witnesses', 'hospital officials', 'aid workers'])} said."),
        (f"The talks, which have dragged on for {r.choice(_NUMBERS)} months, are seen as a test of whether "
        f"{country} can rebuild ties with its neighbours."),
        f"Critics accused the government of using {issue} to distract voters from a slowing economy and rising prices.",
        (f"Diplomats in {r.choice(_CITIES)} said a compromise was possible but warned that both sides were under "
        f"pressure from hardliners at home."),
        f"{cap(official)} rejected calls for an international inquiry, saying the matter was an internal affair.",
    ]
    return headline, body


def _news_sports(r: random.Random) -> tuple[str, list[str]]:
    team, other, athlete, event = r.choice(_TEAMS), r.choice(_TEAMS), r.choice(_ATHLETES), r.choice(_EVENTS)
    score = f"{r.randint(1, 9)}-{r.randint(0, 8)}"
    headline = r.choice([
        f"{team} Beat {other} {score}",
        f"{athlete} Cruises Into Quarterfinals",
        f"{athlete} Out of {event.replace('the ', '').title()} With Injury",
        f"{team} Clinch Spot in {event.replace('the ', '').title()}",
        f"Late Goal Lifts {team} Past {other}",
    ])
    body = [
        (f"{athlete} overcame a slow start to win in straight sets {r.choice(_DAYS)}, setting up a meeting with the "
        f"defending champion in {event}."),
        (f"{team} scored twice in the final {r.choice(_NUMBERS)} minutes to beat {other} {score} and move "
        f"{r.choice(['two', 'three', 'five'])} points clear at the top of the table."),
        "The coach said the team had shown real character after losing its captain to a hamstring injury in the first half.",
        (f"{other} have now lost {r.choice(_NUMBERS)} of their last eleven games and face a difficult trip "
        f"to {r.choice(_CITIES)} next week."),
        (f"A crowd of more than {r.randint(20, 90)},000 watched as the home side dominated possession but struggled "
        f"to create clear chances."),
        f"{athlete}, who missed most of last season, said the win was the most satisfying of a long career.",
    ]
    return headline, body


def _news_business(r: random.Random) -> tuple[str, list[str]]:
    company, other, thing = r.choice(_COMPANIES), r.choice(_COMPANIES), r.choice(_MARKET_THINGS)
    pct = f"{r.randint(1, 19)}.{r.randint(0, 9)} percent"
    headline = r.choice([
        f"{company} Profit Rises {pct.replace(' percent', '%')} on Strong Demand",
        f"{company} Raises Bid for {other}",
        f"Stocks Fall as {thing.title()} Climb",
        f"{company} to Cut {r.randint(2, 15)},000 Jobs",
        f"{thing.title()} Steady Ahead of Fed Meeting",
    ])
    body = [
        (f"{company} said {r.choice(_DAYS)} that quarterly profit rose {pct}, beating Wall Street forecasts as "
        f"sales in Asia offset weak demand at home."),
        (f"Shares of {company} fell {r.randint(1, 9)} percent in early trading after the company cut its outlook for "
        f"the full year, citing higher fuel and raw material costs."),
        (f"{cap(thing)} rose for a {r.choice(['second', 'third', 'fourth'])} straight session as investors "
        f"weighed fresh data on inflation and consumer spending."),
        (f"Analysts said the {r.randint(2, 40)} billion dollar offer for {other} signalled a new wave of consolidation "
        f"in the industry."),
        "The Federal Reserve is widely expected to raise interest rates by a quarter point at its meeting next week.",
        (f"Executives told analysts on a conference call that cost cuts would save about {r.randint(100, 900)} "
        f"million dollars a year by 2006."),
    ]
    return headline, body


def _news_scitech(r: random.Random) -> tuple[str, list[str]]:
    body_name, thing, company = r.choice(_SCIENCE_BODIES), r.choice(_TECH_THINGS), r.choice(_COMPANIES)
    headline = r.choice([
        f"{body_name.split(' ')[0].title()} Unveils {thing.split(' ', 1)[1].title()}",
        f"Scientists Test {thing.split(' ', 1)[1].title()}",
        "Hackers Target Flaw in Popular Software",
        f"{company} Bets on {thing.split(' ', 1)[1].title()}",
        "Probe Sends Back First Images of Saturn Moon",
    ])
    body = [
        (f"{cap(body_name)} on {r.choice(['Monday', 'Tuesday', 'Thursday'])} unveiled {thing} that it says "
        f"will be {r.choice(_NUMBERS)} times faster than anything on the market."),
        ("The software, released as a free download, fixes a security hole that could let attackers take control of a "
        "computer through a specially crafted web page."),
        (f"Researchers said the results, published in the journal {r.choice(['Nature', 'Science', 'Cell'])}, could "
        f"help explain how the early solar system formed."),
        f"Analysts expect {thing} to reach stores before the holiday season, though pricing has not been announced.",
        (f"The spacecraft, launched {r.choice(_NUMBERS)} years ago, is expected to send data back to Earth until the "
        f"end of the decade."),
        "Privacy groups warned that the technology could be used to track users without their knowledge.",
    ]
    return headline, body


_NEWS_TOPICS: dict[str, Callable[[random.Random], tuple[str, list[str]]]] = {
    "world": _news_world,
    "sports": _news_sports,
    "business": _news_business,
    "sci_tech": _news_scitech,
}


def _one_news(r: random.Random, topic: str, target_words: int) -> str:
    headline, body = _NEWS_TOPICS[topic](r)
    agency = r.choice(_AGENCIES)
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
    return [list(_NEWS_TOPICS)[r.randrange(len(_NEWS_TOPICS))] for _ in range(n)]


def news_texts(n: int, seed: int = 0, words: tuple[int, int] = (15, 50)) -> list[str]:
    """``n`` AG-News-like items (headline, agency, body), each about ``words`` words long (~40 on average)."""
    topics = news_topics(n, seed)
    r = random.Random(seed + 1)
    return [_one_news(r, topic, r.randint(*words)) for topic in topics]


# --------------------------------------------------------------------------- texts: patents

_PATENT_SUBJECTS = [
    ("a battery thermal management system", "battery pack", ["cell module", "coolant channel", "temperature sensor",
     "pump", "heat exchanger", "controller", "valve", "housing"], "electric vehicles"),
    ("a wearable heart-rate monitor", "wearable device", ["optical sensor", "light-emitting diode", "photodiode",
     "processor", "strap", "battery", "wireless transceiver", "display"], "physiological monitoring"),
    ("a variable-pitch wind turbine blade", "rotor blade", ["root section", "pitch bearing", "actuator", "spar cap",
     "trailing edge", "load sensor", "hub", "control unit"], "wind energy conversion"),
    ("a method of compressing neural network weights", "compression engine", ["weight matrix", "codebook",
     "quantisation unit", "memory buffer", "decoder", "scheduler", "cache", "accelerator"], "machine learning hardware"),
    ("a self-cleaning water filter", "filter assembly", ["filter cartridge", "inlet port", "outlet port",
     "backwash valve", "pressure sensor", "motor", "brush", "drain"], "water treatment"),
    ("an adjustable ergonomic office chair", "chair", ["seat pan", "backrest", "lumbar support", "gas spring",
     "tilt mechanism", "armrest", "base", "locking lever"], "furniture"),
]

_PATENT_VERBS = ["is coupled to", "is disposed adjacent to", "is in fluid communication with", "is mounted on",
                 "is electrically connected to", "is configured to cooperate with", "extends through",
                 "is received within", "is rotatably supported by", "is integrally formed with"]
_PATENT_PURPOSES = ["reduce energy consumption", "improve reliability", "lower manufacturing cost",
                    "increase accuracy", "extend service life", "simplify assembly", "reduce noise",
                    "improve user comfort", "prevent overheating", "minimise maintenance"]
_PATENT_MATERIALS = ["aluminium alloy", "stainless steel", "polycarbonate", "glass-fibre reinforced polymer",
                     "silicone rubber", "carbon fibre composite", "copper", "ceramic"]


def _one_patent(r: random.Random, target_words: int) -> str:
    title, device, parts, field_name = r.choice(_PATENT_SUBJECTS)
    numerals = {part: 100 + 2 * i + 2 * r.randint(0, 3) for i, part in enumerate(parts)}

    def ref(part: str) -> str:
        return f"the {part} {numerals[part]}"

    paragraphs = [
        title.upper().replace("A ", "", 1).replace("AN ", "", 1),
        "TECHNICAL FIELD",
        (f"The present disclosure relates generally to {field_name}, and more particularly to {title} and methods "
        f"of operating the same."),
        "BACKGROUND",
        (f"Conventional {device}s suffer from several drawbacks. In particular, known designs fail to "
        f"{r.choice(_PATENT_PURPOSES)} under varying operating conditions, and they require frequent adjustment by "
        f"trained personnel. Attempts to address these problems have generally increased the complexity and cost of "
        f"the {device}. There is therefore a need for an improved {device} that overcomes these limitations."),
        "SUMMARY",
        (f"According to one aspect, there is provided {title} comprising {', '.join(article(p) for p in parts[:-1])} and "
        f"{article(parts[-1])}. The arrangement makes it possible to {r.choice(_PATENT_PURPOSES)} and to "
        f"{r.choice(_PATENT_PURPOSES)} without additional components."),
        "DETAILED DESCRIPTION",
    ]
    words = sum(len(p.split()) for p in paragraphs)
    figure = 1
    while words < target_words:
        a, b = r.sample(parts, 2)
        sentences = [
            f"Referring now to FIG. {figure}, {ref(a)} {r.choice(_PATENT_VERBS)} {ref(b)}.",
            (f"In some embodiments, {ref(a)} is formed of {r.choice(_PATENT_MATERIALS)}, although other materials "
            f"may be used without departing from the scope of the disclosure."),
            (f"{cap(ref(b))} may be configured to {r.choice(_PATENT_PURPOSES)}, for example by adjusting an "
            f"operating parameter in response to a signal received from {ref(r.choice(parts))}."),
            (f"As shown in FIG. {figure}, a gap of between {r.randint(1, 5)} and {r.randint(6, 20)} millimetres may be "
            f"provided between {ref(a)} and {ref(b)}."),
            (f"It will be appreciated that {ref(a)} and {ref(b)} may be arranged in other configurations, and that the "
            f"illustrated embodiment is provided by way of example only."),
            (f"In operation, {ref(r.choice(parts))} {r.choice(_PATENT_VERBS)} {ref(r.choice(parts))} such that the "
            f"{device} can {r.choice(_PATENT_PURPOSES)}."),
        ]
        r.shuffle(sentences)
        paragraph = " ".join(sentences[: r.randint(3, 6)])
        paragraphs.append(paragraph)
        words += len(paragraph.split())
        figure += r.random() < 0.3
    paragraphs.append("CLAIMS")
    claim = (f"1. {title[0].upper() + title[1:]} comprising: "
             + "; ".join(f"{article(p)} that {r.choice(_PATENT_VERBS)} the {r.choice(parts)}" for p in parts)
             + f", wherein the {parts[0]} is configured to {r.choice(_PATENT_PURPOSES)}.")
    paragraphs.append(claim)
    for number in range(2, r.randint(4, 8)):
        paragraphs.append(f"{number}. The {device} of claim 1, wherein the {r.choice(parts)} is formed of "
                          f"{r.choice(_PATENT_MATERIALS)}.")
    return "\n\n".join(paragraphs)


def patent_texts(n: int, seed: int = 0, words: tuple[int, int] = (1500, 4000)) -> list[str]:
    """``n`` Big-Patent-like descriptions of ``words`` words (thousands: far beyond a 512-token window)."""
    r = random.Random(seed + 7919)
    return [_one_patent(r, r.randint(*words)) for _ in range(n)]


# --------------------------------------------------------------------------- texts: mixed


def mixed_texts(n: int, seed: int = 0, medium_fraction: float = 0.1, long_fraction: float = 0.03) -> list[str]:
    """Mostly ~40-word news, ``medium_fraction`` longer news stories (~100-200 words, several items run
    together as in a digest) and ``long_fraction`` patent descriptions (thousands of words), shuffled."""
    r = random.Random(seed + 104729)
    n_long = round(n * long_fraction)
    n_medium = round(n * medium_fraction)
    n_short = n - n_long - n_medium
    short = news_texts(n_short, seed)
    medium_parts = news_texts(4 * n_medium, seed + 1, words=(35, 60))
    medium = [" ".join(medium_parts[4 * i : 4 * i + r.randint(2, 4)]) for i in range(n_medium)]
    long = patent_texts(n_long, seed)
    texts = short + medium + long
    r.shuffle(texts)
    return texts


INSTRUCTIONS = [
    "What is the topic of this text?",
    "What is the sentiment of this text?",
    "Which organisation is mentioned in this text?",
    "Where does this happen?",
]


# --------------------------------------------------------------------------- memory probes


def _status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size since start or since the last ``reset_peak()`` (VmHWM)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, never reset
    return kib * 1024


def peak_rss_of(pid: int) -> int | None:
    """Peak resident set size of another live process (a server under test), or None."""
    kib = _status_kib("VmHWM", pid)
    return None if kib is None else kib * 1024


def rss_bytes() -> int:
    """Current resident set size (VmRSS); the peak where the kernel does not say."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def run_in_child(script: str, spec: dict[str, Any], out: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script --child SPEC --child-out OUT`` in a fresh process (so its peak memory is its own)
    and return the JSON it wrote."""
    command = [sys.executable, str(Path(script).resolve()), "--child", json.dumps(spec), "--child-out", str(out)]
    subprocess.run(command, check=True, env=env)
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- encoding procedures side by side
#
# encode_speed.py and latency.py time the same procedures on the same model, texts and token ids:
# the published reference procedure, InBedder.encode on each runtime, and sentence-transformers
# with last-token pooling over the pre-formatted prompts (what a user would reach for instead).


def sorted_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted longest first, cut into consecutive chunks of ``batch_size`` (as the reference does)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str, device: Any) -> tuple[Any, Any]:
    """Ids and attention mask, padded on ``side`` ("left" or "right")."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def reference_encode(enc: Any, texts: Sequence[str], instruction: str, batch_size: int) -> np.ndarray:
    """The published procedure over ``texts`` (input order out), fed ``enc``'s prompt ids.

    Causal (InBedder's ``CausalLMEncoder``): length-sorted batches padded on the LEFT through
    ``generate(max_new_tokens=3, output_hidden_states=True)``; the vector is the first step's last
    layer at the last position. Masked (``MaskedLMEncoder``): the full MLM forward with every
    layer's states and all logits; the mean of the last layer at the mask slots.
    """
    import torch

    prompts = [p.ids for p in enc.prompts.build_many(list(texts), instruction)]
    vectors = np.empty((len(prompts), enc.dim), dtype=np.float32)
    with torch.inference_mode():
        for chunk in sorted_chunks([len(p) for p in prompts], batch_size):
            batch = [prompts[i] for i in chunk]
            if enc.kind == "masked":
                ids, mask = pad_batch(batch, enc._pad_id, "right", enc.device)
                out = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, return_dict=True)
                slots = (ids == enc.tokenizer.mask_token_id).to(out.hidden_states[-1].dtype)[:, :, None]
                pooled = (out.hidden_states[-1] * slots).sum(dim=1) / slots.sum(dim=1)
            else:
                ids, mask = pad_batch(batch, enc._pad_id, "left", enc.device)
                out = enc.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                                         output_hidden_states=True, return_dict_in_generate=True,
                                         pad_token_id=enc._pad_id)
                pooled = out.hidden_states[0][-1][:, -1, :]
            vectors[chunk] = pooled.float().cpu().numpy()
    return vectors


def sentence_transformers_lasttoken(enc: Any, folder: Path) -> Any:
    """sentence-transformers over ``enc``'s model (saved into ``folder``) with last-token pooling:
    the plain route to a decoder embedding. None when sentence-transformers is not installed."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Pooling, Transformer
    except ImportError:
        logger.warning("sentence-transformers is not installed: its last-token route is left out")
        return None
    if not (folder / "config.json").exists():
        enc.model.save_pretrained(folder)
        enc.tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=enc.max_length)
    pooling = Pooling(transformer.get_word_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling], device=str(enc.device))


def sentence_transformers_encode(model: Any, texts: Sequence[str], instruction: str, batch_size: int) -> np.ndarray:
    """What a sentence-transformers user would run: the InBedder prompt as a string, last-token pooled."""
    from inbedder_index.prompt import format_prompt

    return model.encode([format_prompt(text, instruction) for text in texts], batch_size=batch_size,
                        convert_to_numpy=True, show_progress_bar=False)


class FlopModel:
    """Forward-pass FLOPs of a transformer on real tokens: 2 x matmul parameters per token (the
    backbone's 2-D weights, embeddings excluded) plus attention (QK^T and AV, 4 x layers x width
    per query-key pair; causal models see the keys before them, masked ones all of them)."""

    def __init__(self, enc: Any) -> None:
        config = enc.model.config
        heads = config.num_attention_heads
        self.causal = enc.kind == "causal"
        self.n_layers = int(config.num_hidden_layers)
        self.attn_width = int(heads * (getattr(config, "head_dim", None) or config.hidden_size // heads))
        self.matmul_params = int(sum(p.numel() for name, p in enc.model.base_model.named_parameters()
                                     if p.dim() == 2 and "embed" not in name))
        head = enc.model.get_output_embeddings()
        self.head_params = int(head.weight.numel()) if head is not None else 0  # LM head: per generated position

    def forward(self, new: int, context: int = 0) -> float:
        """``new`` tokens after ``context`` cached ones."""
        pairs = new * context + (new * (new + 1) / 2 if self.causal else new * new)
        return 2.0 * self.matmul_params * new + 4.0 * self.n_layers * self.attn_width * pairs

    def prompts(self, lengths: Sequence[int]) -> float:
        return sum(self.forward(n) for n in lengths)


def matmul_peak_gflops(device: Any = "cpu", dtype: Any = None, size: int | None = None, repeats: int = 3) -> float:
    """The machine's practical peak: GFLOP/s of a large matmul (fp32 2048^2 on the CPU threads torch
    uses; bf16 8192^2 on a GPU), best of ``repeats`` after a warm-up."""
    import torch

    cuda = str(device).startswith("cuda")
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    size = size or (8192 if cuda else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = min(time_call(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def side_by_side(procedures: dict[str, Callable[[], Any]], rounds: int, device: Any = "cpu",
                 peak: Callable[[], float] | None = None) -> tuple[dict[str, list[float]], dict[str, Any], list[float]]:
    """Each procedure once per round, in an order rotated every round (so none always runs first
    or after the same neighbour on a shared machine), ``peak()`` once per round beside them, one
    untimed warm-up call each first. Returns seconds per round, each procedure's last output, and
    the peak readings: take medians."""
    for fn in procedures.values():
        fn()
    names = list(procedures)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    peaks: list[float] = []
    for number in range(rounds):
        order = names[number % len(names):] + names[: number % len(names)]
        for name in order:
            elapsed, outputs[name] = time_call(procedures[name], device)
            seconds[name].append(elapsed)
        if peak is not None:
            peaks.append(peak())
        logger.info("round %d/%d: %s", number + 1, rounds,
                    ", ".join(f"{name} {seconds[name][-1]:.2f} s" for name in names))
    return seconds, outputs, peaks


def compare_procedures(encoders: dict[str, Any], texts: list[str], instruction: str, batch_size: int, rounds: int,
                       st_model: Any = None) -> dict[str, Any]:
    """The reference, ``encode`` on each of ``encoders`` (label -> InBedder; "torch" is the one the
    others are compared with) and, when given, sentence-transformers, side by side on ``texts``:
    medians over ``rounds``, speed against the reference, cosine to InBedder's vectors, and the
    fraction of the fp32 (GPU: bf16) matmul peak measured in the same rounds.

    Every procedure is credited with the same useful FLOPs, the prompts' forward pass
    (``FlopModel``), so its fraction of peak is proportional to its speed.
    """
    base = encoders["torch"]
    procedures: dict[str, Callable[[], Any]] = {
        "reference": lambda: reference_encode(base, texts, instruction, batch_size)}
    for label, enc in encoders.items():
        procedures[label] = lambda enc=enc: enc.encode(texts, instruction, batch_size=batch_size, show_progress_bar=False)
    if st_model is not None:
        procedures["st-lasttoken"] = lambda: sentence_transformers_encode(st_model, texts, instruction, batch_size)
    load = [os.getloadavg()[0]]
    seconds, outputs, peaks = side_by_side(procedures, rounds, base.device,
                                           peak=lambda: matmul_peak_gflops(base.device))
    load.append(os.getloadavg()[0])
    lengths = [len(p) for p in base.prompts.build_many(texts, instruction)]
    flops = FlopModel(base).prompts(lengths)
    peak = statistics.median(peaks)
    reference_s = statistics.median(seconds["reference"])
    rows: dict[str, dict[str, Any]] = {}
    for name, runs in seconds.items():
        median_s = statistics.median(runs)
        cosines = cosine_rows(outputs[name], outputs["torch"])
        rows[name] = {
            "median_s": median_s, "all_s": [round(s, 4) for s in runs], "texts_per_s": len(texts) / median_s,
            "tokens_per_s": sum(lengths) / median_s, "gflops": flops / median_s / 1e9,
            "fraction_of_peak": flops / median_s / 1e9 / peak, "vs_reference": reference_s / median_s,
            "min_cosine_to_inbedder": float(cosines.min()), "mean_cosine_to_inbedder": float(cosines.mean()),
        }
    return {
        "n_texts": len(texts), "instruction": instruction, "batch_size": batch_size, "rounds": rounds,
        "tokens": {"prompt_total": int(sum(lengths)), "prompt_mean": float(np.mean(lengths)),
                   "prompt_max": int(max(lengths)), "truncated": int(sum(n >= base.max_length for n in lengths))},
        "useful_gflop": flops / 1e9, "peak_gflops": peak, "peak_all_gflops": [round(p, 1) for p in peaks],
        "peak_kind": f"{'bf16 8192' if base.device.type == 'cuda' else 'fp32 2048'}^2 matmul, "
                     f"{'GPU' if base.device.type == 'cuda' else f'{_torch_threads()} CPU threads'}",
        "procedures": rows, "load_average_1m": {"min": min(load), "max": max(load)},
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def print_comparison(title: str, result: dict[str, Any]) -> None:
    tok = result["tokens"]
    print(f"\n== {title}: {result['n_texts']} texts, prompt tokens mean {tok['prompt_mean']:.0f} / max "
          f"{tok['prompt_max']} ({tok['truncated']} truncated), batch {result['batch_size']}, median of "
          f"{result['rounds']} interleaved rounds; peak {result['peak_gflops']:.0f} GFLOP/s ({result['peak_kind']}); "
          f"load average {result['load_average_1m']['min']:.1f}-{result['load_average_1m']['max']:.1f}")
    print(f"   {'procedure':<14}{'texts/s':>9}{'median s':>10}{'x ref':>7}{'tokens/s':>10}{'GFLOP/s':>9}"
          f"{'% peak':>8}{'min cos':>10}{'mean cos':>10}")
    for name, row in result["procedures"].items():
        print(f"   {name:<14}{row['texts_per_s']:>9.2f}{row['median_s']:>10.2f}{row['vs_reference']:>7.2f}"
              f"{row['tokens_per_s']:>10.0f}{row['gflops']:>9.1f}{100 * row['fraction_of_peak']:>7.1f}%"
              f"{row['min_cosine_to_inbedder']:>10.4f}{row['mean_cosine_to_inbedder']:>10.4f}")


def plot_comparison(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """One panel per setting: texts/s of each procedure, annotated with its speed-up and cosine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items()):
        rows = result["procedures"]
        names = list(rows)
        ax.bar(names, [rows[n]["texts_per_s"] for n in names], color=[f"C{i}" for i in range(len(names))])
        for i, name in enumerate(names):
            ax.annotate(f"{rows[name]['vs_reference']:.2f}x\ncos {rows[name]['min_cosine_to_inbedder']:.3f}",
                        (i, rows[name]["texts_per_s"]), ha="center", va="bottom", fontsize=7)
        ax.set_ylabel("texts/s (median)")
        ax.set_title(f"{label}: {result['n_texts']} texts, ~{result['tokens']['prompt_mean']:.0f} tokens", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        ax.margins(y=0.25)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def runtime_encoders(base: Any, runtimes: Sequence[str]) -> dict[str, Any]:
    """``base`` (a torch InBedder) as "torch", plus the same loaded model on each of ``runtimes``
    ("onnx", "onnx-int8"): one model in memory, the settings of ``base``."""
    from inbedder_index import InBedder

    encoders = {"torch": base}
    for label in runtimes:
        runtime, _, quantize = label.partition("-")
        encoders[label] = InBedder.from_model(
            base.model, base.tokenizer, model_id=base.model_id, kind=base.kind, device=base.device,
            max_length=base.max_length, n_mask=base.n_mask or 3, batch_size=base.batch_size,
            max_batch_tokens=base.max_batch_tokens, instruction_room=base.prompts.instruction_room,
            runtime=runtime, quantize=quantize or None)
    return encoders
