#!/usr/bin/env bash
# The main job: install, build a sample index under two instructions, and search it under each.
# The same query finds different messages depending on the question asked of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
inbedder-index export  # once: the default model's ONNX graph, so later commands need no PyTorch on a CPU
INDEX=${INDEX:-$(mktemp -d)/customer-index}
FEEL="How does the customer feel?"
WANT="What does the customer want?"
QUERY="I am so angry, give me my money back!"
inbedder-index build "$INDEX" --input examples/data/customer-messages.jsonl \
    --instruction "$FEEL" --instruction "$WANT"
inbedder-index info "$INDEX"
for INSTRUCTION in "$FEEL" "$WANT"; do
    echo
    echo "Query: \"$QUERY\"  under: $INSTRUCTION"
    inbedder-index search "$INDEX" "$QUERY" --instruction "$INSTRUCTION" -k 4
done
