"""LangChain integration: the standard suites on real FAISS/Qdrant indexes (in-process and with
embeddings from a running server), instruction switching without reloading, langchain_qdrant, and a
semantic end-to-end check on the default model."""

from __future__ import annotations

from collections.abc import Iterator

import langchain_inbedder.embeddings as embeddings_module
import numpy as np
import pytest
from corpora import ANGRY, FEEL, REFUND, SMALL_CORPUS, WANT, tiny_encoder, with_loop_ticks
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_inbedder import InBedderEmbeddings, InBedderVectorStore
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests
from serving import running

from inbedder_index import InBedder, InstructionIndex
from inbedder_index.errors import ModelNotAvailableError, UnknownInstructionError
from inbedder_index.models import DEFAULT_MODEL
from inbedder_index.serve import Settings


def tiny_embeddings(instruction: str = FEEL) -> InBedderEmbeddings:
    return InBedderEmbeddings(encoder=tiny_encoder(), instruction=instruction)


# ----------------------------------------------------------------- standard suites


class TestInBedderEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[InBedderEmbeddings]:
        return InBedderEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"instruction": FEEL}  # the model loads lazily: construction alone must not load it


class TestInBedderEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[InBedderEmbeddings]:
        return InBedderEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"instruction": FEEL, "encoder": tiny_encoder()}


class TestVectorStoreAnyEmbeddings(VectorStoreIntegrationTests):
    """The suite's own DeterministicFakeEmbedding, stored in a real index (FAISS and Qdrant)."""

    @pytest.fixture(params=["faiss", "qdrant"])
    def vectorstore(self, request: pytest.FixtureRequest, tmp_path) -> Iterator[InBedderVectorStore]:
        store = InBedderVectorStore.open(tmp_path / "index", embedding=self.get_embeddings(),
                                         default_instruction=FEEL, backend=request.param)
        try:
            yield store
        finally:
            store.close()


class TestVectorStoreInBedder(VectorStoreIntegrationTests):
    """The same suite with InBedder itself (tiny model) as the embedding, on FAISS and Qdrant."""

    @staticmethod
    def get_embeddings() -> Embeddings:
        return tiny_embeddings()

    @pytest.fixture(params=["faiss", "qdrant"])
    def vectorstore(self, request: pytest.FixtureRequest, tmp_path) -> Iterator[InBedderVectorStore]:
        store = InBedderVectorStore.open(tmp_path / "index", embedding=self.get_embeddings(), backend=request.param)
        try:
            yield store
        finally:
            store.close()


# ----------------------------------------------------------------- embeddings


def test_with_instruction_shares_the_loaded_model(monkeypatch) -> None:
    loads = []

    def fake_connect(model: str, *, base_url: str | None, api_key: str | None, **kwargs) -> InBedder:
        assert base_url is None and api_key is None  # a local model, chosen by inbedder_index.connect
        loads.append((model, kwargs))
        return tiny_encoder()

    monkeypatch.setattr(embeddings_module, "connect", fake_connect)
    feel = InBedderEmbeddings(instruction=FEEL, model_kwargs={"device": "cpu"})
    assert loads == []  # lazy
    want = feel.with_instruction(WANT, query_instruction="What does this query ask for?")
    assert loads == [(DEFAULT_MODEL, {"device": "cpu"})]
    assert want.encoder is feel.encoder
    assert (want.instruction, want.query_instruction, want.model_kwargs) == (
        WANT, "What does this query ask for?", {"device": "cpu"})
    want.embed_documents(["I want a refund."])
    feel.embed_query("I want a refund.")
    assert len(loads) == 1


def test_vectors_are_the_encoders_under_each_instruction() -> None:
    feel = tiny_embeddings(FEEL)
    want = feel.with_instruction(WANT)
    texts = ["I am furious, refund me.", "Thanks, it works!"]
    for embedder, instruction in ((feel, FEEL), (want, WANT)):
        expected = tiny_encoder().encode(texts, instruction)
        np.testing.assert_allclose(embedder.embed_documents(texts), expected, atol=1e-6)
        np.testing.assert_allclose(embedder.embed_query(texts[0]), expected[0], atol=1e-6)
    assert not np.allclose(feel.embed_query(texts[0]), want.embed_query(texts[0]))
    asymmetric = feel.with_instruction(FEEL, query_instruction=WANT)
    np.testing.assert_allclose(asymmetric.embed_query(texts[0]), want.embed_query(texts[0]), atol=1e-6)


