#!/usr/bin/env bash
# Build a local Python base image where no container registry can be reached.
#
#   scripts/base-image.sh [TAG]     (default TAG: squarenet-base:test)
#
# The Dockerfiles default to the official python:3.11-slim image. Where it cannot be
# pulled, this makes an equivalent minimal Debian bookworm root filesystem with its
# python3 (3.11, at /usr/bin/python3) using debootstrap, and imports it as TAG; build with
#   BASE_IMAGE=squarenet-base:test PYTHON=/usr/bin/python3 scripts/build-images.sh
# Skips the work when the engine already has TAG. Needs root, debootstrap, and a Docker
# engine (DOCKER_HOST; see scripts/docker-engine.sh). The root filesystem tarball is
# cached in var/ so a fresh engine imports it in seconds.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-squarenet-base:test}"
docker_cli="${DOCKER:-/usr/bin/docker}"
suite="${DEBIAN_SUITE:-bookworm}"
cache="${SQUARENET_BASE_CACHE:-$repo/var/base-image}"
tarball="$cache/$suite-python3.tar"

if "$docker_cli" image inspect "$tag" >/dev/null 2>&1; then
    echo "base-image: $tag already present" >&2
    exit 0
fi

if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed" >&2; exit 2; }
    mkdir -p "$cache"
    rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs"' EXIT
    start=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" >"$cache/debootstrap.log" 2>&1 || {
        tail -20 "$cache/debootstrap.log" >&2
        exit 1
    }
    # Trim what a service image never needs (as the official slim images do): package
    # lists and caches, docs, man and info pages, translations.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    echo "base-image: debootstrap $suite took $((SECONDS - start)) s" >&2
fi

"$docker_cli" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    "$tarball" "$tag" >/dev/null
echo "base-image: imported $tag" >&2
