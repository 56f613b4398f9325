#!/bin/sh
# Open MPI's "remote shell" for hosts that are network namespaces on this machine
# (plm_rsh_agent, see netns_cluster.sh). mpirun calls it like ssh:
#   netns_launch_agent.sh [ssh options...] HOST COMMAND...
# and it runs COMMAND (Open MPI's orted daemon) in namespace "$BITFLEET_NETNS_PREFIX-HOST",
# inside a fresh UTS namespace whose hostname is HOST, so each "host" has its own name (Open
# MPI tells nodes apart by hostname; its session directories are per hostname too). The
# network namespace gives it its own interfaces and addresses: nothing but the veth link
# joins it to the others.
set -eu
while [ $# -gt 0 ]; do
  case "$1" in
    -*) shift ;;  # ssh options (e.g. -x) mean nothing here
    *) break ;;
  esac
done
host=${1:?usage: netns_launch_agent.sh [options] HOST COMMAND...}
shift
: "${BITFLEET_NETNS_PREFIX:?BITFLEET_NETNS_PREFIX is not set}"
# Like ssh, the remote command is one shell command line.
exec ip netns exec "$BITFLEET_NETNS_PREFIX-$host" unshare --uts /bin/sh -c "hostname '$host' && exec $*"
