#!/usr/bin/env bash
# The GPU checks in one device call, budgeted to end inside one 10-minute call (about 8 min on an
# H200 at most; each step has its own limit and a step that no longer fits is skipped).
#
#   bash scripts/gpu_check.sh --prepare      # here, once: wheels the GPU image lacks -> .whl/
#   bash scripts/gpu_check.sh --dry-run      # here, on the CPU: the same steps at tiny sizes
#   bash scripts/gpu_check.sh                # there: tests marked gpu + the two benchmarks on cuda
#
# On the device tool: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600).
# Every result is written to $OUT (or ./gpu_check_out) as it is produced, 7 files (the device
# tool returns at most 8; --dry-run adds pytest_ready.txt): summary.txt (machine, then one line per step as it ends),
# pytest_gpu.txt, bench_kmeans.txt, bench_kmeans.jsonl (a line per run), bench_kmeans.json
# (after each size), bench_dedup.txt, bench_dedup.json (after each row).
# Record them in docs/benchmarks.md with the device named.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
case "${1:-}" in
    --prepare) mode=prepare ;;
    --dry-run) mode=dry ;;
    "") ;;
    *) echo "error: unknown option ${1} (use --prepare, --dry-run or nothing)" >&2; exit 2 ;;
esac

if [[ $mode == prepare ]]; then
    # The machine's image has torch, timm, sentence-transformers, sklearn, pytest; not these.
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl hydra-core==1.3.2 omegaconf==2.3.0 faiss-cpu submitit
    python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # sdist only: build it
    ls -la .whl
    echo "what travels (tracked + untracked-not-ignored + .whl), limit 64 MiB:"
    { git ls-files -co --exclude-standard; find .whl -type f; } | tr '\n' '\0' | du -cb --files0-from=- | tail -1
    exit 0
fi

OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
BUDGET_S="${GPU_CHECK_BUDGET_S:-510}"  # all steps together; the call's limit is 600 s
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if [[ $mode == dry ]]; then
    device=cpu
    pytest_sel=(-m gpu tests)  # here they collect and skip; the cpu cases of their bodies run below
    kmeans_args=(--size tiny --iters 3 --init same --skip sklearn --threads 1)
    dedup_args=(--n 3000 --d 64 --threads 1)
    export OMP_NUM_THREADS=1
else
    device=cuda
    pytest_sel=(-m gpu tests)
    # small: 200k x 128, k=1024 in memory; stream: 2M x 128 memory-mapped (kept on the GPU now);
    # large: 500k x 384, k=4096. Sizes are written as they finish: a cut-off loses the last only.
    kmeans_args=(--size small,stream,large --iters 5 --init same --skip sklearn)
    # faiss-allpairs grows with n^2 on the CPU (~1,600 CPU-s at 300k x 256): 100k takes ~180
    # CPU-s, ~15 s on 16 cores; ours runs first, on the GPU
    dedup_args=(--n 100000 --d 256 --threads 16)
fi
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

started=$SECONDS
summary="$OUT/summary.txt"
{
    echo "gpu_check mode=$mode device=$device budget=${BUDGET_S}s $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null)"
    nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv 2>&1 || echo "nvidia-smi: none"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
        torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
} 2>&1 | tee "$summary"

# step NAME LIMIT_S CMD...: run CMD under `timeout LIMIT_S` if it still fits the budget, its
# output to $OUT/NAME.txt as it comes, and one line to summary.txt when it ends.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - started)))
    if ((limit > left)); then
        echo "$name: skipped (needs ${limit}s, ${left}s of the budget left)" | tee -a "$summary"
        return
    fi
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    local why=""
    ((rc == 124 || rc == 137)) && why=" (hit its ${limit}s limit)"
    echo "$name: rc=$rc in $((SECONDS - t0))s$why" | tee -a "$summary"
}

# 1. every test marked gpu: CUDA == CPU for k-means, k-means++, the hierarchy, the split and dedup
#    at d = 8, 32, 128 (TF32 off; a TF32 tolerance test), host syncs per Lloyd iteration, the
#    pinned reader, the SSL step and embedding in bf16
# (a test module whose import fails there must not stop the others: --continue-on-collection-errors)
step pytest_gpu 180 python3 -m pytest -v -p no:cacheprovider --continue-on-collection-errors "${pytest_sel[@]}"
if [[ $mode == dry ]]; then  # the device-parametrised bodies, on the CPU (cuda cases skip)
    step pytest_ready 120 python3 -m pytest -v -p no:cacheprovider tests/test_gpu_ready.py
fi

# 2. k-means on the device against faiss (GPU when importable, else CPU) and torch.mm, same run
step bench_kmeans 210 python3 scripts/bench_kmeans.py "${kmeans_args[@]}" --device "$device" \
    --json "$OUT/bench_kmeans.json" --jsonl "$OUT/bench_kmeans.jsonl"

# 3. dedup on the device against the faiss all-pairs recipe on the machine's CPU cores
step bench_dedup 100 python3 scripts/bench_dedup.py "${dedup_args[@]}" --device "$device" \
    --skip ours-torch-2ranks --json "$OUT/bench_dedup.json"

echo "total: $((SECONDS - started))s of ${BUDGET_S}s" | tee -a "$summary"
