# shellcheck shell=bash
# A cluster of "hosts" on one machine, for tests of what crosses a network (sourced by
# multihost_test.sh). Each host is a network namespace with its own loopback and one interface,
# eth0, a veth link to a bridge that lives in a switch namespace of its own. The hosts reach
# each other only through that bridge, on a private /24; no namespace has a route anywhere
# else, and the machine's own namespace is not touched (no interface, address or route is
# added to it). Needs root and iproute2.
#
#   netns_cluster_up PREFIX HOST...   create PREFIX-sw and PREFIX-HOST for each HOST; the n-th
#                                     host gets 10.231.0.n (BITFLEET_NETNS_SUBNET overrides
#                                     10.231.0)
#   netns_host_ip HOST                that host's address
#   netns_exec HOST CMD...            run CMD on HOST (its namespace, hostname HOST)
#   netns_link_down/up HOST           cut / restore HOST's link to the bridge
#   netns_cluster_down                kill every process left in the namespaces, delete them

NETNS_PREFIX=""
NETNS_SUBNET=${BITFLEET_NETNS_SUBNET:-10.231.0}
NETNS_CREATED=()           # namespaces to delete, switch first
declare -A NETNS_IP=()     # host -> address

netns_cluster_up() {
  NETNS_PREFIX=$1
  shift
  local sw="$NETNS_PREFIX-sw" n=0 host ns
  ip netns add "$sw"
  NETNS_CREATED+=("$sw")
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  for host in "$@"; do
    n=$((n + 1))
    ns="$NETNS_PREFIX-$host"
    ip netns add "$ns"
    NETNS_CREATED+=("$ns")
    # The pair is made inside the namespaces: port "p-HOST" on the switch, "eth0" on the host.
    ip -n "$sw" link add "p-$host" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "p-$host" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$NETNS_SUBNET.$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    NETNS_IP[$host]="$NETNS_SUBNET.$n"
  done
}

netns_host_ip() { echo "${NETNS_IP[$1]}"; }

netns_exec() {
  local host=$1
  shift
  # shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
  ip netns exec "$NETNS_PREFIX-$host" unshare --uts /bin/bash -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

netns_link_down() { ip -n "$NETNS_PREFIX-$1" link set eth0 down; }
netns_link_up() { ip -n "$NETNS_PREFIX-$1" link set eth0 up; }

# Prints each namespace with its addresses.
netns_show() {
  local ns
  for ns in "${NETNS_CREATED[@]}"; do
    echo "  $ns: $(ip -n "$ns" -br addr show | awk '$1 != "lo" { printf "%s %s %s; ", $1, $2, $3 }')"
  done
}

netns_cluster_down() {
  local ns pids
  for ns in "${NETNS_CREATED[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086  # a list of pids
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  done
  for ns in "${NETNS_CREATED[@]}"; do
    ip netns delete "$ns" 2>/dev/null || true
  done
  NETNS_CREATED=()
}
