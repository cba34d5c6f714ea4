"""The embedder protocol and ``connect``: one factory picks a local model or a server's, and both
kinds of embedder give the index and the integrations the same five things."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inbedder_index import Embedder, InBedder, connect
from inbedder_index.client import RemoteInBedder
from inbedder_index.embedder import check_instructions, check_texts
from tiny_models import make_model, save_tiny

MEMBERS = [name for name in vars(Embedder) if not name.startswith("_")]


def test_the_protocol_is_the_five_things_an_index_needs():
    assert sorted(MEMBERS) == ["dim", "encode", "fingerprint", "max_length", "model_id"]
    parameters = inspect.signature(Embedder.encode).parameters
    assert list(parameters) == ["self", "texts", "instruction", "batch_size", "normalize", "show_progress_bar",
                                "return_answers"]
    for implementation in (InBedder, RemoteInBedder):
        assert inspect.signature(implementation.encode).parameters.keys() == parameters.keys(), implementation
        assert all(hasattr(implementation, name) for name in MEMBERS if name != "max_length"), implementation


def test_connect_without_a_server_gives_a_local_model(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    local = connect(str(folder), cache_dir=tmp_path / "cache", max_length=96, runtime="torch")
    assert isinstance(local, InBedder) and local.runtime.name == "torch" and local.max_length == 96
    reference = InBedder.from_model(*make_model("llama"), max_length=96)  # the same seed: the saved weights
    assert local.fingerprint == reference.fingerprint
    np.testing.assert_allclose(local.encode(["a refund"], "Why?"), reference.encode(["a refund"], "Why?"), atol=1e-6)
    with pytest.raises(ValueError, match="api_key is for a server"):
        connect(str(folder), api_key="secret")


def test_connect_with_a_server_gives_a_client_that_imports_nothing_heavy(monkeypatch):
    httpx = pytest.importorskip("httpx")
    monkeypatch.setenv("INBEDDER_INDEX_API_KEY", "from-the-environment")
    remote = connect(base_url="http://127.0.0.1:9/v1", batch_size=8)  # nothing is sent until it is used
    assert isinstance(remote, RemoteInBedder) and not isinstance(remote, InBedder)
    assert remote.base_url == "http://127.0.0.1:9" and remote.batch_size == 8
    assert remote._http.headers["Authorization"] == "Bearer from-the-environment"
    assert isinstance(remote._http, httpx.Client)
    with pytest.raises(ValueError, match=r"max_length configure a local model.*client settings: batch_size, timeout"):
        connect("tiny", base_url="http://127.0.0.1:9", max_length=96)
    script = textwrap.dedent("""
        import sys
        from inbedder_index import connect
        connect(base_url="http://127.0.0.1:9")
        print([m for m in ("torch", "transformers", "onnxruntime") if m in sys.modules])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_input_checks_name_what_is_wrong():
    assert check_texts(("a", "")) == ["a", ""]
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        check_texts(["a", 1])
    with pytest.raises(TypeError, match="sequence of strings"):
        check_texts(b"bytes")
    assert check_instructions(["Why?", "Who?", "Why?"]) == ["Why?", "Who?"]
    for bad in ("", "  ", []):
        with pytest.raises(ValueError, match="instruction"):
            check_instructions(bad)
