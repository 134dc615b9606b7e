#!/usr/bin/env bash
# The accelerator figures in the README, on one GPU of >= 80 GB, random weights, no download:
#   0. when pytest is installed, GPU_TESTS on the GPU (tests/conftest.py defaults JAX to the CPU,
#      so JAX_PLATFORMS=cuda is set): the cuDNN attention tests against the XLA path, and the
#      generation, API, decoder-parity and evaluation tests, which found a GPU-only top-p bug;
#   1. `arc-jax bench inference` at the released shapes: the Llama 3.2 3B ARC encoder (PF 4)
#      and a Llama 3.1 8B decoder in bfloat16, full context vs compressed context, 1 and 100
#      generated tokens;
#   2. `arc-jax bench train --config C --profile OUT/trace_NAME` for each config C of TRAIN_CONFIGS (NAME its
#      file's stem): useful MFU of the pretraining step at the paper's shapes, on packed rows
#      (configs/bench_gpu_real_shapes.py), in attention rows (configs/bench_gpu_attention_rows.py),
#      and in attention rows with the layer stacks unrolled (configs/bench_gpu_unrolled.py).
#
#   bash launch/gpu_bench.sh [OUT]          (default arc_jax_runs/gpu_bench)
#
# Variables: PARTS (which of "tests inference train" to run, default all three: one device call
# may be too short for everything), GPU_TESTS (default: the five test files of step 0), CONTEXT_LENS ("1024 4096 16384"),
# NEW_TOKENS ("1 100"), REPEATS (3), TRAIN_CONFIGS (the three above), TRAIN_STEPS (5), ATTENTION (jax_nn: cuDNN flash attention),
# PYTHON (python3), INFERENCE_TIMEOUT / TRAIN_TIMEOUT (seconds per part, default none).
set -uo pipefail
# The train bench's step peaks at about 96 GiB on one GPU (configs/bench_gpu_real_shapes.py), close to
# JAX's default 75% of an H200 (100 GiB); its figures in the README were measured with 0.92.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
py=${PYTHON:-python3}
out=${1:-arc_jax_runs/gpu_bench}
parts=" ${PARTS:-tests inference train} "
for part in $parts; do
  case $part in tests|inference|train) ;;
    *) echo "gpu_bench.sh: PARTS has '$part': expected some of tests, inference, train" >&2; exit 2 ;;
  esac
done
mkdir -p "$out/inference"
"$py" - <<'PY' 2>&1 | tee "$out/environment.txt"
import importlib.metadata as md
import jax
print(", ".join(f"{p} {md.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")))
print(jax.devices())
PY
status=0
if [[ $parts == *" tests "* ]] && "$py" -c "import pytest" 2>/dev/null; then
  JAX_PLATFORMS=cuda "$py" -m pytest -p no:cacheprovider -n 0 -q ${GPU_TESTS:-tests/test_attention_gpu.py \
    tests/test_generate.py tests/test_api.py tests/test_decoder_parity.py tests/test_eval_harness.py} 2>&1 \
    | tee "$out/gpu_tests.log" || status=1
fi
if [[ $parts == *" inference "* ]]; then
  timeout "${INFERENCE_TIMEOUT:-0}" "$py" -m arc_jax bench inference --encoder-preset llama3.2-3b \
    --decoder-preset llama3.1-8b --pooling 4 --context-lens ${CONTEXT_LENS:-1024 4096 16384} \
    --new-tokens ${NEW_TOKENS:-1 100} --repeats "${REPEATS:-3}" --attention "${ATTENTION:-jax_nn}" \
    --out "$out/inference" 2>&1 \
    | tee "$out/inference.log" || status=1
fi
train_configs=${TRAIN_CONFIGS:-configs/bench_gpu_real_shapes.py configs/bench_gpu_attention_rows.py configs/bench_gpu_unrolled.py}
[[ $parts == *" train "* ]] || train_configs=""
for config in $train_configs; do
  name=$(basename "$config" .py)
  timeout "${TRAIN_TIMEOUT:-0}" "$py" -m arc_jax bench train --config "$config" --config.attention_impl="${ATTENTION:-jax_nn}" \
    --steps "${TRAIN_STEPS:-5}" --json "$out/train_$name.json" --profile "$out/trace_$name" 2>&1 | tee "$out/train_$name.log" || status=1
done
exit $status
