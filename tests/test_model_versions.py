"""Versioned model names: an index reopens with the exact version it was built with, whatever the
default has become since (a package upgrade never breaks an index that worked)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_hostile import _edit_manifest
from tiny_models import save_tiny

from inbedder_index import InstructionIndex, models
from inbedder_index.errors import ModelMismatchError
from inbedder_index.models import DEFAULT_MODEL, ModelSpec, list_supported_models, model_for_index, resolve_name

INSTRUCTION = "How does the customer feel?"
DOCS = [{"id": "a", "text": "The parcel never arrived and I am furious."},
        {"id": "b", "text": "Thank you so much, the refund came through quickly."}]


@pytest.fixture
def two_versions(tmp_path, monkeypatch):
    """A tiny model released as v1, then v2 (other weights); the alias starts at v1."""
    for version, seed in (("v1", 1), ("v2", 2)):
        folder = save_tiny(tmp_path / f"tiny-{version}", seed=seed)
        monkeypatch.setitem(models._BUILTIN, f"tiny-{version}", ModelSpec(f"tiny-{version}", str(folder), "test", "MIT"))
    monkeypatch.setitem(models.ALIASES, "tiny", "tiny-v1")
    return tmp_path


def _release_v2(monkeypatch):
    monkeypatch.setitem(models.ALIASES, "tiny", "tiny-v2")


def test_alias_resolves_to_a_version_and_the_index_records_it(two_versions):
    with InstructionIndex.open(two_versions / "idx", model="tiny", max_length=64) as index:
        assert index.encoder.model_id == "tiny-v1"
        index.add(DOCS)
        index.add_instruction(INSTRUCTION, show_progress_bar=False)
    assert _edit_manifest(two_versions / "idx", lambda manifest: None)["model"]["id"] == "tiny-v1"


@pytest.mark.parametrize("given", [None, "tiny"])
def test_index_reopens_with_its_version_after_the_default_changed(two_versions, monkeypatch, given):
    with InstructionIndex.open(two_versions / "idx", model="tiny", max_length=64) as index:
        index.add(DOCS)
        index.add_instruction(INSTRUCTION, show_progress_bar=False)
        before = index.search("angry", INSTRUCTION, k=2)
    _release_v2(monkeypatch)
    assert resolve_name("tiny") == "tiny-v2"
    with InstructionIndex.open(two_versions / "idx", model=given, max_length=64) as index:
        after = index.search("angry", INSTRUCTION, k=2)
        assert index.encoder.model_id == "tiny-v1"
        index.add([{"id": "c", "text": "Where is my order? Nobody answers."}])  # writes work too
    assert [(h.id, round(h.score, 5)) for h in after] == [(h.id, round(h.score, 5)) for h in before]


def test_an_explicit_other_version_is_still_refused(two_versions, monkeypatch):
    with InstructionIndex.open(two_versions / "idx", model="tiny", max_length=64) as index:
        index.add(DOCS)
        index.add_instruction(INSTRUCTION, show_progress_bar=False)
    _release_v2(monkeypatch)
    with pytest.raises(ModelMismatchError, match="tiny-v1"):
        InstructionIndex.open(two_versions / "idx", model="tiny-v2", max_length=64)


def test_an_index_from_before_versions_opens_with_what_the_name_meant_then(two_versions, monkeypatch):
    with InstructionIndex.open(two_versions / "idx", model="tiny", max_length=64) as index:
        index.add(DOCS)
        index.add_instruction(INSTRUCTION, show_progress_bar=False)
    _edit_manifest(two_versions / "idx", lambda m: m["model"].update(id="tiny"))  # as package 0.1 wrote it
    monkeypatch.setitem(models._LEGACY_MEANING, "tiny", "tiny-v1")
    _release_v2(monkeypatch)
    with InstructionIndex.open(two_versions / "idx", max_length=64) as index:
        assert index.encoder.model_id == "tiny-v1"
        assert [h.id for h in index.search("angry", INSTRUCTION, k=2)]


def test_model_for_index_rules():
    assert model_for_index(None, None) == resolve_name(DEFAULT_MODEL)
    assert model_for_index(None, DEFAULT_MODEL) == "inbedder-smollm2-135m-v1"  # written before versions
    assert model_for_index(DEFAULT_MODEL, "inbedder-smollm2-135m-v1") == "inbedder-smollm2-135m-v1"
    assert model_for_index("smollm2-135m", "inbedder-smollm2-135m-v1") == "smollm2-135m"  # explicit: as given
    assert model_for_index("/some/folder", None) == "/some/folder"


def test_every_listed_builtin_adapter_ships_and_the_default_is_listed():
    names = [spec.name for spec in list_supported_models()]
    assert DEFAULT_MODEL in names and resolve_name(DEFAULT_MODEL) in names
    for spec in list_supported_models():
        if spec.source == "builtin:adapter":
            folder = models.shipped_model_folder(spec.name)
            assert (folder / "adapter_config.json").is_file() and (folder / "MODEL_CARD.md").is_file(), spec.name


# --------------------------------------------------------------------------- indexes from earlier releases

BUILT_BEFORE_DIGEST = Path(__file__).parent / "data" / "index-before-weights-digest"  # see tests/data/README.md


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_an_index_built_by_the_previous_release_opens_and_is_upgraded_on_write(tmp_path, runtime):
    model = save_tiny(tmp_path / "tiny", seed=0)  # the same weights the earlier release built it with
    folder = shutil.copytree(BUILT_BEFORE_DIGEST, tmp_path / "old-index")
    recorded = _edit_manifest(folder, lambda manifest: None)["model"]["fingerprint"]
    kwargs = {"max_length": 64, "runtime": runtime, "cache_dir": tmp_path / "cache"}

    with InstructionIndex.open(folder, model=str(model), read_only=True, **kwargs) as index:
        assert index.encoder.fingerprint != recorded  # the scheme changed ...
        assert recorded in index.encoder.earlier_fingerprints()  # ... and the old one is still recognised
        hits = index.search("angry", INSTRUCTION, k=3)
    assert [h.id for h in hits] == ["a", "b", "c"]  # what the earlier release returned for this query
    assert _edit_manifest(folder, lambda manifest: None)["model"]["fingerprint"] == recorded  # read-only: untouched

    with InstructionIndex.open(folder, model=str(model), **kwargs) as index:
        index.add([{"id": "d", "text": "I love it, thank you!"}])
        current = index.encoder.fingerprint
        assert {h.id for h in index.search("angry", INSTRUCTION, k=4)} == {"a", "b", "c", "d"}
    manifest = _edit_manifest(folder, lambda manifest: None)
    assert manifest["model"]["fingerprint"] == current
    assert {entry["fingerprint"] for entry in manifest["collections"].values()} == {current}


def test_an_earlier_fingerprint_of_another_model_is_still_refused(tmp_path):
    other = save_tiny(tmp_path / "other", seed=5)
    folder = shutil.copytree(BUILT_BEFORE_DIGEST, tmp_path / "old-index")
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        InstructionIndex.open(folder, model=str(other), max_length=64, runtime="torch")
