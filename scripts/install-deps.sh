#!/usr/bin/env bash
# Installs what bitfleet needs to build and test on a fresh Debian 12 machine: compilers and
# libraries from Debian's packages, test tools from PyPI. Safe to re-run; installs only what is
# missing. Needs root (or sudo) for apt-get.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git clang
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libcpp-httplib-dev
  libspdlog-dev libfmt-dev libabsl-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev googletest
  libopenmpi-dev openmpi-bin
  iproute2  # tests/e2e/multihost: network namespaces and veth links
  libpcre2-dev libssl-dev
  openssl  # tests: certificates for the client APIs' TLS
  python3 python3-pip
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "bitfleet: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "bitfleet: all Debian packages present" >&2
fi
