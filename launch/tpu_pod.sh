#!/usr/bin/env bash
# Train on a Cloud TPU VM or pod slice: create it (or reuse it), copy this repository to every
# worker, install it, and start `arc-jax train` on all workers at once (one process per host; the
# trainer's jax.distributed.initialize() finds the other hosts by itself on TPU).
#
# Usage (from a machine with gcloud, authenticated, in this repository's checkout):
#   TPU_NAME=arc-v5p ZONE=us-east5-a ACCELERATOR_TYPE=v5p-64 RUNTIME_VERSION=v2-alpha-tpuv5 \
#   CONFIG=configs/pretrain_arc8_llama3.py WORKDIR=gs://my-bucket/runs/pretrain_arc8_llama3 \
#   EXTRA_ARGS="--config.data.dir=/mnt/disks/arc_jax" launch/tpu_pod.sh
#
# Environment:
#   TPU_NAME          TPU VM / pod slice name (required); reused when it exists, created otherwise
#   ZONE              its zone, e.g. us-east5-a (required)
#   PROJECT           Google Cloud project (default: gcloud's configured project)
#   ACCELERATOR_TYPE  for creation, e.g. v4-32, v5p-64, v5litepod-16 (default v4-32)
#   RUNTIME_VERSION   for creation, the TPU software version: tpu-ubuntu2204-base (v4),
#                     v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite (v5e) (default tpu-ubuntu2204-base)
#   CREATE_ARGS       more `gcloud compute tpus tpu-vm create` flags, e.g. "--spot"
#   CONFIG            config file, relative to the repository (required)
#   WORKDIR           run folder every host can write, normally gs://bucket/path (required)
#   EXTRA_ARGS        more `arc-jax train` arguments, after this script's --config.attention_impl=splash
#                     (a later override wins), e.g. "--config.data.dir=/mnt/disks/arc_jax"
#   REMOTE_DIR        where the code goes on each worker (default: arc_jax, in the login's home)
#   PYTHON            interpreter for the workers' virtualenv (default python3.11: arc_jax needs >= 3.11
#                     and the Ubuntu 22.04 TPU images ship 3.10; it is apt-installed when missing)
#   SKIP_INSTALL      1: reuse the workers' existing virtualenv (code is still copied)
#   DETACH            1: start training under nohup (log: REMOTE_DIR/train.log on each worker) and
#                     return; default 0 streams every worker's output here until training ends
#   DRY_RUN           1: print the gcloud commands, run nothing
#   SKIP_PLAN         1: do not compile the run here first (by default `arc-jax plan` compiles the
#                     config for ACCELERATOR_TYPE on this machine, without the TPU, and the script
#                     stops before creating or using the TPU when the run does not fit its HBM;
#                     it needs arc_jax installed here with the tpu extra: pip install -e ".[tpu]")
#
# Every path in the config (data.dir, init_encoder, decoders' path) must be readable from every
# worker: a gs:// bucket or a disk attached to all of them. Batch rows must be multiples of the
# chip count (data x fsdp): a v5p-64 has 32 chips, so the paper's 32-row pretraining shape fits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
: "${CONFIG:?set CONFIG to a config file, e.g. configs/pretrain_arc8_llama3.py}"
: "${WORKDIR:?set WORKDIR, e.g. gs://bucket/runs/name}"
PROJECT="${PROJECT:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CREATE_ARGS="${CREATE_ARGS:-}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
REMOTE_DIR="${REMOTE_DIR:-arc_jax}"
PYTHON="${PYTHON:-python3.11}"
SKIP_INSTALL="${SKIP_INSTALL:-0}"
DETACH="${DETACH:-0}"
DRY_RUN="${DRY_RUN:-0}"

if [[ ! -f "$REPO/$CONFIG" ]]; then
  echo "[tpu_pod] $REPO/$CONFIG: no such config file (CONFIG is relative to the repository)" >&2
  exit 1
fi

GCLOUD_FLAGS=(--zone "$ZONE")
if [[ -n "$PROJECT" ]]; then
  GCLOUD_FLAGS+=(--project "$PROJECT")
fi

run() {
  echo "[tpu_pod] \$ $*"
  if [[ "$DRY_RUN" != "1" ]]; then
    "$@"
  fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command "$1"
}

# 0. Will the run fit? Compile it for the accelerator here, before any TPU time is spent.
if [[ "${SKIP_PLAN:-0}" != "1" ]]; then
  plan_args=(--config "$REPO/$CONFIG" --topology "$ACCELERATOR_TYPE" --config.attention_impl=splash)
  for arg in $EXTRA_ARGS; do  # only the config overrides: the other train flags mean nothing to plan
    if [[ "$arg" == --config.* ]]; then
      plan_args+=("$arg")
    fi
  done
  echo "[tpu_pod] \$ arc-jax plan ${plan_args[*]}"
  if ! TPU_SKIP_MDS_QUERY=1 JAX_PLATFORMS=cpu arc-jax plan "${plan_args[@]}"; then
    echo "[tpu_pod] stopping: arc-jax plan did not find that the run fits $ACCELERATOR_TYPE (see above;" \
         "SKIP_PLAN=1 launches anyway)" >&2
    exit 1
  fi
fi

# 1. The TPU: reuse it, or create it.
if [[ "$DRY_RUN" != "1" ]] && gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}" >/dev/null 2>&1; then
  echo "[tpu_pod] reusing TPU $TPU_NAME in $ZONE"
else
  echo "[tpu_pod] creating TPU $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION) in $ZONE"
  # CREATE_ARGS holds several flags: split on spaces on purpose.
  # shellcheck disable=SC2086
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type "$ACCELERATOR_TYPE" --version "$RUNTIME_VERSION" $CREATE_ARGS
fi

# 2. The code: the files git tracks plus new files it does not ignore (no .venv, runs, caches).
PACK_DIR="$(mktemp -d)"
trap 'rm -rf "$PACK_DIR"' EXIT
ARCHIVE="$PACK_DIR/arc_jax_code.tar.gz"
echo "[tpu_pod] packing the repository into $ARCHIVE"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | tar -czf "$ARCHIVE" --ignore-failed-read --null -T -)
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME:arc_jax_code.tar.gz" "${GCLOUD_FLAGS[@]}" --worker=all
on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf arc_jax_code.tar.gz -C $REMOTE_DIR && rm arc_jax_code.tar.gz"

# 3. The environment: a virtualenv with the project and jax[tpu] on every worker.
if [[ "$SKIP_INSTALL" != "1" ]]; then
  on_all_workers "(command -v $PYTHON >/dev/null || (sudo apt-get update -qq \
&& sudo apt-get install -y -qq $PYTHON $PYTHON-venv)) && cd $REMOTE_DIR && $PYTHON -m venv .venv \
&& . .venv/bin/activate && pip install -q -U pip \
&& pip install -q -e '.[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi

# 4. Training, on every worker at once (the hosts wait for each other in jax.distributed.initialize).
TRAIN="arc-jax train --config $CONFIG --workdir $WORKDIR --config.attention_impl=splash $EXTRA_ARGS"
echo "[tpu_pod] training: $TRAIN"
if [[ "$DETACH" == "1" ]]; then
  on_all_workers "cd $REMOTE_DIR && . .venv/bin/activate && nohup $TRAIN > train.log 2>&1 < /dev/null &"
  echo "[tpu_pod] started; follow with: gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=0 \
--command 'tail -f $REMOTE_DIR/train.log'"
else
  on_all_workers "cd $REMOTE_DIR && . .venv/bin/activate && $TRAIN"
fi
