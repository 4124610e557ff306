#!/usr/bin/env bash
# A private Docker engine for building and testing the images on a machine without one.
#
#   scripts/docker-engine.sh start [DIR]   start dockerd (idempotent), print its DOCKER_HOST
#   scripts/docker-engine.sh stop [DIR]    stop it by its PID and undo its mounts
#   scripts/docker-engine.sh host [DIR]    print the DOCKER_HOST of the engine in DIR
#   scripts/docker-engine.sh exec-root [DIR]  print the engine's exec root (under /run)
#
# DIR (default: var/docker in the repository) holds the engine's data root (images and build
# cache, kept between runs so rebuilds are warm), its exec root, pidfile, socket and log.
# The engine uses host networking only (no bridge, no iptables rules): containers run with
# `--network host`. Needs root, dockerd and containerd (Debian: apt-get install docker.io).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
action="${1:-}"
dir="${2:-${SQUARENET_DOCKER_DIR:-$repo/var/docker}}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
# Unix socket paths are limited to ~108 bytes: the exec root (containerd's sockets live
# there) gets a short path of its own derived from DIR.
exec_root="/run/squarenet-docker-$(printf '%s' "$dir" | sha256sum | cut -c1-12)"
pidfile="$dir/dockerd.pid"
socket="$dir/docker.sock"
host="unix://$socket"
docker_cli="${DOCKER:-/usr/bin/docker}"

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# dockerd leaves its network namespace mounted in the exec root, and a run that was killed
# before `stop` leaves the data root's bind mount too: undo both, innermost first.
undo_mounts() {
    local mnt
    { grep -o -e " $exec_root/[^ ]*" -e " $exec_root " -e " $dir/[^ ]*" /proc/self/mounts || true; } |
        sort -r | while read -r mnt; do
            umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
        done
    rm -rf "$exec_root"
}

case "$action" in
start)
    if running && "$docker_cli" -H "$host" info >/dev/null 2>&1; then
        echo "$host"
        exit 0
    fi
    command -v dockerd >/dev/null || { echo "docker-engine: dockerd is not installed" >&2; exit 2; }
    # Not running: whatever a killed earlier run left mounted goes first.
    undo_mounts
    rm -f "$pidfile"
    mkdir -p "$dir/data" "$exec_root"
    dockerd --iptables=false --ip6tables=false --bridge=none \
        --data-root "$dir/data" --exec-root "$exec_root" --pidfile "$pidfile" \
        -H "$host" >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 120); do
        if "$docker_cli" -H "$host" info >/dev/null 2>&1; then
            echo "docker-engine: dockerd $(cat "$pidfile") ready on $host" >&2
            echo "$host"
            exit 0
        fi
        sleep 0.5
    done
    echo "docker-engine: dockerd did not answer within 60 s; log:" >&2
    tail -20 "$dir/dockerd.log" >&2
    "$0" stop "$dir" || true
    exit 1
    ;;
stop)
    if running; then
        pid="$(cat "$pidfile")"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "docker-engine: dockerd $pid ignored SIGTERM for 30 s; sending SIGKILL" >&2
            kill -KILL "$pid" || true
        fi
        echo "docker-engine: dockerd $pid stopped" >&2
    fi
    undo_mounts
    rm -f "$pidfile"
    ;;
host)
    echo "$host"
    ;;
exec-root)
    echo "$exec_root"
    ;;
*)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
