#!/usr/bin/env bash
# Build the trainer and predictor images from the repository root (what `make images` runs).
#
#   scripts/build-images.sh [trainer] [predictor]      (default: both)
#   scripts/build-images.sh --print [...]              only print the image names
#
# Settings (environment):
#   TAG          image tag                                     (default: dev)
#   REGISTRY     prefix for the image names, e.g. REGION-docker.pkg.dev/PROJECT/squarenet
#                                                              (default: none: squarenet-trainer:TAG)
#   BASE_IMAGE   base image with Python 3.11                   (default: python:3.11-slim)
#   PYTHON       its interpreter                               (default: python3)
#   CA_BUNDLE    extra CA bundle for pip behind a TLS-intercepting proxy, passed as the
#                build secret "ca" (never stored in a layer)  (default: PIP_CERT,
#                REQUESTS_CA_BUNDLE or SSL_CERT_FILE when one names a file)
#   DOCKER       docker client with BuildKit support           (default: docker)
#   DOCKER_BUILD_ARGS  extra arguments for `docker build`, e.g. "--network host"
# HTTP_PROXY/HTTPS_PROXY/NO_PROXY are passed through as build arguments when set (Docker
# keeps those predefined arguments out of the image history).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

tag="${TAG:-dev}"
prefix="${REGISTRY:+${REGISTRY%/}/}"
docker_cli="${DOCKER:-docker}"
print_only=false
if [[ "${1:-}" == "--print" ]]; then
    print_only=true
    shift
fi
services=("$@")
((${#services[@]})) || services=(trainer predictor)

build_args=()
[[ -n "${BASE_IMAGE:-}" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n "${PYTHON:-}" ]] && build_args+=(--build-arg "PYTHON=$PYTHON")
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [[ -n "${!var:-}" ]] && build_args+=(--build-arg "$var")
done

ca="${CA_BUNDLE:-}"
if [[ -z "$ca" ]]; then
    for candidate in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
        if [[ -n "$candidate" && -f "$candidate" ]]; then
            ca="$candidate"
            break
        fi
    done
fi
[[ -n "$ca" ]] && build_args+=(--secret "id=ca,src=$ca")

# shellcheck disable=SC2206 # word splitting of the extra arguments is intended
extra=(${DOCKER_BUILD_ARGS:-})

for service in "${services[@]}"; do
    case "$service" in
    trainer | predictor) ;;
    *) echo "build-images: unknown image '$service' (trainer or predictor)" >&2; exit 2 ;;
    esac
    image="${prefix}squarenet-$service:$tag"
    if $print_only; then
        echo "$image"
        continue
    fi
    start=$SECONDS
    DOCKER_BUILDKIT=1 "$docker_cli" build --file "Dockerfile.$service" --tag "$image" \
        "${build_args[@]}" "${extra[@]}" .
    size="$("$docker_cli" image inspect --format '{{.Size}}' "$image")"
    echo "build-images: $image built in $((SECONDS - start)) s, $((size / 1000000)) MB"
done
