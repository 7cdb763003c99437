#!/usr/bin/env bash
# Restart storm: N sessions held on a hub, the hub restarted (SIGTERM, then
# started again on the same data dir and ports), every session reconnecting
# at once; tagent-load starts and restarts the hub itself and reports, from
# the hub's own admin view (GET /api/v1/tagents/counts), how long until every
# tagent is connected again. Loopback only; bounded (--hold).
#
#   benches/restart-storm.sh [compat|native] [sessions]
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-native}
n=${2:-19000}
cargo build --release --bin tagent-hub --bin tagent-load
bin=${CARGO_TARGET_DIR:-target}/release
"$bin/tagent-load" sessions --spawn-hub "$bin/tagent-hub" --mode restart \
  --protocol "$proto" --sessions "$n" --interval 60 --hold 60 --settle 2
