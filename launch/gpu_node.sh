#!/usr/bin/env bash
# Train on one GPU node (1-8 GPUs): one process drives every visible GPU.
#
# Usage (from anywhere; the repository is this script's parent folder):
#   CONFIG=configs/pretrain_arc8_llama3.py WORKDIR=/data/arc_jax/runs/pretrain_arc8_llama3 launch/gpu_node.sh
#   NUM_GPUS=4 CONFIG=... WORKDIR=... EXTRA_ARGS="--config.data.dir=/mnt/arc_jax" launch/gpu_node.sh
#
# Environment:
#   CONFIG                 config file, relative to the repository or absolute (required)
#   WORKDIR                run folder: created, resumed when it holds checkpoints (required)
#   EXTRA_ARGS             more `arc-jax train` arguments, e.g. "--config.max_steps=1000 --log-every 10"
#   NUM_GPUS               GPUs to use (default: every GPU nvidia-smi lists); sets CUDA_VISIBLE_DEVICES
#                          to 0..NUM_GPUS-1 unless CUDA_VISIBLE_DEVICES is already set
#   CUDA_VISIBLE_DEVICES   the GPUs to use (default: see NUM_GPUS); NUM_GPUS is then its count
#   XLA_FLAGS              extra XLA flags, appended after this script's GPU defaults (listed below)
#   DEFAULT_XLA_FLAGS      1 (default) adds the GPU defaults below; 0 leaves XLA_FLAGS as given
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of GPU memory JAX preallocates (default here 0.90; JAX's is 0.75)
#   VENV                   virtualenv to activate (default: <repository>/.venv when it exists)
#   DRY_RUN                1: print the command and environment, run nothing
#
# The config's batch rows are split over the GPUs: config.data.shape's encoder_rows and decoder_rows
# must be multiples of the GPU count (the paper configs' are multiples of 8; with 4 or 2 GPUs each
# GPU takes more rows, so memory may call for --config.grad_accum / smaller rows).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${CONFIG:?set CONFIG to a config file, e.g. configs/pretrain_arc8_llama3.py}"
: "${WORKDIR:?set WORKDIR to the run folder}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
DEFAULT_XLA_FLAGS="${DEFAULT_XLA_FLAGS:-1}"
DRY_RUN="${DRY_RUN:-0}"

cd "$REPO"
VENV="${VENV:-$REPO/.venv}"
if [[ -f "$VENV/bin/activate" ]]; then
  echo "[gpu_node] activating $VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi

if [[ -z "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  if [[ -z "${NUM_GPUS:-}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      NUM_GPUS="$(nvidia-smi -L | grep -c '^GPU ')"
    else
      echo "[gpu_node] nvidia-smi not found: set NUM_GPUS or CUDA_VISIBLE_DEVICES" >&2
      exit 1
    fi
  fi
  if ! [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "[gpu_node] NUM_GPUS=$NUM_GPUS: expected a positive integer" >&2
    exit 1
  fi
  CUDA_VISIBLE_DEVICES="$(seq -s, 0 $((NUM_GPUS - 1)))"
else
  NUM_GPUS="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)"
fi
export CUDA_VISIBLE_DEVICES

# GPU defaults: overlap collectives with compute (latency-hiding scheduler, pipelined FSDP
# all-gathers / reduce-scatters, double-buffered layer loops), bigger collective buckets, and
# cuBLAS rather than Triton for matmuls. Checked against jaxlib 0.10; XLA aborts on an unknown
# flag, so set DEFAULT_XLA_FLAGS=0 (and pass your own XLA_FLAGS) if a later jaxlib drops one.
GPU_XLA_FLAGS=(
  --xla_gpu_enable_latency_hiding_scheduler=true
  --xla_gpu_enable_pipelined_all_gather=true
  --xla_gpu_enable_pipelined_reduce_scatter=true
  --xla_gpu_enable_while_loop_double_buffering=true
  --xla_gpu_all_gather_combine_threshold_bytes=134217728
  --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728
  --xla_gpu_all_reduce_combine_threshold_bytes=134217728
  --xla_gpu_enable_triton_gemm=false
)
if [[ "$DEFAULT_XLA_FLAGS" == "1" ]]; then
  XLA_FLAGS="${GPU_XLA_FLAGS[*]} ${XLA_FLAGS:-}"
fi
export XLA_FLAGS="${XLA_FLAGS:-}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"

# EXTRA_ARGS is split on spaces on purpose: it holds several arguments.
# shellcheck disable=SC2206
CMD=(arc-jax train --config "$CONFIG" --workdir "$WORKDIR" $EXTRA_ARGS)

echo "[gpu_node] repository: $REPO"
echo "[gpu_node] $NUM_GPUS GPU(s): CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
echo "[gpu_node] XLA_FLAGS=$XLA_FLAGS"
echo "[gpu_node] XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION"
echo "[gpu_node] running: ${CMD[*]}"
if [[ "$DRY_RUN" == "1" ]]; then
  echo "[gpu_node] DRY_RUN=1: not running"
  exit 0
fi
exec "${CMD[@]}"
