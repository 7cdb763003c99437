#!/usr/bin/env bash
# A runner group on this machine: HUBS hubs sharing one PostgreSQL registry
# (BENCHMARKS.md, "Runner group"). Loopback only, every phase bounded in
# count and time. Run it under the throwaway cluster:
#
#   cargo build --release
#   .ci/with-postgres benches/runner-group.sh [sessions-per-hub]      # 3 hubs
#   HUBS=10 .ci/with-postgres benches/runner-group.sh 17000           # 10 x 17,000
#   MILLION=1 HUBS=3 .ci/with-postgres benches/runner-group.sh 0      # 1,000,000 registered
#
# 1. registrations/s: one `tagent-load register` per hub, all at once;
# 2. HUBS x N heartbeat sessions (compat), one generator per hub, each
#    tagent knowing every other runner (--failover); the time until every
#    hub's admin view counts all HUBS x N connected; each hub's RSS and CPU,
#    PostgreSQL's connections and CPU;
# 3. the last hub killed (SIGKILL): the time until the others hold all
#    HUBS x N sessions, and until the store shows every tagent connected
#    through them (the goal: within the lease, 10 s, + 10 s);
# 4. with MILLION=1 instead of 2-3: 1,000,000 tagents registered through the
#    hubs, then every hub restarted: its start time (until /healthz) and RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-19000}"
HUBS="${HUBS:-3}"
URL="${TAGENT_HUB_TEST_DATABASE_URL:?run it under .ci/with-postgres}"
BIN="${CARGO_TARGET_DIR:-target}/release"
DIR="$(mktemp -d /tmp/runner-group.XXXXXX)"
SCHEMA="bench_$$"
KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
LEASE=10
export TAGENT_HUB_ADMIN_TOKEN="bench-admin-token-0123456789"
[ "$HUBS" -ge 2 ] && [ "$HUBS" -le 20 ] || { echo "HUBS must be 2..20"; exit 2; }
PIDS=()
GENS=()
cleanup() {
    for p in "${GENS[@]}" "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

http() { echo "127.0.0.1:$((18100 + $1))"; }
hb() { echo "127.0.0.1:$((18900 + $1))"; }

cat >"$DIR/hub.toml" <<EOF
credential_key = "$KEY"
[store]
engine = "postgres"
url = "$URL"
schema = "$SCHEMA"
lease_secs = $LEASE
[heartbeat]
# Tens of thousands of connections at once on two shared cores: give each
# time to speak.
first_message_timeout_secs = 60
[[runner_group]]
id = 1
name = "bench"
networks = ["0.0.0.0/0"]
EOF
for i in $(seq "$HUBS"); do
    cat >>"$DIR/hub.toml" <<EOF
[[runner_group.runner]]
id = $i
name = "hub-$i"
heartbeat = "$(hb "$i")"
EOF
done

start_hub() { # start hub $1 (index into PIDS is $1 - 1)
    "$BIN/tagent-hub" serve --config "$DIR/hub.toml" --data-dir "$DIR/hub$1" \
        --http-addr "$(http "$1")" --heartbeat-addr "$(hb "$1")" \
        2>>"$DIR/hub$1.log" &
    PIDS[$(($1 - 1))]=$!
}
wait_healthy() { # hub $1 answers /healthz (at most 300 s)
    for _ in $(seq 3000); do
        curl -sf "http://$(http "$1")/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "hub $1 did not come up"; tail -n 20 "$DIR/hub$1.log"; exit 1
}
for i in $(seq "$HUBS"); do start_hub "$i"; done
for i in $(seq "$HUBS"); do wait_healthy "$i"; done

sessions() { # the sessions hub $1 holds
    curl -sf "http://$(http "$1")/metrics" 2>/dev/null \
        | awk '/^tagent_hub_sessions\{/ {s += $2} END {print s + 0}'
}
connected_view() { # how many tagents hub $1's admin view counts connected
    curl -sf -H "Authorization: Bearer $TAGENT_HUB_ADMIN_TOKEN" \
        "http://$(http "$1")/api/v1/tagents/counts" 2>/dev/null \
        | python3 -c 'import json,sys; v=json.load(sys.stdin); print(int(v.get("connected", v.get("by_status", {}).get("connected", 0))))' \
        2>/dev/null || echo 0
}
now() { date +%s.%N; }
ticks() { # utime + stime of pid $1, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
pg_ticks() { # utime + stime of every postgres process
    local t=0
    for p in $(pgrep -x postgres || true); do t=$((t + $(ticks "$p"))); done
    echo "$t"
}
pg_conns() {
    psql -Atq "$URL" -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
}
HZ="$(getconf CLK_TCK)"
report() { # each hub's RSS and CPU since $1 (an array of ticks, by name), PostgreSQL's
    local -n since=$1
    local secs="$2"
    for i in $(seq "$HUBS"); do
        local pid="${PIDS[$((i - 1))]}"
        [ -e "/proc/$pid" ] || continue
        local used=$(($(ticks "$pid") - ${since[$i]:-0}))
        echo "hub $i: $(sessions "$i") sessions, RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status"), CPU $(echo "scale=3; $used / $HZ / $secs" | bc) cores"
    done
    echo "PostgreSQL: $(pg_conns) client connections, CPU $(echo "scale=3; ($(pg_ticks) - ${since[pg]:-0}) / $HZ / $secs" | bc) cores"
}
wait_gens() { for j in "${GENS[@]}"; do wait "$j" || true; done; GENS=(); }

if [ "${MILLION:-0}" = 1 ]; then
    TOTAL=1000000
    PER=$((TOTAL / HUBS))
    echo "== 1,000,000 registrations through $HUBS hubs"
    T0="$(now)"
    for i in $(seq "$HUBS"); do
        count=$PER
        [ "$i" = "$HUBS" ] && count=$((TOTAL - PER * (HUBS - 1)))
        "$BIN/tagent-load" register --url "http://$(http "$i")" --clients 128 \
            --count "$count" --first-ip "$((9 + i)).0.0.1" --tenant million \
            --duration-max 1800 --quiet >"$DIR/register$i.txt" &
        GENS+=($!)
    done
    wait_gens
    echo "registered in $(echo "$(now) - $T0" | bc) s"
    for i in $(seq "$HUBS"); do echo "-- hub $i"; grep -iE "ok|p99|/s" "$DIR/register$i.txt" | head -4; done
    psql -Atq "$URL" -c "SET search_path = $SCHEMA" -c "SELECT 'stored tagents: ' || count(*) FROM tagents"
    for i in $(seq "$HUBS"); do
        echo "hub $i before the restart: RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/${PIDS[$((i - 1))]}/status")"
    done
    echo "== every hub restarted"
    for i in $(seq "$HUBS"); do
        kill "${PIDS[$((i - 1))]}"
        wait "${PIDS[$((i - 1))]}" || true
        T0="$(now)"
        start_hub "$i"
        wait_healthy "$i"
        up="$(echo "$(now) - $T0" | bc)"
        sleep 5
        echo "hub $i: up (healthz) $up s after start, RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/${PIDS[$((i - 1))]}/status") 5 s later, its view: $(curl -sf -H "Authorization: Bearer $TAGENT_HUB_ADMIN_TOKEN" "http://$(http "$i")/api/v1/tagents/counts" | head -c 200)"
    done
    exit 0
