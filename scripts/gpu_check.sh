#!/usr/bin/env bash
# The GPU checks in one run (about 6-8 min on one H100), for a session that has a GPU machine.
#
#   bash scripts/gpu_check.sh --prepare      # here, once: wheels the GPU image lacks -> .whl/
#   bash scripts/gpu_check.sh                # there: tests marked gpu + the two benchmarks on cuda
#
# On the device tool: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600).
# Results land in $OUT (or ./gpu_check_out): gpu.txt, pytest_gpu.txt, bench_kmeans_cuda.{txt,json},
# bench_dedup_cuda.{txt,json}. Record them in docs/benchmarks.md with the device named.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    # The machine's image has torch, timm, sentence-transformers, sklearn, pytest; not these.
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl hydra-core==1.3.2 omegaconf==2.3.0 faiss-cpu submitit
    python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # sdist only: build it
    ls -la .whl
    exit 0
fi

OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

# 1. every test marked gpu (CUDA == CPU for k-means, the hierarchy, dedup; the SSL step; embedding)
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_gpu.txt"

# 2. k-means on the GPU against faiss (GPU when importable, else CPU) and torch.mm, same run
timeout 180 python3 scripts/bench_kmeans.py --size small,large --iters 5 --init same --skip sklearn \
    --device cuda --json "$OUT/bench_kmeans_cuda.json" 2>&1 | tee "$OUT/bench_kmeans_cuda.txt"

# 3. dedup on the GPU against the faiss all-pairs recipe on the machine's CPU cores
timeout 180 python3 scripts/bench_dedup.py --n 300000 --d 256 --threads 16 --device cuda \
    --skip ours-torch-2ranks --json "$OUT/bench_dedup_cuda.json" 2>&1 | tee "$OUT/bench_dedup_cuda.txt"
