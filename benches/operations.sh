#!/usr/bin/env bash
# Operations over tagents' listeners (BENCHMARKS.md, "Operations"): a fresh
# hub (release build, its own temporary data dir, `[listener]
# max_operations` raised) and two benches of tagent-load against fake
# tagent listeners in the generator's own process:
#   rollout-bench: ROLLOUT_COUNT fakes upgraded to 1.6.0 at CONCURRENCY;
#   config-bench:  one POST /api/v1/config setting a key on CONFIG_COUNT fakes.
# Each prints its total time, the result counts and the hub's CPU seconds
# and RSS. Loopback only; each bench bounded by `timeout` and by its own
# limits (30 min for a rollout or a batch), the hub stopped at exit.
#
#   benches/operations.sh
#   CONFIG_COUNT=2000 MAX_OPERATIONS=128 benches/operations.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROLLOUT_COUNT="${ROLLOUT_COUNT:-1000}"
CONCURRENCY="${CONCURRENCY:-50}"
CONFIG_COUNT="${CONFIG_COUNT:-10000}"
MAX_OPERATIONS="${MAX_OPERATIONS:-256}"
HTTP_PORT="${HTTP_PORT:-18284}"
HEARTBEAT_PORT="${HEARTBEAT_PORT:-18988}"
cargo build --release --locked --bin tagent-hub --bin tagent-load
BIN="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
ulimit -n 20000
DIR="$(mktemp -d /tmp/tagent-ops-bench.XXXXXX)"
HUB_PID=""
cleanup() {
    if [ -n "$HUB_PID" ]; then
        kill "$HUB_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$HUB_PID" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
cat >"$DIR/hub.toml" <<TOML
[listener]
max_operations = $MAX_OPERATIONS
TOML
export TAGENT_HUB_ADMIN_TOKEN="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$BIN/tagent-hub" serve --config "$DIR/hub.toml" --data-dir "$DIR/data" \
    --http-addr "127.0.0.1:$HTTP_PORT" --heartbeat-addr "127.0.0.1:$HEARTBEAT_PORT" \
    >"$DIR/hub.log" 2>&1 &
HUB_PID=$!
HUB="http://127.0.0.1:$HTTP_PORT"
for _ in $(seq 100); do
    curl -sf "$HUB/healthz" >/dev/null 2>&1 && break
    kill -0 "$HUB_PID" 2>/dev/null || { cat "$DIR/hub.log"; exit 1; }
    sleep 0.1
done
curl -sf "$HUB/healthz" >/dev/null || { echo "the hub did not answer within 10 s"; cat "$DIR/hub.log"; exit 1; }
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; hub pid $HUB_PID, max_operations $MAX_OPERATIONS"

echo "== rollout-bench: $ROLLOUT_COUNT tagents, concurrency $CONCURRENCY (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
timeout 2400 "$BIN/tagent-load" rollout-bench --hub "$HUB" --count "$ROLLOUT_COUNT" \
    --concurrency "$CONCURRENCY" --hub-pid "$HUB_PID" || echo "rollout-bench failed: $?"

echo "== config-bench: $CONFIG_COUNT tagents (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
timeout 2400 "$BIN/tagent-load" config-bench --hub "$HUB" --count "$CONFIG_COUNT" \
    --hub-pid "$HUB_PID" || echo "config-bench failed: $?"

grep -ciE " (ERROR|WARN) " "$DIR/hub.log" | sed 's/^/hub log lines at WARN or ERROR: /' || true