fi

echo "== registrations: $HUBS generators at once, one per hub"
for i in $(seq "$HUBS"); do
    "$BIN/tagent-load" register --url "http://$(http "$i")" --clients $((384 / HUBS)) \
        --count 20000 --first-ip "10.$i.0.1" --tenant reg --quiet >"$DIR/register$i.txt" &
    GENS+=($!)
done
wait_gens
for i in $(seq "$HUBS"); do echo "-- hub $i"; grep -iE "rate|ok|p50|p99|elapsed|/s" "$DIR/register$i.txt" | head -8; done

TOTAL=$((HUBS * N))
echo "== sessions: $HUBS x $N compat sessions"
HOLD=$((120 + HUBS * 20))
declare -A T_START
for i in $(seq "$HUBS"); do T_START[$i]="$(ticks "${PIDS[$((i - 1))]}")"; done
T_START[pg]="$(pg_ticks)"
T0="$(now)"
for i in $(seq "$HUBS"); do
    others=()
    for j in $(seq "$HUBS"); do [ "$j" != "$i" ] && others+=(--failover "$(hb "$j")"); done
    "$BIN/tagent-load" sessions --url "http://$(http "$i")" --heartbeat "$(hb "$i")" \
        --protocol compat --sessions "$N" --first $(((i - 1) * N)) --interval 180 \
        --hold "$HOLD" --settle 5 --reconnect "${others[@]}" --server-pid "${PIDS[$((i - 1))]}" \
        --quiet >"$DIR/sessions$i.txt" 2>&1 &
    GENS+=($!)
