#!/usr/bin/env bash
# CUDA checks on a lent GPU machine, which has no Rust toolchain and no network.
#
#   bash scripts/gpu_check.sh build   # here: the CUDA build of examples/sft_bench → gpu-bin/
#   bash scripts/gpu_check.sh run     # there (carry gpu-bin): parity on CUDA, then SFT
#                                     # throughput of a Qwen2.5-0.5B-shaped model in bf16 and f32
#
# burn 0.21's `cuda` feature loads libcuda and NVRTC at run time; CUDARC_CUDA_VERSION pins the
# CUDA API the bindings target (the lent machines run CUDA 13.0). Results go to $OUT (or
# gpu-out/). MFU is against PEAK_BF16_TFLOPS / PEAK_F32_TFLOPS (defaults: H100 SXM dense,
# 989 and 67; H200 has the same peaks — adjust for a PCIe card).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
build)
  CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000} cargo build --release --locked --features cuda --example sft_bench
  mkdir -p gpu-bin
  cp "${CARGO_TARGET_DIR:-target}/release/examples/sft_bench" gpu-bin/
  ls -l gpu-bin/
  ;;
run)
  out=${OUT:-gpu-out}
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
  echo "== parity on CUDA (f32): logits vs transformers, tiny fixture"
  timeout 120 gpu-bin/sft_bench --backend cuda --parity trainer/tests/fixtures/tiny-qwen2 | tee "$out/parity.json"
  echo "== SFT throughput, Qwen2.5-0.5B shape, bf16, seq 1024, batch 8"
  timeout 240 gpu-bin/sft_bench --backend cuda-bf16 --preset qwen2.5-0.5b --seq 1024 --batch 8 --steps 8 --warmup 3 \
    --peak-tflops "${PEAK_BF16_TFLOPS:-989}" | tee "$out/sft_bf16.json" || echo "bf16 run failed or timed out (rc $?)"
  echo "== SFT throughput, Qwen2.5-0.5B shape, f32, seq 1024, batch 4"
  timeout 180 gpu-bin/sft_bench --backend cuda --preset qwen2.5-0.5b --seq 1024 --batch 4 --steps 5 --warmup 2 \
    --peak-tflops "${PEAK_F32_TFLOPS:-67}" | tee "$out/sft_f32.json" || echo "f32 run failed or timed out (rc $?)"
  ;;
*)
  echo "usage: bash scripts/gpu_check.sh build|run" >&2
  exit 2
  ;;
esac
