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
# Environment: STEAL (below), CONFIG (default ops/dialtone.toml), PORT (18500), NODE_BIN and
# LOADTEST_BIN (default target/release/...; build them with
# `cargo build --release -p dialtone -p loadtest`). Linux only (taskset).
#
# OUT_DIR gets node.log, loadtest's reports (summary.json ...) and trace.jsonl:
# one line a second with the node's CPU seconds (user, system, from /proc),
# its door refusals of sends (all, and those written within 1 ms of their
# frame's read, from /metrics; absent when it did not answer within 2 s)
# and `GET /admin/regulator` (null then).
#
# How the other three quarters of core 0 are taken (STEAL):
#   fine (default)  a SCHED_FIFO loop that spins 750 us and sleeps 250 us: the
#                   node runs in 0.25 ms slices and never waits more than about
#                   0.8 ms for the CPU, like a node with a quarter core of its own.
#   tick            a nice -5 busy loop (the rig before 2026-11-25): the same
#                   quarter on average, but in slices of the kernel's tick
#                   (4 ms at HZ=250), so the node waits up to 12 ms for the CPU,
#                   which shows in every latency it reports.
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
# Waits for them too: the node drains on SIGTERM and holds its port until
# it exits, so a run started right after would find the old node there.
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT

case ${STEAL:-fine} in
  # A real-time task preempts the node the moment it wakes and yields when it
  # sleeps, so the node's share is the sleep's, in pieces of the sleep's length.
  fine)
    # shellcheck disable=SC2016 # perl's variables, not the shell's
    taskset -c 0 chrt -f 1 perl -MTime::HiRes=time,usleep -e \
      'while (1) { my $t = time + 0.00075; 1 while time < $t; usleep(250) }' &
    ;;
  # nice -5 against the node's 0: CFS weights 3121 and 1024, so the node gets
  # 1024 / 4145 of the core, about 0.25, whenever both want it.
  tick) taskset -c 0 nice -n -5 sh -c 'while :; do :; done' & ;;
  *) echo "STEAL must be fine or tick" >&2; exit 2 ;;
esac
pids+=($!)

DIALTONE_GATEWAY__LISTEN=127.0.0.1:$port DIALTONE_AUTH__JWT_SECRET=$secret \
  DIALTONE_ADMIN__TOKEN=$admin RUST_LOG=${RUST_LOG:-warn} \
  taskset -c 0 "$node_bin" serve --config "$config" >"$out/node.log" 2>&1 &
node=$!
pids+=("$node")
for _ in $(seq 50); do
  kill -0 "$node" 2>/dev/null || break
  curl -sf -m 1 "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
# A node that could not start (the port taken) must not leave another to
# answer the health check and be measured in its place.
if ! kill -0 "$node" 2>/dev/null; then
  echo "the node exited; see $out/node.log" >&2
  exit 1
fi

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
    # Door refusals of sends (the frame read to the refusal written), and
    # how many of them took at most 1 ms. Left out of the line when
    # /metrics does not answer in time (an overloaded node): zeros would
    # read as counters reset, and a failed pipeline would end this loop.
    refusals=$(curl -sf -m 2 "http://127.0.0.1:$port/metrics" | awk '
      /^dialtone_refusal_seconds_bucket\{type="send",waited="false",le="0.001"\}/ { fast = $2 }
      /^dialtone_refusal_seconds_count\{type="send",waited="false"\}/ { all = $2 }
      END { printf "\"door_refusals\":%d,\"door_refusals_1ms\":%d,", all, fast }') || refusals=""
    printf '%s"regulator":%s}\n' "$refusals" "$queues"
    sleep 1
  done
) >"$out/trace.jsonl" &
pids+=($!)

cd "$out"
profile=${1:?a loadtest profile, e.g. overload}
shift
DIALTONE_AUTH__JWT_SECRET=$secret taskset -c 1 "$loadtest_bin" "$profile" \
  --host "ws://127.0.0.1:$port/ws" --node-pid "$node" "$@"
