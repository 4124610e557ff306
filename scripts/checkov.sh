#!/usr/bin/env bash
# Policy scan of the rendered Kubernetes manifests with checkov.
#
#   scripts/checkov.sh [OVERLAY ...]        (default: every folder in k8s/overlays)
#
# checkov has heavy, conflicting dependencies, so it lives in its own virtualenv
# (var/venv-checkov, created on first use). Each overlay is rendered with `kubectl kustomize`
# and scanned as plain Kubernetes YAML; a check the manifests deliberately do not meet is
# skipped by a `checkov.io/skipN: CHECK=reason` annotation on the resource, never here.
# Exits non-zero when any check fails.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
venv="${CHECKOV_VENV:-$repo/var/venv-checkov}"
version="3.3.30"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/checkov" ]] || ! "$venv/bin/checkov" --version 2>/dev/null | grep -qx "$version"; then
    echo "checkov: installing checkov $version into $venv" >&2
    "$python" -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$version"
fi

overlays=("$@")
if ((${#overlays[@]} == 0)); then
    for dir in k8s/overlays/*/; do
        overlays+=("$(basename "$dir")")
    done
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for overlay in "${overlays[@]}"; do
    mkdir -p "$work/$overlay"
    kubectl kustomize "k8s/overlays/$overlay" >"$work/$overlay/rendered.yaml"
    echo "checkov: k8s/overlays/$overlay" >&2
    "$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
        --directory "$work/$overlay" || status=1
done
exit "$status"
