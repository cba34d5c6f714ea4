"""The evaluation sets bundled in ``inbedder_index/data/eval`` (see its README), grouped in suites.

- ``project``: the project's own sets (feel/want triplets and robustness, topic/place clustering,
  review STS); their aspects are kinds the training data asks about.
- ``fresh``: two-aspect sets on trained kinds, written later in other styles and domains.
- ``heldout``: two-aspect sets whose first aspect is a kind no training data asks about
  (``HELD_OUT_KINDS``); the leave-aspects-out score comes from these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from .datasets import load_task, read_rows, save_task
from .tasks import ClusteringRecord, RobustnessTask, Task, TripletRecord, TripletTask, pair_triplets

FEEL_WANT_INSTRUCTIONS = {
    "feeling": "How does the customer feel?",
    "want": "What does the customer want?",
}
FEEL_WANT_PARAPHRASES = {
    "feeling": {
        "correct": [
            "How does the customer feel?",
            "What emotion is the customer expressing?",
            "Describe the customer's emotional state.",
        ],
        "implicit": [
            "What is the mood here?",
            "What's the vibe of this message?",
            "How is this person doing right now?",
        ],
        "incorrect": [
            "What product is mentioned?",
            "What language is this message written in?",
            "How long is this message?",
        ],
    },
    "want": {
        "correct": [
            "What does the customer want?",
            "What is the customer asking the company to do?",
            "What request is the customer making?",
        ],
        "implicit": [
            "What would resolve this?",
            "What should support do next?",
            "Where is this conversation heading?",
        ],
        "incorrect": [
            "What product is mentioned?",
            "What time of day was this written?",
            "Is this message formal or casual?",
        ],
    },
}

_BUILTIN_SETS = {
    "feel-want-triplets": "triplet",
    "topic-place-clustering": "clustering",
    "feel-want-robustness": "robustness",
    "review-sts": "sts",
}
_FEEL_WANT_MESSAGES = "feel-want-messages.jsonl"
SUITES = ("project", "fresh", "heldout")


def build_feel_want_triplets(messages: Sequence[Mapping[str, str]], *, per_anchor: int = 3) -> list[TripletRecord]:
    """Mirrored feeling/want triplets (``pair_triplets``) over the id-sorted message pool."""
    pool = [ClusteringRecord(m["text"], {"feeling": m["feeling"], "want": m["want"]})
            for m in sorted(messages, key=lambda message: message["id"])]
    return pair_triplets(pool, FEEL_WANT_INSTRUCTIONS, per_anchor=per_anchor)


def write_feel_want_sets(directory: str | Path) -> None:
    """Regenerate ``feel-want-triplets.jsonl`` and ``feel-want-robustness.jsonl`` from the message
    pool ``feel-want-messages.jsonl`` in ``directory`` (the bundled files were made this way)."""
    directory = Path(directory)
    messages = [row for _, row in read_rows(directory / _FEEL_WANT_MESSAGES)]
    triplets = TripletTask(build_feel_want_triplets(messages), "feel-want-triplets")
    save_task(triplets, directory / "feel-want-triplets.jsonl")
    robustness = RobustnessTask(triplets, FEEL_WANT_PARAPHRASES, "feel-want-robustness")
    save_task(robustness, directory / "feel-want-robustness.jsonl")


@contextmanager
def _bundled(filename: str) -> Iterator[Path]:
    """A real path to a file of ``inbedder_index/data/eval`` (extracted if the package is zipped)."""
    with resources.as_file(resources.files("inbedder_index") / "data" / "eval" / filename) as path:
        yield path


def feel_want_messages() -> list[dict[str, str]]:
    """The labelled message pool behind the feel/want triplets (id, text, feeling, want)."""
    with _bundled(_FEEL_WANT_MESSAGES) as path:
        return [row for _, row in read_rows(path)]


def builtin_eval_sets() -> dict[str, Task]:
    """The project's bundled evaluation sets, by name (the ``project`` suite)."""
    sets: dict[str, Task] = {}
    for name, kind in _BUILTIN_SETS.items():
        with _bundled(f"{name}.jsonl") as path:
            sets[name] = load_task(path, kind, name=name)
    return sets


def suite_tasks(suites: Iterable[str] = SUITES) -> dict[str, Task]:
    """The tasks of the named suites (``SUITES``; "all" for every one), by name."""
    suites = list(suites)
    unknown = sorted(set(suites) - {*SUITES, "all"})
    if unknown:
        raise ValueError(f"unknown evaluation suite(s) {unknown}; use one of {[*SUITES, 'all']}")
    tasks: dict[str, Task] = {}
    for suite in SUITES if "all" in suites else suites:
        if suite == "project":
            tasks |= builtin_eval_sets()
            continue
        folder = resources.files("inbedder_index") / "data" / "eval" / suite
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".jsonl"):
                with resources.as_file(entry) as path:
                    tasks[path.stem] = load_task(path, "two_aspect", name=path.stem)
    return tasks


def eval_tasks(suites: Sequence[str] | None = None, sources: Sequence[str] | None = None) -> dict[str, Task]:
    """What ``inbedder-index eval`` scores: the named suites plus task files or hub ids.

    Neither given: every suite. Only ``sources``: just those tasks.
    """
    tasks = suite_tasks(suites or (() if sources else SUITES))
    for source in sources or ():
        tasks[Path(source).stem if Path(source).exists() else source] = load_task(source)
    return tasks
