#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything (CUDA code too when nvcc
# is present), runs every CTest test (labels unit, kernels, mpi, e2e, gpu — gpu tests skip
# without a device), then builds the libFuzzer targets with clang (ASan/UBSan) and fuzzes for a
# bounded time (label fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/install-test-tools.sh

bash scripts/build.sh
# Tests cache synthesized models in GoogleTest's TempDir: give every run a fresh one so files
# from an older build can never be picked up.
TEST_TMPDIR=$(mktemp -d -t bitfleet-tests.XXXXXX)
export TEST_TMPDIR
trap 'rm -rf "$TEST_TMPDIR"' EXIT
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 1200 -LE fuzz)

# Fuzzing needs clang's libFuzzer: a separate, sanitized build of the parsers only.
fuzz_seconds=${BITFLEET_FUZZ_SECONDS:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBITFLEET_FUZZ=ON -DBITFLEET_CUDA=OFF -DBITFLEET_MPI=OFF -DBITFLEET_FUZZ_SECONDS="$fuzz_seconds"
cmake --build build-fuzz -j"$(nproc)" --target bitfleet_fuzz_targets
(cd build-fuzz && ctest --output-on-failure -L fuzz)
