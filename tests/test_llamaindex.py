"""LlamaIndex integration: the embed model (no reload across instructions; in-process and from a
running server), VectorStoreIndex over InBedderVectorStore on real FAISS/Qdrant indexes, Qdrant's own
store, and the default model end to end."""

from __future__ import annotations

from collections.abc import Iterator

import llama_index_inbedder.embeddings as embeddings_module
import numpy as np
import pytest
from corpora import ANGRY, FEEL, REFUND, SMALL_CORPUS, WANT, tiny_encoder, with_loop_ticks
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index_inbedder import InBedderEmbedding, InBedderVectorStore, index_filter
from serving import running

from inbedder_index import InBedder
from inbedder_index.errors import ModelNotAvailableError, UnknownInstructionError
from inbedder_index.models import DEFAULT_MODEL

# ----------------------------------------------------------------- embed model


def test_with_instruction_shares_the_loaded_model(monkeypatch) -> None:
    loads = []

    def fake_connect(model: str, *, base_url: str | None, api_key: str | None, **kwargs) -> InBedder:
        assert base_url is None and api_key is None  # a local model, chosen by inbedder_index.connect
        loads.append((model, kwargs))
        return tiny_encoder()

    monkeypatch.setattr(embeddings_module, "connect", fake_connect)
    feel = InBedderEmbedding(instruction=FEEL, model_kwargs={"device": "cpu"}, embed_batch_size=4)
    assert loads == []  # lazy
    want = feel.with_instruction(WANT, query_instruction="What does this query ask for?")
    assert loads == [(DEFAULT_MODEL, {"device": "cpu"})]
    assert want.encoder is feel.encoder
    assert (want.instruction, want.query_instruction, want.embed_batch_size) == (
        WANT, "What does this query ask for?", 4)
    want.get_text_embedding_batch(["a", "b", "c", "d", "e"])
    feel.get_query_embedding("x")
    assert len(loads) == 1


def test_embeddings_are_the_encoders_under_each_instruction() -> None:
    feel = InBedderEmbedding(encoder=tiny_encoder(), instruction=FEEL)
    want = feel.with_instruction(WANT)
    texts = ["I am furious, refund me.", "Thanks, it works!"]
    for embed_model, instruction in ((feel, FEEL), (want, WANT)):
        expected = tiny_encoder().encode(texts, instruction)
        np.testing.assert_allclose(embed_model.get_text_embedding_batch(texts), expected, atol=1e-6)
        np.testing.assert_allclose(embed_model.get_text_embedding(texts[1]), expected[1], atol=1e-6)
        np.testing.assert_allclose(embed_model.get_query_embedding(texts[0]), expected[0], atol=1e-6)
    asymmetric = feel.with_instruction(FEEL, query_instruction=WANT)
    np.testing.assert_allclose(asymmetric.get_query_embedding(texts[0]), want.get_query_embedding(texts[0]), atol=1e-6)
    assert (feel.model, feel.model_name, feel.class_name()) == ("tiny-llama", "tiny-llama", "InBedderEmbedding")


def test_blank_instruction_and_mismatched_model_are_refused() -> None:
    with pytest.raises(ValueError, match="blank"):
        InBedderEmbedding(instruction=" ")
    with pytest.raises(ValueError, match="blank"):
        InBedderEmbedding(encoder=tiny_encoder(), instruction=FEEL).with_instruction("")
    with pytest.raises(ValueError, match="tiny-llama"):
        InBedderEmbedding(encoder=tiny_encoder(), instruction=FEEL, model="other")


async def test_async_twins_run_off_the_event_loop() -> None:
    embed_model = InBedderEmbedding(encoder=tiny_encoder(), instruction=FEEL)
    batch, ticks = await with_loop_ticks(embed_model.aget_text_embedding_batch(["some text"] * 64))
    query = await embed_model.aget_query_embedding("some text")
    assert ticks > 1 and len(batch) == 64
    np.testing.assert_allclose(query, batch[0], atol=1e-6)
    np.testing.assert_allclose(await embed_model.aget_text_embedding("some text"), batch[0], atol=1e-6)


# ----------------------------------------------------------------- vector store

DOCS = [Document(id_=doc_id, text=text, metadata=dict(metadata)) for doc_id, text, metadata in SMALL_CORPUS]


