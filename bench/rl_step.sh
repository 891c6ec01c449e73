#!/usr/bin/env bash
# A ReGRPO step on CPU, before and after: completions sampled per second and the step's split
# (sample / execute / update) of this build against another binary (BASE: a release build of an
# earlier commit), on the same repository, policy and settings, in one run; then this build's
# sampler against transformers' `generate` on the same policy (bench/sample_cpu.sh's pattern).
#
#   BASE=<old regrpo binary> PYTHON=<python with torch + transformers> bash bench/rl_step.sh \
#       [--from DEMO_DIR] [--steps 6] [--group 16] [--states 4]
#
# DEMO_DIR is a finished `regrpo demo` folder (its repository, snapshot `demo-v1` and the RoT
# SFT policy `runs/sft-rot/model`, the demo's ReGRPO starting point). Without it a small one is
# made here (toolworld tasks, engine, snapshot, tokenizer, a short RoT SFT), which takes minutes.
# Both binaries run with the same flags: groups chosen by reward variance and failure states
# drawn among all (the old binary's only behaviour), so they do the same kind of work. The old
# binary self-checks every state before its first step (outside the steps' split, inside its
# whole-run time); the new one self-checks the states it draws, inside `exec_s`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-target}
from="" steps=6 group=16 states=4
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --group) group=$2; shift 2 ;;
    --states) states=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet --bin regrpo --example sample_bench
new="$target/release/regrpo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

window=(--max-prompt-tokens 8192 --max-target-tokens 224 --system-tokens 160 --task-tokens 96 --observation-tokens 192)
if [ -z "$from" ]; then
  from="$work/world"
  repo="$from/repo"
  echo "making a small world in $from (pass --from DEMO_DIR to use a demo's)"
  "$new" --quiet init "$repo" >/dev/null
  "$new" --quiet toolworld generate "$repo" --tasks 800 --seed 7 >/dev/null
  "$new" --quiet engine run "$repo" --seed 7 >/dev/null
  "$new" --quiet snapshot create "$repo" demo-v1 >/dev/null
  mkdir -p "$from/runs" && "$new" --quiet train tokenizer "$repo" -s demo-v1 "$from/runs/tokenizer.json" >/dev/null
  "$new" --quiet train sft "$repo" -s demo-v1 --model tiny:64x2x2 --tokenizer "$from/runs/tokenizer.json" \
    --out "$from/runs/sft-rot" --steps 600 --batch-size 8 --lr 1e-2 --warmup 20 --rot-fraction 0 --rot-extra 8 \
    --source toolworld --eval-every 0 --checkpoint-every 600 --seed 7 "${window[@]}" >/dev/null
fi
repo="$from/repo"
policy="$from/runs/sft-rot/model"

# The same job for both binaries.
job=(train regrpo "$repo" -s demo-v1 --model "$policy" --source toolworld "${window[@]}"
     --steps "$steps" --group-size "$group" --states "$states" --max-draws $((states * 3)) --failure-fraction 0.5
     --lr 1e-4 --eta 0.1 --beta 0.04 --temperature 1 --top-p 1 --max-new-tokens 224 --seed 7)

# Reads a run's metrics.csv: steps, completions sampled, and the mean seconds per step of each part.
summary() {
  "$py" - "$1" "$group" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/metrics.csv")))
g = int(sys.argv[2])
per = {}
for r in rows:
    per.setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
steps = sorted(per)
tot = lambda k: sum(per[s].get(k, 0.0) for s in steps)
completions = g * (tot("groups") + tot("skipped_groups"))
sample, execute, update = tot("sample_s"), tot("exec_s"), tot("update_s")
print(json.dumps({
    "steps": len(steps), "completions": completions,
    "completions_per_s": completions / sample, "step_s": (sample + execute + update) / len(steps),
    "sample_s": sample / len(steps), "exec_s": execute / len(steps), "update_s": update / len(steps),
}))
PY
}

run_side() { # name binary extra-flags...
  local name=$1 bin=$2; shift 2
  local t0 t1
  t0=$(date +%s%N)
  "$bin" --quiet "${job[@]}" --out "$work/$name" "$@" >/dev/null
  t1=$(date +%s%N)
  local s
  s=$(summary "$work/$name")
  echo "$name: $s, whole run $(( (t1 - t0) / 1000000 )) ms"
  echo "$s" >"$work/$name.json"
}

if [ -n "${BASE:-}" ]; then
  run_side before "$BASE"
fi
run_side after "$new" --filter reward --all-failures
if [ -n "${BASE:-}" ]; then
  "$py" - "$work/before.json" "$work/after.json" <<'PY'
import json, sys
b, a = (json.load(open(p)) for p in sys.argv[1:3])
print(f"completions/s  before {b['completions_per_s']:.1f}  after {a['completions_per_s']:.1f}  ratio {a['completions_per_s'] / b['completions_per_s']:.2f}")
print(f"step time (s)  before {b['step_s']:.2f}  after {a['step_s']:.2f}  ratio {b['step_s'] / a['step_s']:.2f}")
for k in ["sample_s", "exec_s", "update_s"]:
    print(f"  {k:<9} before {b[k]:.2f}  after {a[k]:.2f}")
PY
else
  echo "(set BASE to an older regrpo binary for the before/after ratio)"
fi

# The sampler against transformers' generate on the policy itself (one prompt, G completions).
ours=$("$target/release/examples/sample_bench" --model "$policy" --group "$group" --prompt 800 --new 128 --runs 3)
echo "regrpo sampler: $ours"
if theirs=$("$py" bench/sample_torch.py --model "$policy" --group "$group" --prompt 800 --new 128 --runs 3 2>/dev/null); then
  echo "transformers:   $theirs"
  "$py" - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"sampling completions/s  regrpo {o['completions_per_s']:.2f}  transformers {t['completions_per_s']:.2f}  ratio {o['completions_per_s'] / t['completions_per_s']:.2f}")
PY
else
  echo "transformers: not run ($py has no torch + transformers)"
fi
