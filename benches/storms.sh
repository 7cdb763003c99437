#!/usr/bin/env bash
# Consecutive connect storms (BENCHMARKS.md, "Connect storms"): RUNS times,
# a fresh hub (release build, default settings, its own temporary data dir)
# registers SESSIONS tagents, then every session connects at once; each run
# prints the sessions held, the storm time and the hub's bytes per idle
# session. With HOG=1 a CPU hog (`stress-ng --cpu 2`, Debian's package)
# competes for the same two cores during every run. Loopback only; each
# run is bounded by the generator's own phase limits and by `timeout`.
#
#   cargo build --release --bins
#   benches/storms.sh                                  # 10 native storms of 19,000
#   HOG=1 benches/storms.sh
#   PROTOCOL=compat RUNS=3 benches/storms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-10}"
SESSIONS="${SESSIONS:-19000}"
PROTOCOL="${PROTOCOL:-native}"
BIN="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
ulimit -n 20000
HOG_PID=""
cleanup() { [ -n "$HOG_PID" ] && kill "$HOG_PID" 2>/dev/null || true; }
trap cleanup EXIT
if [ "${HOG:-0}" = 1 ]; then
    command -v stress-ng >/dev/null || apt-get install -y -q stress-ng >/dev/null
    stress-ng --cpu 2 --timeout $((RUNS * 120))s --quiet &
    HOG_PID=$!
    sleep 2
fi
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $PROTOCOL, $SESSIONS sessions, $RUNS runs, hog: ${HOG:-0}"
echo "| run | start (UTC) | load before | held | errors | storm s | bytes/session |"
echo "|---|---|---|---|---|---|---|"
lost_runs=0
for run in $(seq "$RUNS"); do
    start="$(date -u +%H:%M:%S)"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    out="$(timeout 900 "$BIN/tagent-load" sessions --spawn-hub "$BIN/tagent-hub" \
        --protocol "$PROTOCOL" --mode storm --sessions "$SESSIONS" --quiet --json 2>/dev/null || true)"
    line="$(python3 -c '
import json, sys
try:
    v = json.loads(sys.argv[1])
except ValueError:
    print("failed | - | - | -"); sys.exit()
p = v["params"]
kinds = ", ".join(k + " " + str(n) for k, n in (v.get("errors_by_kind") or {}).items())
errors = str(v["errors"]) + (" (" + kinds + ")" if kinds else "")
print(" | ".join([p["established"], errors, p["connect_storm_secs"], p.get("server_bytes_per_session", "-")]))
' "$out")"
    echo "| $run | $start | $load | $line |"
    case "$line" in "$SESSIONS |"*) ;; *) lost_runs=$((lost_runs + 1)) ;; esac
done
echo "runs with a session lost: $lost_runs of $RUNS"