@pytest.fixture(params=["faiss", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[InBedderVectorStore]:
    store = InBedderVectorStore.open(tmp_path / "index", instruction=FEEL, model=tiny_encoder(), backend=request.param)
    try:
        yield store
    finally:
        store.close()


def build(store: InBedderVectorStore, docs: list[Document] = DOCS) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                           embed_model=store.embed_model)


def ranking(query: str, instruction: str, nodes: list[TextNode]) -> list[str]:
    """Exact nearest-neighbour order of the nodes' sources under ``instruction``."""
    vectors = tiny_encoder().encode([n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes], instruction)
    return [nodes[i].ref_doc_id for i in np.argsort(-(vectors @ tiny_encoder().encode(query, instruction)))]


def test_vector_store_index_round_trip_with_instruction_per_query(store: InBedderVectorStore) -> None:
    index = build(store)
    assert store.embed_model.encoder is tiny_encoder()
    nodes = store.get_nodes()
    assert {n.ref_doc_id for n in nodes} == {"a", "b", "c", "d"}
    assert store.client.instructions() == [FEEL]
    query = "I want my money back"
    for instruction in (None, WANT):
        kwargs = {"vector_store_kwargs": {"instruction": instruction}} if instruction else {}
        results = index.as_retriever(similarity_top_k=4, **kwargs).retrieve(query)
        assert [r.node.ref_doc_id for r in results] == ranking(query, instruction or FEEL, nodes)
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
        first = next(d for d in DOCS if d.doc_id == results[0].node.ref_doc_id)
        assert (results[0].node.text, results[0].node.metadata) == (first.text, first.metadata)
    assert store.client.instructions() == [FEEL, WANT]  # built on first use
    new = Document(id_="e", text="A brand new message.", metadata={"shop": "west"})
    index.insert(new)
    for instruction in (FEEL, WANT):  # every collection got it
        top = index.as_retriever(similarity_top_k=1, vector_store_kwargs={"instruction": instruction})
        assert top.retrieve(new.get_content(metadata_mode=MetadataMode.EMBED))[0].node.ref_doc_id == "e"


def test_a_retriever_under_several_instructions_at_once(store: InBedderVectorStore) -> None:
    index = build(store)
    nodes = store.get_nodes()
    query = "I want my money back"
    retriever = index.as_retriever(similarity_top_k=4, vector_store_kwargs={"instructions": [FEEL, WANT],
                                                                           "weights": {FEEL: 0.5}})
    results = retriever.retrieve(query)
    assert store.client.instructions() == [FEEL, WANT]  # built on first use
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    combined = sum(weight * (tiny_encoder().encode(texts, i) @ tiny_encoder().encode(query, i))
                   for i, weight in ((FEEL, 0.5), (WANT, 1.0)))
    assert [r.node.ref_doc_id for r in results] == [nodes[i].ref_doc_id for i in np.argsort(-combined)]
    np.testing.assert_allclose([r.score for r in results], np.sort(combined)[::-1], atol=1e-5)
    north = MetadataFilters(filters=[MetadataFilter(key="shop", value="north")])
    filtered = index.as_retriever(similarity_top_k=4, filters=north,
                                  vector_store_kwargs={"instructions": [FEEL, WANT]}).retrieve(query)
    assert {r.node.ref_doc_id for r in filtered} == {"a", "c"}
    for kwargs, error, message in (({"instructions": [FEEL], "instruction": WANT}, ValueError, "not both"),
                                   ({"weights": {FEEL: 1.0}}, ValueError, "give instructions too"),
                                   ({"instructions": FEEL}, TypeError, "list of instructions")):
        with pytest.raises(error, match=message):
            store.query(VectorStoreQuery(query_str=query), **kwargs)
    with pytest.raises(ValueError, match="needs query_str"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * tiny_encoder().dim), instructions=[FEEL, WANT])


async def test_async_retrieval_and_insertion(store: InBedderVectorStore) -> None:
    index = build(store, DOCS[:2])
    await index.ainsert_nodes([TextNode(id_="n3", text=DOCS[2].text)])
    results = await index.as_retriever(similarity_top_k=1, vector_store_kwargs={"instruction": WANT}).aretrieve(
        DOCS[2].text)
    assert results[0].node.node_id == "n3"


