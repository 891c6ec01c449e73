#!/usr/bin/env bash
# SFT steps/s on CPU: the Burn trainer on both CPU backends (NdArray and Flex, release) vs
# PyTorch CPU on the same model shape, batch and step (forward, masked loss, backward,
# global-norm clip, AdamW), in one run.
#
#   PYTHON=<python with torch + transformers (+ peft for --lora)> bash bench/sft_cpu.sh [flags for both sides]
#
#   bash bench/sft_cpu.sh                                          # 4 layers, hidden 256, seq 256, batch 8, vocab 8192
#   bash bench/sft_cpu.sh --preset smollm2-135m --seq 512 --batch 2 --steps 4 --warmup 1
#   bash bench/sft_cpu.sh --preset smollm2-135m --seq 512 --batch 2 --steps 4 --warmup 1 --lora 8
#
# Defaults: 10 timed steps after 2 warm-up. Every side uses every core. Prints each side's JSON
# line, then a table of steps/s and tokens/s with each Burn backend's ratio to PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --example sft_bench
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
ndarray=$("$target/release/examples/sft_bench" --backend ndarray "$@")
echo "$ndarray"
flex=$("$target/release/examples/sft_bench" --backend flex "$@")
echo "$flex"
torch=$("$py" bench/sft_torch.py "$@" 2>/dev/null)
echo "$torch"
"$py" - "$ndarray" "$flex" "$torch" <<'PY'
import json, sys
sides = [json.loads(s) for s in sys.argv[1:]]
t = sides[-1]
for s in sides[:-1]:
    assert s["params"] == t["params"], f"shapes differ: {s['params']} vs {t['params']} parameters"
print(f"{'system':<16} {'steps/s':>8} {'tokens/s':>9} {'forward s':>9} {'vs PyTorch':>10}")
for name, s in zip(["burn ndarray", "burn flex", "pytorch"], sides):
    print(f"{name:<16} {s['steps_per_s']:>8.3f} {s['tokens_per_s']:>9.1f} {s['forward_s']:>9.3f} {s['steps_per_s'] / t['steps_per_s']:>9.2f}x")
PY