def test_blank_instruction_and_mismatched_model_are_refused() -> None:
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="blank"):
            InBedderEmbeddings(instruction=bad)
        with pytest.raises(ValueError, match="blank"):
            tiny_embeddings().with_instruction(bad)
    with pytest.raises(ValueError, match="tiny-llama"):
        InBedderEmbeddings(instruction=FEEL, model="other-model", encoder=tiny_encoder())
    assert tiny_embeddings().model == "tiny-llama"
    assert "encoder" not in tiny_embeddings().model_dump()


async def test_async_embedding_runs_off_the_event_loop() -> None:
    vectors, ticks = await with_loop_ticks(tiny_embeddings().aembed_documents(["some text"] * 64))
    assert len(vectors) == 64 and ticks > 1


# ----------------------------------------------------------------- vector store


DOCS = [Document(id=doc_id, page_content=text, metadata=dict(metadata)) for doc_id, text, metadata in SMALL_CORPUS]


@pytest.fixture(params=["faiss", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[InBedderVectorStore]:
    store = InBedderVectorStore.from_documents(DOCS, tiny_embeddings(FEEL), path=tmp_path / "index",
                                               backend=request.param)
    try:
        yield store
    finally:
        store.close()


def test_instruction_per_call_builds_collections_on_first_use(store: InBedderVectorStore) -> None:
    assert store.index.instructions() == [FEEL]
    query = "I want my money back"
    results = {i: store.similarity_search_with_score(query, k=4, instruction=i) for i in (FEEL, WANT)}
    assert store.index.instructions() == [FEEL, WANT]
    for instruction, pairs in results.items():  # each is the exact ranking under its own instruction
        vectors = tiny_encoder().encode([d.page_content for d in DOCS], instruction)
        scores = vectors @ tiny_encoder().encode(query, instruction)
        assert [doc.id for doc, _ in pairs] == [DOCS[i].id for i in np.argsort(-scores)]
        np.testing.assert_allclose([s for _, s in pairs], np.sort(scores)[::-1], atol=1e-5)
    assert store.embeddings.encoder is tiny_encoder()  # no second model for the second instruction


def test_adding_updates_every_collection(store: InBedderVectorStore) -> None:
    store.similarity_search("x", instruction=WANT)
    store.add_texts(["A brand new message."], [{"shop": "west"}], ids=["e"])
    for instruction in (FEEL, WANT):
        assert store.similarity_search("A brand new message.", k=1, instruction=instruction)[0].id == "e"
    assert store.add_texts(["x", "y"], ids=["f", None])[0] == "f"
    assert len(store.index) == 7


def test_filters_scores_and_retriever(store: InBedderVectorStore) -> None:
    assert {d.id for d in store.similarity_search("x", k=10, filter={"shop": "north"})} == {"a", "c"}
    assert {d.id for d in store.similarity_search("x", k=10, filter={"shop": ["east", "south"]}, instruction=WANT)} \
        == {"b", "d"}
    assert store.similarity_search("x", filter={"shop": "nowhere"}) == []
    pairs = store.similarity_search_with_score(DOCS[1].page_content, k=4)
    assert pairs[0][0] == DOCS[1] and pairs[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in pairs] == sorted((s for _, s in pairs), reverse=True)
    relevance = store.similarity_search_with_relevance_scores(DOCS[1].page_content, k=4)
    assert [r for _, r in relevance] == pytest.approx([(s + 1) / 2 for _, s in pairs])
    retriever = store.as_retriever(search_kwargs={"k": 2, "instruction": WANT, "filter": {"shop": "north"}})
    assert {d.id for d in retriever.invoke("refund")} == {"a", "c"}
    assert store.index.instructions() == [FEEL, WANT]


def test_several_instructions_at_once(store: InBedderVectorStore) -> None:
    query = "I want my money back"
    pairs = store.similarity_search_with_score(query, k=4, instructions=[FEEL, WANT], weights={WANT: 2.0})
    assert store.index.instructions() == [FEEL, WANT]  # built on first use, as for instruction=
    texts = [d.page_content for d in DOCS]
    combined = sum(weight * (tiny_encoder().encode(texts, i) @ tiny_encoder().encode(query, i))
                   for i, weight in ((FEEL, 1.0), (WANT, 2.0)))
    assert [doc.id for doc, _ in pairs] == [DOCS[i].id for i in np.argsort(-combined)]
    np.testing.assert_allclose([s for _, s in pairs], np.sort(combined)[::-1], atol=1e-5)
    retriever = store.as_retriever(search_kwargs={"k": 2, "instructions": [FEEL, WANT], "filter": {"shop": "north"}})
    expected = store.similarity_search(query, k=2, filter={"shop": "north"}, instructions=[FEEL, WANT])
    assert retriever.invoke(query) == expected and {d.id for d in expected} == {"a", "c"}
    with pytest.raises(ValueError, match="not both"):
        store.similarity_search(query, instruction=FEEL, instructions=[WANT])
    with pytest.raises(ValueError, match="give instructions= too"):
        store.similarity_search(query, weights={FEEL: 1.0})
    with pytest.raises(TypeError, match="list of instructions"):
        store.similarity_search(query, instructions=FEEL)


def test_by_vector_and_mmr(store: InBedderVectorStore) -> None:
    vector = store.embeddings.with_instruction(WANT).embed_query(DOCS[3].page_content)
    assert store.similarity_search_by_vector(vector, k=1, instruction=WANT) == [DOCS[3]]
    mmr = store.max_marginal_relevance_search(DOCS[0].page_content, k=2, fetch_k=4, lambda_mult=0.5)
    assert mmr[0] == DOCS[0] and len(mmr) == 2
    assert store.max_marginal_relevance_search("x", k=2, lambda_mult=1.0) == store.similarity_search("x", k=2)
    assert store.max_marginal_relevance_search("x", filter={"shop": "nowhere"}) == []


def test_get_delete_and_reopen(tmp_path) -> None:
    path = tmp_path / "index"
    with_feel = tiny_embeddings(FEEL)
    store = InBedderVectorStore.from_documents(DOCS, with_feel, path=path)
    assert store.embeddings is with_feel
    assert store.get_by_ids(["d", "missing", "a"]) == [DOCS[3], DOCS[0]]
    assert store.delete(["a", "missing"]) is True
    assert "a" not in {d.id for d in store.similarity_search("refund", k=10)}
    with pytest.raises(ValueError, match="ids"):
        store.delete()
    store.close()
    reopened = InBedderVectorStore.open(path, read_only=True, model=tiny_encoder())
    assert reopened.default_instruction == FEEL
    assert {d.id for d in reopened.similarity_search("x", k=10)} == {"b", "c", "d"}
    with pytest.raises(UnknownInstructionError, match="How does the customer feel"):
        reopened.similarity_search("x", instruction=WANT)  # read-only: cannot build, lists what exists
    reopened.close()


def test_from_texts_without_path_uses_a_temporary_folder() -> None:
    store = InBedderVectorStore.from_texts(["one", "two"], DeterministicFakeEmbedding(size=8), instruction=FEEL)
    folder = store.index.path
    assert folder.exists() and store.similarity_search("two", k=1)[0].page_content == "two"
    assert isinstance(store.embeddings, DeterministicFakeEmbedding)
    store.close()
    del store
    assert not folder.exists()


def test_open_needs_an_instruction_for_a_plain_embedding(tmp_path) -> None:
    with pytest.raises(ValueError, match="default_instruction"):
        InBedderVectorStore.open(tmp_path / "index", embedding=DeterministicFakeEmbedding(size=8))
    with pytest.raises(TypeError, match="not both"):
        InBedderVectorStore.open(tmp_path / "index", embedding=tiny_embeddings(), model="smollm2-135m")


# ----------------------------------------------------------------- langchain_qdrant


def test_embeddings_in_langchain_qdrant_with_two_instructions_one_model(tmp_path) -> None:
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient, models

    feel = tiny_embeddings(FEEL)
    want = feel.with_instruction(WANT)
    assert want.encoder is feel.encoder
    texts = [d.page_content for d in DOCS]
    query = "I want my money back"
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        for name, embedder in (("feel", feel), ("want", want)):
            client.create_collection(name, vectors_config=models.VectorParams(size=tiny_encoder().dim,
                                                                              distance=models.Distance.COSINE))
            qdrant = QdrantVectorStore(client=client, collection_name=name, embedding=embedder)
            qdrant.add_texts(texts)
            vectors = tiny_encoder().encode(texts, embedder.instruction)
            expected = [texts[i] for i in np.argsort(-(vectors @ tiny_encoder().encode(query, embedder.instruction)))]
            assert [d.page_content for d in qdrant.similarity_search(query, k=4)] == expected
    finally:
        client.close()


# ----------------------------------------------------------------- remote mode: a real server


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running() as (url, _):
        yield url


class TestRemoteEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[InBedderEmbeddings]:
        return InBedderEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"instruction": FEEL, "base_url": "http://127.0.0.1:9"}  # construction connects to nothing

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"INBEDDER_INDEX_API_KEY": "from-env"}, {"instruction": FEEL, "base_url": "http://127.0.0.1:9"},
                {"api_key": "from-env"})


class TestRemoteEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, server_url: str) -> None:
        self.url = server_url

    @property
    def embeddings_class(self) -> type[InBedderEmbeddings]:
        return InBedderEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"instruction": FEEL, "base_url": self.url}


class TestVectorStoreRemote(VectorStoreIntegrationTests):
    """The vector-store suite with embeddings from a running server (FAISS and Qdrant)."""

    @pytest.fixture(autouse=True)
    def _server(self, server_url: str) -> None:
        self.url = server_url

    def get_embeddings(self) -> Embeddings:
        return InBedderEmbeddings(instruction=FEEL, base_url=self.url)

    @pytest.fixture(params=["faiss", "qdrant"])
    def vectorstore(self, request: pytest.FixtureRequest, tmp_path, _server) -> Iterator[InBedderVectorStore]:
        store = InBedderVectorStore.open(tmp_path / "index", embedding=self.get_embeddings(), backend=request.param)
        try:
            yield store
        finally:
            store.close()


def test_remote_vectors_equal_local_and_instructions_share_the_connection(server_url, tmp_path) -> None:
    feel = InBedderEmbeddings(instruction=FEEL, base_url=f"{server_url}/v1")  # OpenAI-style URLs work too
    want = feel.with_instruction(WANT)
    assert want.encoder is feel.encoder and want.base_url == feel.base_url and want.model == "tiny-llama"
    texts = ["I am furious, refund me.", "Thanks, it works!"]
    for embedder, instruction in ((feel, FEEL), (want, WANT)):
        np.testing.assert_array_equal(embedder.embed_documents(texts), tiny_encoder().encode(texts, instruction))
        np.testing.assert_array_equal(embedder.embed_query(texts[0]), tiny_encoder().encode(texts[0], instruction))
    store = InBedderVectorStore.from_texts(texts, feel, ids=["a", "b"], path=tmp_path / "index")
    store.close()
    with InstructionIndex.open(tmp_path / "index", model=tiny_encoder(), read_only=True) as index:
        assert index.search(texts[1], FEEL, k=1)[0].id == "b"  # built remotely, opened locally: one model


