"""Instruction-specific retrieval for a LangChain RAG chain: one store, two questions asked of it.

The same customer question retrieves different context depending on the instruction the corpus is
searched under. Offline, default model, no LLM: the chain stops at the prompt an LLM would get.

    python examples/langchain_rag.py
"""

import json
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from langchain_inbedder import InBedderEmbeddings, InBedderVectorStore

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "customer-messages.jsonl").open()]
docs = [Document(id=r["id"], page_content=r["text"], metadata={"category": r["category"]}) for r in rows]

store = InBedderVectorStore.from_documents(docs, InBedderEmbeddings(instruction=FEEL))  # temporary folder
prompt = ChatPromptTemplate.from_template("Similar past messages:\n{context}\n\nNew message: {question}\nDraft a reply.")


def format_docs(found: list[Document]) -> str:
    return "\n".join(f"- [{d.id}, {d.metadata['category']}] {d.page_content}" for d in found)


question = "I am so annoyed! Where is my package?"
for instruction in (FEEL, WANT):
    retriever = store.as_retriever(search_kwargs={"k": 3, "instruction": instruction})
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt
    print(f"=== retrieved under: {instruction}\n{chain.invoke(question).to_string()}\n")
store.close()