done
held_all() { local s=0; for i in $(seq "$HUBS"); do s=$((s + $(sessions "$i"))); done; echo "$s"; }
DEADLINE=$(($(date +%s) + 600))
until [ "$(held_all)" -ge "$TOTAL" ]; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "the sessions did not all connect: $(held_all) of $TOTAL"
        for i in $(seq "$HUBS"); do tail -n 20 "$DIR/sessions$i.txt" "$DIR/hub$i.log"; done
        exit 1
    fi
    sleep 1
done
echo "all $TOTAL sessions held: $(echo "$(now) - $T0" | bc) s after the generators started (registration of their tagents included)"
VIEWS=""
until [ -n "$VIEWS" ]; do
    [ "$(date +%s)" -lt "$DEADLINE" ] || { echo "not every hub's view counts $TOTAL connected"; break; }
    ok=1
    for i in $(seq "$HUBS"); do [ "$(connected_view "$i")" -ge "$TOTAL" ] || { ok=0; break; }; done
    [ "$ok" = 1 ] && VIEWS="$(now)"
    sleep 1
done
[ -n "$VIEWS" ] && echo "every hub's admin view counts all $TOTAL connected: $(echo "$VIEWS - $T0" | bc) s after the start"
sleep 10
SECS="$(echo "$(now) - $T0" | bc)"
echo "-- over the $SECS s since the generators started:"
report T_START "$SECS"
declare -A T_IDLE
for i in $(seq "$HUBS"); do T_IDLE[$i]="$(ticks "${PIDS[$((i - 1))]}")"; done
T_IDLE[pg]="$(pg_ticks)"
sleep 20
echo "-- held, 20 s (heartbeats every 180 s):"
report T_IDLE 20

echo "== hub $HUBS killed"
LAST=$((HUBS - 1))
T0="$(now)"
kill -9 "${PIDS[$LAST]}"
HELD="" STORED=""
DEADLINE=$(($(date +%s) + 120))
while [ -z "$STORED" ]; do
    [ "$(date +%s)" -lt "$DEADLINE" ] || { echo "not every tagent came back within 120 s"; break; }
    if [ -z "$HELD" ]; then
        s=0
        for i in $(seq $LAST); do s=$((s + $(sessions "$i"))); done
        [ "$s" -ge "$TOTAL" ] && HELD="$(now)"
    fi
    connected="$(psql -Atq "$URL" -c "SET search_path = $SCHEMA" \
        -c "SELECT count(*) FROM tagents WHERE tenant = 'load' AND status = 'connected' AND runner <> $HUBS")"
    if [ -n "$HELD" ] && [ "$connected" -ge "$TOTAL" ]; then
        STORED="$(now)"
    fi
    sleep 0.2
done
[ -n "$HELD" ] && echo "all $TOTAL sessions held by the other $LAST hubs: $(echo "$HELD - $T0" | bc) s after the kill"
[ -n "$STORED" ] && echo "and stored as connected through them: $(echo "$STORED - $T0" | bc) s after the kill (goal: lease $LEASE s + 10 s)"
psql -Atq "$URL" -c "SET search_path = $SCHEMA" \
    -c "SELECT status, count(*) FROM tagents WHERE tenant = 'load' GROUP BY status"
for i in $(seq $LAST); do echo "hub $i: $(sessions "$i") sessions, RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/${PIDS[$((i - 1))]}/status")"; done
unset 'PIDS[LAST]'
wait_gens
for i in $(seq "$HUBS"); do echo "-- generator $i"; tail -n 12 "$DIR/sessions$i.txt"; done