def test_remote_errors_name_the_problem(server_url) -> None:
    with pytest.raises(ValueError, match="base_url"):
        InBedderEmbeddings(instruction=FEEL, api_key="k")
    with pytest.raises(ValueError, match="model_kwargs"):
        InBedderEmbeddings(instruction=FEEL, base_url=server_url, model_kwargs={"device": "cpu"})
    with pytest.raises(ModelNotAvailableError, match="other-model"):
        InBedderEmbeddings(instruction=FEEL, base_url=server_url, model="other-model").embed_query("x")
    with pytest.raises(ModelNotAvailableError, match="no inbedder-index server answers"):
        InBedderEmbeddings(instruction=FEEL, base_url="http://127.0.0.1:9").embed_query("x")
    with running(settings=Settings(api_key="s3cret")) as (url, _):
        with pytest.raises(PermissionError, match="API key"):
            InBedderEmbeddings(instruction=FEEL, base_url=url).embed_query("x")
        keyed = InBedderEmbeddings(instruction=FEEL, base_url=url, api_key="s3cret")
        assert "s3cret" not in repr(keyed)
        np.testing.assert_array_equal(keyed.embed_query("x"), tiny_encoder().encode("x", FEEL))


# ----------------------------------------------------------------- the real model




@pytest.mark.slow
def test_same_query_different_top_documents_under_two_instructions(tmp_path, default_encoder) -> None:
    feel = InBedderEmbeddings(encoder=default_encoder, instruction=FEEL)
    texts = {**ANGRY, **REFUND}
    store = InBedderVectorStore.from_texts(list(texts.values()), feel, ids=list(texts), path=tmp_path / "index")
    try:
        query = "I am so angry, give me my money back!"
        top = {i: store.similarity_search(query, k=1, instruction=i)[0].id for i in (FEEL, WANT)}
        assert top[FEEL] in ANGRY, top
        assert top[WANT] in REFUND, top
        retriever = store.as_retriever(search_kwargs={"k": 1, "instruction": WANT})
        assert retriever.invoke(query)[0].id == top[WANT]
    finally:
        store.close()
