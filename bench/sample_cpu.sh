#!/usr/bin/env bash
# Group sampling on CPU: regrpo's sampler (Flex, release) vs transformers' generate, on the same
# model folder, prompt and settings, in one run.
#
#   bash scripts/fetch_smollm2.sh && regrpo model import ~/.cache/regrpo/models/SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2
#   PYTHON=<python with torch + transformers> bash bench/sample_cpu.sh --model models/smollm2 [--group 8 --prompt 256 --new 64 --runs 3]
#
# Prints each side's JSON line, then completions/s with the ratio regrpo / transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --example sample_bench
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
ours=$("$target/release/examples/sample_bench" "$@")
echo "$ours"
theirs=$("$py" bench/sample_torch.py "$@" 2>/dev/null)
echo "$theirs"
"$py" - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"completions/s  regrpo {o['completions_per_s']:.3f}  transformers {t['completions_per_s']:.3f}  ratio {o['completions_per_s'] / t['completions_per_s']:.2f}")
print(f"tokens/s       regrpo {o['tokens_per_s']:.1f}  transformers {t['tokens_per_s']:.1f}")
PY
