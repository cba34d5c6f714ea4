"""Instruction-specific retrieval for a LlamaIndex RAG pipeline: one store, two questions asked of it.

The same customer question retrieves different context depending on the instruction the corpus is
searched under. Offline, default model, no LLM: it prints the prompt an LLM would get.

    python examples/llamaindex_rag.py
"""

import json
import tempfile
from pathlib import Path

from llama_index.core import Document, PromptTemplate, StorageContext, VectorStoreIndex

from llama_index_inbedder import InBedderEmbedding, InBedderVectorStore

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "customer-messages.jsonl").open()]
docs = [Document(id_=r["id"], text=r["text"], metadata={"category": r["category"]},
                 excluded_embed_metadata_keys=["category"]) for r in rows]  # embed the message alone

embed_model = InBedderEmbedding(instruction=FEEL)
store = InBedderVectorStore.open(tempfile.mkdtemp(), instruction=FEEL, model=embed_model.encoder)  # one model
index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                        embed_model=embed_model)
prompt = PromptTemplate("Similar past messages:\n{context}\n\nNew message: {question}\nDraft a reply.")

question = "I am so annoyed! Where is my package?"
for instruction in (FEEL, WANT):
    retriever = index.as_retriever(similarity_top_k=3, vector_store_kwargs={"instruction": instruction})
    context = "\n".join(f"- [{n.node.ref_doc_id}, {n.node.metadata['category']}] {n.node.text}"
                        for n in retriever.retrieve(question))
    print(f"=== retrieved under: {instruction}\n{prompt.format(context=context, question=question)}\n")
store.close()
