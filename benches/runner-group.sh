#!/usr/bin/env bash
# A runner group on this machine: three hubs sharing one PostgreSQL
# registry (BENCHMARKS.md, "Runner group"). Loopback only, every phase
# bounded in count and time. Run it under the throwaway cluster:
#
#   cargo build --release
#   .ci/with-postgres benches/runner-group.sh [sessions-per-hub]
#
# 1. registrations/s: three `tagent-load register` at once, one per hub;
# 2. 3 x N heartbeat sessions (compat), one generator per hub, each tagent
#    knowing the other two runners (--failover), memory per hub;
# 3. hub 3 killed (SIGKILL): the time until hubs 1 and 2 hold all 3 x N
#    sessions, and until the store shows every tagent connected through them.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-19000}"
URL="${TAGENT_HUB_TEST_DATABASE_URL:?run it under .ci/with-postgres}"
BIN="${CARGO_TARGET_DIR:-target}/release"
DIR="$(mktemp -d /tmp/runner-group.XXXXXX)"
SCHEMA="bench_$$"
KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export TAGENT_HUB_ADMIN_TOKEN="bench-admin-token-0123456789"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

cat >"$DIR/hub.toml" <<EOF
credential_key = "$KEY"
[store]
engine = "postgres"
url = "$URL"
schema = "$SCHEMA"
lease_secs = 10
[heartbeat]
# 57,000 connections at once on two shared cores: give each time to speak.
first_message_timeout_secs = 60
[[runner_group]]
id = 1
name = "bench"
networks = ["0.0.0.0/0"]
EOF
for i in 1 2 3; do
    cat >>"$DIR/hub.toml" <<EOF
[[runner_group.runner]]
id = $i
name = "hub-$i"
heartbeat = "127.0.0.1:1888$i"
EOF
done

for i in 1 2 3; do
    "$BIN/tagent-hub" serve --config "$DIR/hub.toml" --data-dir "$DIR/hub$i" \
        --http-addr "127.0.0.1:1808$i" --heartbeat-addr "127.0.0.1:1888$i" \
        2>"$DIR/hub$i.log" &
    PIDS+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:1808$i/healthz" >/dev/null && break
        sleep 0.1
    done
done

sessions() { # the sessions hub $1 holds
    curl -sf "http://127.0.0.1:1808$1/metrics" 2>/dev/null \
        | awk '/^tagent_hub_sessions\{/ {s += $2} END {print s + 0}'
}
now() { date +%s.%N; }

echo "== registrations: three generators at once, one per hub"
for i in 1 2 3; do
    "$BIN/tagent-load" register --url "http://127.0.0.1:1808$i" --clients 128 \
        --count 20000 --first-ip "10.$i.0.1" --tenant reg --quiet >"$DIR/register$i.txt" &
done
wait_all() { for j in $(jobs -p); do if ! [[ " ${PIDS[*]} " == *" $j "* ]]; then wait "$j" || true; fi; done; }
wait_all
for i in 1 2 3; do echo "-- hub $i"; grep -iE "rate|ok|p50|p99|elapsed|/s" "$DIR/register$i.txt" | head -8; done

echo "== sessions: 3 x $N compat sessions"
HOLD=60
for i in 1 2 3; do
    others=()
    for j in 1 2 3; do [ "$j" != "$i" ] && others+=(--failover "127.0.0.1:1888$j"); done
    "$BIN/tagent-load" sessions --url "http://127.0.0.1:1808$i" --heartbeat "127.0.0.1:1888$i" \
        --protocol compat --sessions "$N" --first $(((i - 1) * N)) --interval 180 \
        --hold "$HOLD" --settle 5 --reconnect "${others[@]}" --server-pid "${PIDS[$((i - 1))]}" \
        --quiet >"$DIR/sessions$i.txt" 2>&1 &
done
DEADLINE=$(($(date +%s) + 300))
until [ "$(($(sessions 1) + $(sessions 2) + $(sessions 3)))" -ge $((3 * N)) ]; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "the sessions did not all connect: $(sessions 1) $(sessions 2) $(sessions 3)"
        for i in 1 2 3; do tail -n 20 "$DIR/sessions$i.txt" "$DIR/hub$i.log"; done
        exit 1
    fi
    sleep 0.5
done
sleep 8
for i in 1 2 3; do
    echo "hub $i: $(sessions "$i") sessions, RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/${PIDS[$((i - 1))]}/status")"
done

echo "== hub 3 killed"
T0="$(now)"
kill -9 "${PIDS[2]}"
HELD="" STORED=""
DEADLINE=$(($(date +%s) + 60))
while [ -z "$STORED" ]; do
    [ "$(date +%s)" -lt "$DEADLINE" ] || { echo "not every tagent came back within 60 s"; break; }
    if [ -z "$HELD" ] && [ "$(($(sessions 1) + $(sessions 2)))" -ge $((3 * N)) ]; then
        HELD="$(now)"
    fi
    connected="$(psql -Atq "$URL" -c "SET search_path = $SCHEMA" \
        -c "SELECT count(*) FROM tagents WHERE tenant = 'load' AND status = 'connected' AND runner IN (1, 2)")"
    if [ -n "$HELD" ] && [ "$connected" -ge $((3 * N)) ]; then
        STORED="$(now)"
    fi
    sleep 0.2
done
[ -n "$HELD" ] && echo "all $((3 * N)) sessions held by hubs 1 and 2: $(echo "$HELD - $T0" | bc) s after the kill"
[ -n "$STORED" ] && echo "and stored as connected through them: $(echo "$STORED - $T0" | bc) s after the kill"
psql -Atq "$URL" -c "SET search_path = $SCHEMA" \
    -c "SELECT status, count(*) FROM tagents WHERE tenant = 'load' GROUP BY status"
wait_all
for i in 1 2 3; do echo "-- generator $i"; tail -n 25 "$DIR/sessions$i.txt"; done
