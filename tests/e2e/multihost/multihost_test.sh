#!/usr/bin/env bash
# Multi-host test (label e2e): a bitfleet cluster across "hosts" that are network namespaces on
# this machine, joined by veth links to a bridge (netns_cluster.sh). Nothing is shared between
# the ranks but that network: MPI runs over TCP only (btl self,tcp, pml ob1; no shared memory),
# and each host has its own hostname.
#
#   hosts   coord 10.231.0.1 (coordinator, mpirun, client), w0 .2 and w1 .3 (one rank each)
#   phase 1 `bitfleet run` at TP=2 with rank 0 on w0 and rank 1 on w1 prints exactly what one
#           process prints, and the activations really crossed w1's link.
#   phase 2 serving: coordinator on coord, a TP=2 worker group on w0+w1 started by mpirun, and
#           `bitfleet generate` from coord answers exactly what one process answers. Then w1's
#           link goes down mid-request: the request ends with UNAVAILABLE within a bounded
#           time, health reports NOT_SERVING, and the rank on w0 gives up on its peer within
#           the collective timeout; the link comes back, the group is restarted, and the
#           cluster serves the same answer again.
#
# Needs root (namespaces), iproute2 and Open MPI; exits 77 (skipped, with the reason) without
# them. Every namespace it made is removed on exit, on failure too. Env: BITFLEET_BIN (the
# binary; CTest sets it), BITFLEET_MULTIHOST_KEEP_LOGS=1 keeps the log folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$here/netns_cluster.sh"

skip() { echo "multihost: SKIPPED: $*"; exit 77; }
fail() { echo "multihost: FAILED: $*" >&2; exit 1; }
say() { echo "multihost: $*"; }

