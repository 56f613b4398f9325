#!/usr/bin/env bash
# Configures and builds bitfleet into build/ (Release). Extra arguments go to cmake configure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${BITFLEET_JOBS:-$(nproc)}
# ccache keys on relative paths so clones in different folders (CI) share the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$jobs"
