#!/usr/bin/env bash
# Run a command with every core saturated, as CI machines often are.
#
#   scripts/under-load.sh [--rounds N] COMMAND [ARG...]
#
# Starts Debian's stress-ng with one CPU hog per core (SQUARENET_LOAD_WORKERS overrides the
# count), runs COMMAND up to N times in a row (stopping at the first failure, each round
# timed), then stops stress-ng by its PID whatever happened. The exit code is COMMAND's.
set -euo pipefail

rounds=1
if [[ "${1:-}" == "--rounds" ]]; then
    rounds="$2"
    shift 2
fi
(($#)) || { echo "usage: $0 [--rounds N] COMMAND [ARG...]" >&2; exit 2; }
command -v stress-ng >/dev/null || { echo "under-load: stress-ng is needed (apt-get install stress-ng)" >&2; exit 2; }

workers="${SQUARENET_LOAD_WORKERS:-$(nproc)}"
stress-ng --cpu "$workers" --quiet &
load_pid=$!
stop_load() {
    kill -TERM "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
}
trap stop_load EXIT
echo "under-load: stress-ng --cpu $workers (pid $load_pid); load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for ((round = 1; round <= rounds; round++)); do
    started=$SECONDS
    status=0
    "$@" || status=$?
    echo "under-load: round $round/$rounds exited $status after $((SECONDS - started)) s; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    ((status == 0)) || exit "$status"
done
