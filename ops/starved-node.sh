#!/usr/bin/env bash
# The rig behind docs/OVERLOAD.md's send curves: a node on a quarter of one
# core, the load generator on the other, and the node's CPU and send queue
# sampled every second. The node has to be slow for one generator core to
# offer it 10x its capacity in rooms of 500 (a node with a whole core fans
# out more deliveries than one core can receive).
#
#   ops/starved-node.sh OUT_DIR [loadtest args...]
#   ops/starved-node.sh /tmp/run1 overload --users 2000 --room-size 500 --rate 1.0 \
#       --multiples 1,10,1,10,1 --hatch-rate 500 --step-time 30s --settle 10s
#
# Environment: CONFIG (default ops/dialtone.toml), PORT (18500), NODE_BIN and
# LOADTEST_BIN (default target/release/...; build them with
# `cargo build --release -p dialtone -p loadtest`). Linux only (taskset).
#
# OUT_DIR gets node.log, loadtest's reports (summary.json ...) and trace.jsonl:
# one line a second with the node's CPU seconds (user, system, from /proc)
# and `GET /admin/regulator`. The node's CPU share is a quarter of core 0 on
# average, but in slices of the kernel's tick (4 ms at HZ=250): a starved
# node waits up to 12 ms for the CPU, which shows in every latency it reports.
set -euo pipefail

out=${1:?usage: ops/starved-node.sh OUT_DIR [loadtest args...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
config=${CONFIG:-$root/ops/dialtone.toml}
port=${PORT:-18500}
node_bin=${NODE_BIN:-$root/target/release/dialtone}
loadtest_bin=${LOADTEST_BIN:-$root/target/release/loadtest}
secret=starved-node-secret
admin=starved-node-admin
mkdir -p "$out"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

# nice -5 against the node's 0: CFS weights 3121 and 1024, so the node gets
# 1024 / 4145 of the core, about 0.25, whenever both want it.
taskset -c 0 nice -n -5 sh -c 'while :; do :; done' &
pids+=($!)

DIALTONE_GATEWAY__LISTEN=127.0.0.1:$port DIALTONE_AUTH__JWT_SECRET=$secret \
  DIALTONE_ADMIN__TOKEN=$admin RUST_LOG=${RUST_LOG:-warn} \
  taskset -c 0 "$node_bin" serve --config "$config" >"$out/node.log" 2>&1 &
node=$!
pids+=("$node")
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done

tick=$(getconf CLK_TCK)
start=$(date +%s.%N)
(
  while kill -0 "$node" 2>/dev/null; do
    # Fields 14 and 15 of /proc/PID/stat, counted after the command name.
    read -r utime stime < <(sed 's/.*) //' "/proc/$node/stat" | awk '{print $12, $13}')
    queues=$(curl -sf -m 2 -H "authorization: Bearer $admin" \
      "http://127.0.0.1:$port/admin/regulator" || echo null)
    awk -v now="$(date +%s.%N)" -v start="$start" -v u="$utime" -v s="$stime" -v hz="$tick" \
      'BEGIN { printf "{\"t\":%.2f,\"user_s\":%.2f,\"system_s\":%.2f,", now - start, u / hz, s / hz }'
    printf '"regulator":%s}\n' "$queues"
    sleep 1
  done
) >"$out/trace.jsonl" &
pids+=($!)

cd "$out"
profile=${1:?a loadtest profile, e.g. overload}
shift
DIALTONE_AUTH__JWT_SECRET=$secret taskset -c 1 "$loadtest_bin" "$profile" \
  --host "ws://127.0.0.1:$port/ws" --node-pid "$node" "$@"
