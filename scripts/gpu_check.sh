#!/usr/bin/env bash
# CUDA checks on a lent GPU machine, which has no Rust toolchain and no network.
#
#   bash scripts/gpu_check.sh build   # here: CUDA builds of examples/sft_bench and regrpo → gpu-bin/
#   bash scripts/gpu_check.sh run     # there (carry gpu-bin): parity on CUDA, then SFT
#                                     # throughput of a Qwen2.5-0.5B-shaped model in bf16 and f32,
#                                     # SmolLM2's shape full and LoRA, and the real SmolLM2 when
#                                     # its GGUF is on the machine (SMOLLM2_GGUF)
#
# The carry limit (64 MiB) is smaller than the SmolLM2 GGUF (94 MiB): the real-checkpoint part
# runs only where the file already is, and says it was skipped otherwise.
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
  CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000} cargo build --release --locked --features cuda --bin regrpo
  cp "${CARGO_TARGET_DIR:-target}/release/examples/sft_bench" "${CARGO_TARGET_DIR:-target}/release/regrpo" gpu-bin/
  # Debug line tables make the binaries too large to carry.
  strip gpu-bin/sft_bench gpu-bin/regrpo
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
  for lora in "" "--lora 8"; do
    echo "== SFT throughput, SmolLM2-135M shape, bf16, seq 1024, batch 8 ${lora:-(full)}"
    timeout 120 gpu-bin/sft_bench --backend cuda-bf16 --preset smollm2-135m --seq 1024 --batch 8 --steps 8 --warmup 3 $lora \
      --peak-tflops "${PEAK_BF16_TFLOPS:-989}" | tee -a "$out/smollm2_sft.json" || echo "run failed or timed out (rc $?)"
  done
  gguf=${SMOLLM2_GGUF:-$HOME/.cache/regrpo/models/SmolLM2-135M-Instruct.Q4_1.gguf}
  if [ -f "$gguf" ]; then
    echo "== the real SmolLM2: import, logits on CUDA vs CPU"
    gpu-bin/regrpo model import "$gguf" --out "$out/smollm2" | tee "$out/import.txt"
    python3 - "$out" <<'PY' || echo "no python/safetensors for the ids file: logits skipped"
import sys, numpy as np
from safetensors.numpy import save_file
save_file({"input_ids": np.array([[1, 504, 3458, 282, 4649, 314, 7042, 30, 216, 2]], dtype=np.int64)}, sys.argv[1] + "/ids.safetensors")
PY
    if [ -f "$out/ids.safetensors" ]; then
      for d in cpu cuda; do
        timeout 60 gpu-bin/regrpo model logits "$out/smollm2" --input "$out/ids.safetensors" --out "$out/logits_$d.safetensors" --device $d
      done
      python3 -c "
from safetensors.numpy import load_file; import numpy as np, sys
a, b = (load_file(sys.argv[1] + f'/logits_{d}.safetensors')['logits'] for d in ('cpu', 'cuda'))
print(f'max |cuda - cpu| logits: {np.abs(a - b).max():.2e}')" "$out" | tee "$out/logits_parity.txt"
    fi
  else
    echo "skipped: $gguf is absent (too large to carry; place it on the machine to run the real-checkpoint part)"
  fi
  ;;
*)
  echo "usage: bash scripts/gpu_check.sh build|run" >&2
  exit 2
  ;;
esac