def test_delete_by_ref_doc_and_by_node(store: InBedderVectorStore) -> None:
    index = build(store)
    index.delete_ref_doc("a")
    assert {n.ref_doc_id for n in store.get_nodes()} == {"b", "c", "d"}
    assert "a" not in {r.node.ref_doc_id for r in index.as_retriever(similarity_top_k=10).retrieve("refund")}
    node_b = next(n for n in store.get_nodes() if n.ref_doc_id == "b")
    store.delete_nodes([node_b.node_id])
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="shop", value="east")]))
    assert {n.ref_doc_id for n in store.get_nodes()} == {"c"}
    store.delete("missing")
    store.clear()
    assert store.get_nodes() == [] and len(store.client) == 0


def test_filters_and_doc_ids(store: InBedderVectorStore) -> None:
    index = build(store)

    def sources(filters: MetadataFilters | None = None, **kwargs) -> set[str]:
        retriever = index.as_retriever(similarity_top_k=10, filters=filters, **kwargs)
        return {r.node.ref_doc_id for r in retriever.retrieve("x")}

    def where(*items: MetadataFilter) -> MetadataFilters:
        return MetadataFilters(filters=list(items))

    assert sources(where(MetadataFilter(key="shop", value="north"))) == {"a", "c"}
    assert sources(where(MetadataFilter(key="shop", value=["east", "south"], operator=FilterOperator.IN))) == {"b", "d"}
    assert sources(where(MetadataFilter(key="shop", value="north"), MetadataFilter(key="n", value=3))) == {"c"}
    assert sources(doc_ids=["b", "d"]) == {"b", "d"}
    assert sources(where(MetadataFilter(key="shop", value="north")), doc_ids=["a", "b"]) == {"a"}
    assert sources(where(MetadataFilter(key="shop", value="nowhere"))) == set()
    assert index_filter(where(MetadataFilter(key="tags", value="x", operator=FilterOperator.CONTAINS),
                              MetadataFilter(key="k", value=["y"], operator=FilterOperator.ANY))) == {
        "tags": "x", "k": ["y"]}
    for bad in (
        where(MetadataFilter(key="n", value=2, operator=FilterOperator.GT)),
        MetadataFilters(filters=[MetadataFilter(key="a", value=1), MetadataFilter(key="b", value=2)],
                        condition=FilterCondition.OR),
        where(MetadataFilter(key="shop", value="a"), MetadataFilter(key="shop", value="b")),
    ):
        with pytest.raises(ValueError):
            sources(bad)
    with pytest.raises(ValueError, match="mode"):
        store.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.MMR))


def test_query_by_embedding_and_reopen(tmp_path) -> None:
    path = tmp_path / "index"
    store = InBedderVectorStore.open(path, instruction=FEEL, model=tiny_encoder())
    build(store)
    vector = store.embed_model.with_instruction(WANT).get_query_embedding(DOCS[3].get_content(MetadataMode.EMBED))
    result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=1), instruction=WANT)
    assert result.nodes[0].ref_doc_id == "d" and result.similarities[0] == pytest.approx(1.0, abs=1e-5)
    store.close()
    reopened = InBedderVectorStore.open(path, instruction=FEEL, model=tiny_encoder(), read_only=True)
    index = VectorStoreIndex.from_vector_store(reopened, embed_model=reopened.embed_model)
    assert index.as_retriever(similarity_top_k=1).retrieve(DOCS[1].get_content(MetadataMode.EMBED))[0].node.ref_doc_id \
        == "b"
    with pytest.raises(UnknownInstructionError, match="How does the customer feel"):
        index.as_retriever(vector_store_kwargs={"instruction": "Where?"}).retrieve("x")
    reopened.close()


# ----------------------------------------------------------------- llama_index's Qdrant store


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")  # llama_index's Qdrant store, local mode
def test_embed_model_in_qdrant_vector_store_with_two_instructions_one_model() -> None:
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    feel = InBedderEmbedding(encoder=tiny_encoder(), instruction=FEEL)
    want = feel.with_instruction(WANT)
    assert want.encoder is feel.encoder
    client = QdrantClient(location=":memory:")
    try:
        query = "I want my money back"
        for name, embed_model in (("feel", feel), ("want", want)):
            qdrant = QdrantVectorStore(collection_name=name, client=client)
            index = VectorStoreIndex.from_documents(
                DOCS, storage_context=StorageContext.from_defaults(vector_store=qdrant), embed_model=embed_model)
            results = index.as_retriever(similarity_top_k=4).retrieve(query)
            nodes = [r.node for r in results]
            assert [n.ref_doc_id for n in nodes] == ranking(query, embed_model.instruction, nodes)
    finally:
        client.close()