bin=${BITFLEET_BIN:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then skip "BITFLEET_BIN is not an executable bitfleet binary ('$bin')"; fi
[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v unshare >/dev/null || skip "unshare (util-linux) is not installed"
command -v mpirun >/dev/null || skip "Open MPI (mpirun) is not installed"
ldd "$bin" 2>/dev/null | grep -q 'libmpi' || skip "bitfleet was built without MPI (-DBITFLEET_MPI=OFF)"
probe_ns="bfprobe$$"
ip netns add "$probe_ns" 2>/dev/null || skip "cannot create network namespaces here (ip netns add failed)"
ip netns delete "$probe_ns"

work=$(mktemp -d /tmp/bitfleet-multihost.XXXXXX)
cleanup() {
  local rc=$?
  netns_cluster_down
  if [ "${BITFLEET_MULTIHOST_KEEP_LOGS:-0}" = 1 ] || [ "$rc" != 0 ]; then
    say "logs kept in $work"
  else
    rm -rf "$work"
  fi
  say "namespaces removed ($(ip netns list | grep -c "^bfmh$$-" || true) left)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cluster -------------------------------------------------------------------------------
netns_cluster_up "bfmh$$" coord w0 w1
subnet="$NETNS_SUBNET.0/24"
say "namespaces:"
netns_show

# mpirun on coord starts one rank on each of w0 and w1 through the namespace launch agent.
export BITFLEET_NETNS_PREFIX=$NETNS_PREFIX OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
printf 'w0 slots=1\nw1 slots=1\n' > "$work/hostfile"
# shellcheck disable=SC2054  # "self,tcp" is one argument
mpirun_flags=(--allow-run-as-root -np 2 --hostfile "$work/hostfile" --map-by node --bind-to none
  --mca plm_rsh_agent "$here/netns_launch_agent.sh" --mca plm_rsh_no_tree_spawn 1
  --mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet")
mpirun_across() {  # mpirun_across LIMIT_S CMD... : CMD as ranks 0 (w0) and 1 (w1)
  local limit=$1
  shift
  netns_exec coord timeout -s KILL "$limit" mpirun "${mpirun_flags[@]}" "$@"
}
rx_bytes() { ip netns exec "$NETNS_PREFIX-$1" cat /sys/class/net/eth0/statistics/rx_bytes; }

# --- the model: synthesized, so the test needs no download -------------------------------------
# F32 weights: TP=2 computes the same logits as one process up to float summation order
# (docs/sharding.md: within 1e-4), so greedy text must match exactly. Int8-activation types
# (TQ2_0, Q4_0, ...) are only held to a KL budget across TP degrees and may flip near-ties.
# 8 heads / 4 KV heads split evenly at TP=2; 8 layers and a 4096 context make a decode step
# slow enough for a long request to still be in flight when a link goes down.
model="$work/llama-f32.gguf"
"$bin" --log-level warn synth --arch llama --preset tiny --type f32 --n-embd 512 --n-head 8 \
  --n-head-kv 4 --n-ff 1536 --n-layer 8 --n-ctx 4096 --seed 7 -o "$model"
prompt="The cluster spans three hosts"

# --- phase 1: TP=2 across hosts equals one process ---------------------------------------------
run_flags=(--model "$model" --prompt "$prompt" -n 48 --temp 0 --threads 1)
say "phase 1: bitfleet run, one process"
timeout 120 "$bin" --log-level warn run "${run_flags[@]}" > "$work/run-single.txt" 2>/dev/null
before=$(rx_bytes w1)
say "phase 1: bitfleet run at TP=2, rank 0 on w0 ($(netns_host_ip w0)), rank 1 on w1 ($(netns_host_ip w1)), MPI over TCP"
mpirun_across 180 "$bin" --log-level warn run "${run_flags[@]}" > "$work/run-tp2.txt" 2> "$work/run-tp2.log" \
  || { cat "$work/run-tp2.log" >&2; fail "bitfleet run under mpirun across namespaces"; }
crossed=$(( $(rx_bytes w1) - before ))
grep -q "tensor parallel: 2 ranks (mpi)" "$work/run-tp2.log" \
  || fail "the ranks did not form one MPI group (is this binary built with BITFLEET_MPI=ON?)"
say "  one process: $(tr '\n' ' ' < "$work/run-single.txt")"
say "  TP=2:        $(tr '\n' ' ' < "$work/run-tp2.txt")"
cmp -s "$work/run-single.txt" "$work/run-tp2.txt" || fail "TP=2 across hosts differs from one process"
say "  identical; w1 received $crossed bytes over its link"
[ "$crossed" -gt 50000 ] || fail "too little traffic reached w1 ($crossed bytes): was the TP group really split?"

# --- phase 2: serving across hosts ------------------------------------------------------------
if ! "$bin" coordinator --help >/dev/null 2>&1 || ! "$bin" health --help >/dev/null 2>&1; then
  fail "this binary has no coordinator/health commands (serving is part of the multi-host test)"
fi
coord_ip=$(netns_host_ip coord)
api="$coord_ip:50051"
control="$coord_ip:50052"
heartbeat_timeout_ms=3000
collective_timeout_s=10
fail_bound_s=$((heartbeat_timeout_ms / 1000 + 7))   # link cut -> UNAVAILABLE / NOT_SERVING
leave_bound_s=$((collective_timeout_s + 10))        # link cut -> the surviving rank gives up

elapsed() { echo "$(( $(date +%s%N) / 1000000 - $1 ))"; }  # ms since a `date +%s%N`/1e6 stamp
now_ms() { echo "$(( $(date +%s%N) / 1000000 ))"; }
health() {  # health [SERVICE]: the coordinator's answer, asked from coord
  netns_exec coord "$bin" health --target "$api" --timeout 2 --service "${1:-}" || true
}
generate() {  # generate ARGS...: bitfleet generate against the coordinator, from coord
  netns_exec coord "$bin" generate --target "$api" --prompt "$prompt" --temp 0 "$@"
}
group_pid=""
start_group() {  # the TP=2 worker group: mpirun on coord, ranks on w0 and w1
  netns_exec coord mpirun "${mpirun_flags[@]}" "$bin" worker --coordinator "$control" \
    --model "$model" --threads 1 --collective-timeout "$collective_timeout_s" >> "$work/workers.log" 2>&1 &
  group_pid=$!
  disown "$group_pid"  # killed on purpose later: no job-control noise
}
worker_pids() {  # worker_pids HOST: pids of bitfleet processes on HOST
  local pid
  for pid in $(ip netns pids "$NETNS_PREFIX-$1"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = bitfleet ] && echo "$pid"
  done
  return 0
}

say "phase 2: coordinator on coord ($api, control $control, metrics :9090), TP=2 group on w0+w1"
netns_exec coord "$bin" coordinator --model "$model" --listen "0.0.0.0:50051" --control "0.0.0.0:50052" \
  --metrics-port 9090 --tp 2 --replicas 1 --heartbeat-timeout-ms "$heartbeat_timeout_ms" \
  > "$work/coordinator.log" 2>&1 &
disown $!  # ended with the namespaces
start_group
ready=$(netns_exec coord "$bin" health --target "$api" --wait 120 || true)
[ "$ready" = SERVING ] || { tail -20 "$work/coordinator.log" "$work/workers.log" >&2; fail "cluster not SERVING within 120 s ($ready)"; }
say "  health: '' $ready; replica-0 $(health bitfleet.v1.Inference/replica-0); control port (liveness) $(netns_exec coord "$bin" health --target "$control" || true)"
grep "worker registered" "$work/coordinator.log" | sed 's/^.*worker registered: /  registered: /; s/; kv.*//'
generate -n 48 > "$work/serve-1.txt" 2> "$work/serve-1.err" || { cat "$work/serve-1.err" >&2; fail "generate"; }
say "  generate over gRPC: $(tr '\n' ' ' < "$work/serve-1.txt")"
[ "$(cat "$work/serve-1.txt")" = "$(cat "$work/run-single.txt")" ] \
  || fail "the TP=2 cluster's answer differs from the single-process bitfleet run"
say "  identical to the single-process answer"

say "phase 2: cutting w1's link in the middle of a long request"
generate -n 1800 --ignore-eos > "$work/inflight.txt" 2> "$work/inflight.err" &
inflight_pid=$!
streamed() { stat -c %s "$work/inflight.txt" 2>/dev/null || echo 0; }
for _ in $(seq 200); do [ "$(streamed)" -ge 40 ] && break; sleep 0.1; done
[ "$(streamed)" -ge 40 ] || fail "the long request is not streaming"
cut_ms=$(now_ms)
netns_link_down w1
say "  $(date +%T) w1 eth0 down; the request is streaming ($(streamed) bytes so far)"
inflight_rc=0
wait "$inflight_pid" || inflight_rc=$?
ended_ms=$(elapsed "$cut_ms")
say "  in-flight request ended after ${ended_ms} ms, exit $inflight_rc: $(grep -o 'UNAVAILABLE.*' "$work/inflight.err" | head -1)"
if [ "$inflight_rc" = 0 ] || ! grep -q UNAVAILABLE "$work/inflight.err"; then
  fail "the in-flight request did not end with UNAVAILABLE"
fi
[ "$ended_ms" -le $((fail_bound_s * 1000)) ] || fail "UNAVAILABLE took ${ended_ms} ms (bound ${fail_bound_s} s)"
# Health follows the scheduler's view, which can trail the failed request by an iteration:
# poll, but only within the same bound from the cut.
while :; do
  overall=$(health)
  replica=$(health bitfleet.v1.Inference/replica-0)
  [ "$overall" = NOT_SERVING ] && [ "$replica" = NOT_SERVING ] && break
  [ "$(elapsed "$cut_ms")" -le $((fail_bound_s * 1000)) ] || break
  sleep 0.1
done
say "  health: '' $overall, replica-0 $replica ($(elapsed "$cut_ms") ms after the cut)"
if [ "$overall" != NOT_SERVING ] || [ "$replica" != NOT_SERVING ]; then
  fail "health still reports the replica as serving"
fi
grep "replica 0 failed" "$work/coordinator.log" | head -1 | sed 's/^.*error /  coordinator: /'
if generate -n 4 > /dev/null 2> "$work/outage.err"; then fail "a request was served with no healthy replica"; fi
say "  a new request meanwhile: $(grep -o 'UNAVAILABLE.*' "$work/outage.err" | head -1)"
# The rank on w0 must leave the broken group, by one of two paths depending on where the cut
# caught it: blocked in a collective with the cut-off rank, it gives up within the collective
# timeout; waiting for its next plan (the cut came after rank 1 finished the step's collectives
# but before its result reached the coordinator), it sees the coordinator end its control
# stream when the replica fails.
left_pattern='did not complete within|the control stream ended'
for _ in $(seq $((leave_bound_s * 10))); do
  grep -qE "$left_pattern" "$work/workers.log" && break
  sleep 0.1
done
grep -qE "$left_pattern" "$work/workers.log" \
  || fail "the rank on w0 did not report the broken group within ${leave_bound_s} s"
say "  the rank on w0 left the group after $(elapsed "$cut_ms") ms: $(grep -oE 'rank 0: .*did not complete within [0-9]* ms|the control stream ended.*' "$work/workers.log" | head -1)"
# ...and then exit non-zero so its launcher can restart the group (DESIGN.md §7).
for _ in $(seq 50); do [ -z "$(worker_pids w0)" ] && break; sleep 0.1; done
[ -z "$(worker_pids w0)" ] || fail "the rank on w0 did not exit after leaving the group"
say "  the rank on w0 exited"

say "phase 2: restoring w1's link and restarting the group"
# What a launcher does with a broken group: end what is left of it (mpirun, the Open MPI
# daemons and the cut-off rank on w1), then start it again.
mapfile -t leftovers < <(ip netns pids "$NETNS_PREFIX-w0"; ip netns pids "$NETNS_PREFIX-w1")
kill -KILL "$group_pid" "${leftovers[@]}" 2>/dev/null || true
netns_link_up w1
restart_ms=$(now_ms)
start_group
ready=$(netns_exec coord "$bin" health --target "$api" --wait 120 || true)
[ "$ready" = SERVING ] || { tail -20 "$work/coordinator.log" "$work/workers.log" >&2; fail "not SERVING again after the restart ($ready)"; }
say "  SERVING again $(elapsed "$restart_ms") ms after the restart"
generate -n 48 > "$work/serve-2.txt" 2> "$work/serve-2.err" || { cat "$work/serve-2.err" >&2; fail "generate after the restart"; }
say "  generate: $(tr '\n' ' ' < "$work/serve-2.txt")"
[ "$(cat "$work/serve-2.txt")" = "$(cat "$work/run-single.txt")" ] || fail "the answer after the restart differs"
say "  identical to the single-process answer"

say "PASSED"
