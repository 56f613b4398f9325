#!/bin/sh
# Starts one `bitfleet worker` rank on Kubernetes (deploy/k8s), working out which rank of which
# replica (TP group) this pod is:
#   - LeaderWorkerSet (overlays/gpu-lws): LWS_WORKER_INDEX is the rank, LWS_GROUP_INDEX the
#     replica, LWS_GROUP_SIZE the TP degree.
#   - StatefulSet (base): the pod ordinal o gives replica o / BITFLEET_TP, rank o % BITFLEET_TP:
#     pods 0..N-1 are replica 0, N..2N-1 replica 1, ..., so scaling the StatefulSet by
#     multiples of N adds or removes whole groups. The ordinal is POD_INDEX (downward API label
#     apps.kubernetes.io/pod-index, Kubernetes >= 1.28) or, when empty, the hostname's suffix
#     "<statefulset>-<ordinal>".
# Also read: BITFLEET_COORDINATOR (host:port of the coordinator's control endpoint) and
# BITFLEET_MODEL (GGUF path in the pod), both required. Further arguments are passed to
# `bitfleet worker` unchanged.
# Writes the replica index to $BITFLEET_STATE_DIR/replica (default /tmp) for the readiness
# probe, which asks the coordinator about "bitfleet.v1.Inference/replica-<index>".
set -eu

fail() { echo "bitfleet-k8s-worker: $*" >&2; exit 2; }
is_count() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
is_positive() { is_count "$1" && [ "$1" -gt 0 ]; }

: "${BITFLEET_COORDINATOR:?BITFLEET_COORDINATOR is not set}"
: "${BITFLEET_MODEL:?BITFLEET_MODEL is not set}"

if [ -n "${LWS_WORKER_INDEX:-}" ]; then
  tp=${LWS_GROUP_SIZE:-}
  rank=$LWS_WORKER_INDEX
  replica=${LWS_GROUP_INDEX:-}
  source="LeaderWorkerSet group ${replica}, worker $rank"
else
  tp=${BITFLEET_TP:-1}
  ordinal=${POD_INDEX:-}
  [ -n "$ordinal" ] || ordinal=$(hostname | sed 's/.*-//')
  is_count "$ordinal" || fail "cannot tell the pod ordinal (POD_INDEX='${POD_INDEX:-}', hostname '$(hostname)')"
  is_positive "$tp" || fail "BITFLEET_TP must be a positive integer, not '$tp'"
  rank=$((ordinal % tp))
  replica=$((ordinal / tp))
  source="pod ordinal $ordinal"
fi
is_positive "$tp" || fail "the TP degree must be a positive integer, not '$tp'"
if ! is_count "$rank" || [ "$rank" -ge "$tp" ]; then fail "rank '$rank' is not in [0, $tp)"; fi
is_count "$replica" || fail "replica must be a non-negative integer, not '$replica'"

echo "bitfleet-k8s-worker: $source -> replica $replica, rank $rank of $tp" >&2
echo "$replica" > "${BITFLEET_STATE_DIR:-/tmp}/replica"
exec bitfleet worker --coordinator "$BITFLEET_COORDINATOR" --model "$BITFLEET_MODEL" \
  --replica "$replica" --rank "$rank" --world-size "$tp" "$@"
