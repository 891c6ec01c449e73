#!/usr/bin/env bash
# The Flight SQL server under load and abuse: `regrpo serve` over TLS (the test certificate in
# fixtures/tls) on a 2,000-task toolworld repository, 64 clients for 30 s (examples/serve_load.rs),
# each running the library's named queries without parameters and, two queries in eight, a hash
# join past the server's memory limit and a scan past its deadline. Every answer is checked (named
# queries against one client's answer before the load, abusive ones for a clean error of their
# kind); the run fails on a wrong answer or an unexpected error. Prints the example's JSON line
# (latency p50 / p99 by kind, queries/s, outcomes by kind), the same load without the abusive
# queries, and the server's peak RSS over both, which must stay under SERVE_LOAD_MAX_RSS_MIB
# (default 1024).
#
#   bash bench/serve_load.sh [CLIENTS] [SECONDS]      (defaults 64 and 30)
#
# SERVE_LOAD_CLIENT=path runs a client built elsewhere (a debug build of the example, when the
# release build of the examples' dev-dependencies is not at hand); the server is always release.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}
seconds=${2:-30}
work=${BENCH_DIR:-/tmp/regrpo-bench-serve}
target=${CARGO_TARGET_DIR:-target}
if [ -n "${SERVE_LOAD_CLIENT:-}" ]; then
  cargo build --release --quiet --bin regrpo
  client=$SERVE_LOAD_CLIENT
else
  cargo build --release --quiet --bin regrpo --example serve_load
  client=$target/release/examples/serve_load
fi
bin=$target/release/regrpo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [ ! -f "$work/.done" ]; then
  rm -rf "$work"; mkdir -p "$work"
  "$bin" --quiet init "$work/repo"
  "$bin" --quiet toolworld generate "$work/repo" --tasks 2000 --seed 1
  "$bin" --quiet engine run "$work/repo" --seed 1
  "$bin" --quiet snapshot create "$work/repo" v1
  touch "$work/.done"
fi
echo "serve-load-token-$$" > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve "$work/repo" --snapshot v1 --addr "127.0.0.1:$port" --token-file "$work/token" \
  --tls-cert fixtures/tls/server.pem --tls-key fixtures/tls/server.key \
  --max-query-memory 64 --query-timeout 5 2> "$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "serving" "$work/serve.log" && break; sleep 0.1; done
echo "server: $(head -1 "$work/serve.log")"
"$client" "127.0.0.1:$port" "$(cat "$work/token")" "$clients" "$seconds" fixtures/tls/ca.pem
echo "the same load without the abusive queries:"
"$client" "127.0.0.1:$port" "$(cat "$work/token")" "$clients" "$seconds" fixtures/tls/ca.pem --no-abuse
kill -0 "$server" || { echo "the server died"; cat "$work/serve.log"; exit 1; }
# The bound the server promises under this load: its caches, plus two queries (one per core) at
# their 64 MiB limit each, far inside 1 GiB.
bound_mib=${SERVE_LOAD_MAX_RSS_MIB:-1024}
peak_mib=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$server/status)
echo "server peak RSS: $peak_mib MiB (bound $bound_mib MiB), now $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$server/status); still serving: yes"
[ "$peak_mib" -le "$bound_mib" ] || { echo "the server's peak RSS passed its bound"; exit 1; }