# ----------------------------------------------------------------- remote mode: a real server


class TestRemoteEmbedding:
    """The embed model's checks above, with its vectors from a running ``inbedder-index serve``."""

    @pytest.fixture(scope="class")
    def url(self) -> Iterator[str]:
        with running() as (url, _):
            yield url

    @pytest.fixture
    def feel(self, url: str) -> InBedderEmbedding:
        return InBedderEmbedding(instruction=FEEL, base_url=url, embed_batch_size=2)

    def test_embeddings_equal_the_local_model_under_each_instruction(self, feel: InBedderEmbedding) -> None:
        want = feel.with_instruction(WANT)
        assert want.encoder is feel.encoder and (want.base_url, want.model, want.embed_batch_size) == (
            feel.base_url, "tiny-llama", 2)
        texts = ["I am furious, refund me.", "Thanks, it works!", "Where is my parcel?"]  # 2 requests each
        for embed_model, instruction in ((feel, FEEL), (want, WANT)):
            expected = tiny_encoder().encode(texts, instruction)
            np.testing.assert_array_equal(embed_model.get_text_embedding_batch(texts), expected)
            np.testing.assert_array_equal(embed_model.get_text_embedding(texts[1]), expected[1])
            np.testing.assert_array_equal(embed_model.get_query_embedding(texts[0]), expected[0])

    async def test_async_twins(self, feel: InBedderEmbedding) -> None:
        batch, ticks = await with_loop_ticks(feel.aget_text_embedding_batch(["some text"] * 8))
        assert ticks > 1 and len(batch) == 8
        np.testing.assert_array_equal(await feel.aget_query_embedding("some text"), batch[0])
        np.testing.assert_array_equal(batch[0], tiny_encoder().encode("some text", FEEL))

    def test_vector_store_index_with_the_remote_model(self, feel: InBedderEmbedding, tmp_path) -> None:
        store = InBedderVectorStore.open(tmp_path / "index", instruction=FEEL, model=feel.encoder)
        try:
            index = build(store)
            assert store.embed_model.encoder is feel.encoder
            nodes = store.get_nodes()
            query = "I want my money back"
            for instruction in (FEEL, WANT):
                results = index.as_retriever(similarity_top_k=4, vector_store_kwargs={"instruction": instruction}) \
                    .retrieve(query)
                assert [r.node.ref_doc_id for r in results] == ranking(query, instruction, nodes)
        finally:
            store.close()

    def test_the_key_comes_from_the_environment_and_the_model_must_be_served(self, url: str, monkeypatch) -> None:
        monkeypatch.setenv("INBEDDER_INDEX_API_KEY", "from-env")
        assert InBedderEmbedding(instruction=FEEL, base_url=url).api_key.get_secret_value() == "from-env"
        assert InBedderEmbedding(instruction=FEEL).api_key is None  # a local model needs none
        monkeypatch.delenv("INBEDDER_INDEX_API_KEY")
        with pytest.raises(ModelNotAvailableError, match="'other' is not served here"):
            InBedderEmbedding(instruction=FEEL, base_url=url, model="other").get_query_embedding("x")


# ----------------------------------------------------------------- the real model



@pytest.mark.slow
def test_same_query_different_top_documents_under_two_instructions(tmp_path, default_encoder) -> None:
    store = InBedderVectorStore.open(tmp_path / "index", instruction=FEEL, model=default_encoder)
    try:
        docs = [Document(id_=key, text=text) for key, text in {**ANGRY, **REFUND}.items()]
        index = build(store, docs)
        query = "I am so angry, give me my money back!"
        top = {i: index.as_retriever(similarity_top_k=1, vector_store_kwargs={"instruction": i}).retrieve(query)[0]
               for i in (FEEL, WANT)}
        assert top[FEEL].node.ref_doc_id in ANGRY, top
        assert top[WANT].node.ref_doc_id in REFUND, top
    finally:
        store.close()
