#!/usr/bin/env bash
# Restart storm: 19,000 sessions held on a hub, the hub restarted (SIGTERM,
# then started again on the same data dir and ports), every session
# reconnecting at once; tagent-load reports, from the hub's own
# tagent_hub_sessions, how long until all of them are connected again.
# Loopback only; bounded (the load stops after --hold seconds).
#
#   benches/restart-storm.sh [compat|native] [sessions]
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-native}
n=${2:-19000}
cargo build --release --bin tagent-hub --bin tagent-load
dir=$(mktemp -d)
trap 'pkill -f "tagent-hub serve --data-dir $dir" || true; rm -rf "$dir"' EXIT
start() {
  target/release/tagent-hub serve --data-dir "$dir" --http-addr 127.0.0.1:18084 \
    --heartbeat-addr 127.0.0.1:18888 2>>"$dir/hub.log" &
}
start
sleep 1
target/release/tagent-load sessions --url http://127.0.0.1:18084 --heartbeat 127.0.0.1:18888 \
  --protocol "$proto" --sessions "$n" --interval 60 --hold 45 --settle 2 --reconnect --quiet \
  > "$dir/load.out" &
load=$!
for _ in $(seq 1 240); do
  held=$(curl -s localhost:18084/metrics | awk '/^tagent_hub_sessions\{/ {s+=$2} END {print s+0}')
  [ "$held" = "$n" ] && break
  sleep 0.5
done
sleep 5
t0=$(date +%s.%N)
pkill -TERM -f "tagent-hub serve --data-dir $dir"
while pgrep -f "tagent-hub serve --data-dir $dir" >/dev/null; do sleep 0.05; done
echo "hub stopped $(echo "$(date +%s.%N) - $t0" | bc) s after SIGTERM"
start
wait $load
cat "$dir/load.out"
