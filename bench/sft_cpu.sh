#!/usr/bin/env bash
# SFT steps/s on CPU: the Burn trainer (NdArray backend, release) vs PyTorch CPU on the same
# Qwen2 shape, batch and step (forward, masked loss, backward, global-norm clip, AdamW).
#
#   PYTHON=<venv with torch + transformers> bash bench/sft_cpu.sh [extra flags for both sides]
#
# Defaults: 4 layers, hidden 256, seq 256, batch 8, vocab 8192, 10 timed steps after 2 warm-up.
# Both sides use every core. Prints each side's JSON line, then the ratio Burn / PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --example sft_bench
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
burn=$("$target/release/examples/sft_bench" "$@")
echo "$burn"
torch=$("$py" bench/sft_torch.py "$@" 2>/dev/null)
echo "$torch"
"$py" - "$burn" "$torch" <<'PY'
import json, sys
b, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert b["params"] == t["params"], f"shapes differ: {b['params']} vs {t['params']} parameters"
print(f"steps/s   burn {b['steps_per_s']:.3f}  pytorch {t['steps_per_s']:.3f}  ratio {b['steps_per_s'] / t['steps_per_s']:.2f}")
print(f"forward s burn {b['forward_s']:.3f}  pytorch {t['forward_s']:.3f}  ratio {t['forward_s'] / b['forward_s']:.2f}")
print(f"matmul    burn {b['matmul_gflops']:.1f} GFLOP/s  pytorch {t['matmul_gflops']:.1f} GFLOP/s")
PY
