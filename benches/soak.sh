#!/usr/bin/env bash
# Soak: a hub under churn for SOAK_MINUTES (30 by default; not in CI).
#
# - steady: 4,000 compat sessions held the whole time, a heartbeat every 5 s
#   each, reconnecting at once if the hub drops one (`--reconnect`);
# - churn: every 30 s, 1,000 more tagents (native and compat in turn)
#   re-register, connect, heartbeat every second for 20 s, and go away;
# - every minute: the hub's RSS, open descriptors, sessions and tagents
#   (samples.csv).
#
# Checked at the end (the script exits 1 if any fails): the hub's session
# count equals what the steady generator holds once churn has stopped; after
# the steady generator ends, no session is left and the descriptors are back
# to the baseline taken before any load; RSS in the last minute of load is
# within 10% of RSS at minute 5.
#
#   benches/soak.sh [out-dir]       (loopback ports 19084 and 19888)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${SOAK_MINUTES:-30}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
hub_bin=${CARGO_TARGET_DIR:-target}/release/tagent-hub
load_bin=${CARGO_TARGET_DIR:-target}/release/tagent-load
[ -x "$hub_bin" ] && [ -x "$load_bin" ] || cargo build --release --bin tagent-hub --bin tagent-load
data=$(mktemp -d)
http=127.0.0.1:19084
hb=127.0.0.1:19888
steady_n=4000
churn_n=1000

"$hub_bin" serve --data-dir "$data" --http-addr "$http" --heartbeat-addr "$hb" 2>"$out/hub.log" &
hub=$!
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$hub" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://$http/healthz" >/dev/null && break; sleep 0.2; done

metric() { # the sum of a metric's samples
  curl -s "http://$http/metrics" | awk -v m="$1" '$1 ~ "^"m"([{]|$)" {s+=$2} END {print s+0}'
}
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$hub/status"; }
fds() { ls "/proc/$hub/fd" | wc -l; }

base_fds=$(fds)
base_rss=$(rss)
echo "minute,rss_kib,fds,sessions,tagents,heartbeats_total" >"$out/samples.csv"
sample() {
  echo "$1,$(rss),$(fds),$(metric tagent_hub_sessions),$(metric tagent_hub_tagents),$(metric tagent_hub_heartbeats_total)" \
    >>"$out/samples.csv"
}
sample 0
echo "baseline: rss ${base_rss} KiB, ${base_fds} descriptors"

hold=$((minutes * 60))
"$load_bin" sessions --url "http://$http" --heartbeat "$hb" --protocol compat \
  --sessions "$steady_n" --interval 5 --hold "$hold" --settle 2 --reconnect --quiet \
  --server-pid "$hub" >"$out/steady.out" 2>"$out/steady.err" &
steady=$!
pids+=("$steady")

# Churn, until two minutes before the steady generator ends; one sample a
# minute meanwhile.
start=$(date +%s)
churn_until=$((start + hold - 120))
next_sample=$((start + 60))
minute=1
rounds=0
churn=""
while [ "$(date +%s)" -lt "$churn_until" ]; do
  if [ -z "$churn" ] || ! kill -0 "$churn" 2>/dev/null; then
    [ -n "$churn" ] && { wait "$churn" || echo "churn round $rounds failed" >>"$out/churn.err"; }
    proto=$([ $((rounds % 2)) -eq 0 ] && echo native || echo compat)
    "$load_bin" sessions --url "http://$http" --heartbeat "$hb" --protocol "$proto" \
      --sessions "$churn_n" --first 100000 --interval 1 --hold 20 --settle 1 --quiet \
      >>"$out/churn.out" 2>>"$out/churn.err" &
    churn=$!
    pids+=("$churn")
    rounds=$((rounds + 1))
  fi
  if [ "$(date +%s)" -ge "$next_sample" ]; then
    sample "$minute"
    minute=$((minute + 1))
    next_sample=$((next_sample + 60))
  fi
  sleep 1
done
[ -n "$churn" ] && { wait "$churn" || echo "churn round $rounds failed" >>"$out/churn.err"; }
sleep 10
held=$(metric tagent_hub_sessions)
load_rss=$(rss)
load_fds=$(fds)
sample "$minute"
wait "$steady" || echo "the steady generator failed" >>"$out/steady.err"
# The steady sessions close; give the hub a moment to notice every EOF.
for _ in $(seq 1 100); do [ "$(metric tagent_hub_sessions)" = 0 ] && break; sleep 0.2; done
sleep 2
end_sessions=$(metric tagent_hub_sessions)
end_fds=$(fds)
end_rss=$(rss)
sample end
rss5=$(awk -F, '$1 == 5 {print $2}' "$out/samples.csv")
established=$(awk '$1 == "established" {print $2}' "$out/steady.out")
heartbeats_ok=$(awk '$1 == "OK" {print $2}' "$out/steady.out")
cat <<EOF | tee "$out/summary.txt"
soak: ${minutes} min, ${rounds} churn rounds of ${churn_n} tagents, ${steady_n} steady sessions
steady generator: established=${established:-?} heartbeats_ok=${heartbeats_ok:-?}
hub sessions with only the steady generator left: ${held}
rss KiB: baseline ${base_rss}, minute 5 ${rss5:-?}, last minute of load ${load_rss}, after ${end_rss}
descriptors: baseline ${base_fds}, under load ${load_fds}, after ${end_fds}
sessions after: ${end_sessions}
tagents: $(metric tagent_hub_tagents)
EOF
fail=0
[ "$held" = "${established:-x}" ] || { echo "FAIL: hub holds $held sessions, the generator $established"; fail=1; }
[ "$end_sessions" = 0 ] || { echo "FAIL: $end_sessions sessions left"; fail=1; }
[ "$end_fds" -le "$base_fds" ] || { echo "FAIL: descriptors $end_fds, baseline $base_fds"; fail=1; }
if [ -n "${rss5:-}" ]; then
  awk -v a="$rss5" -v b="$load_rss" 'BEGIN {exit !(b <= a * 1.10)}' ||
    { echo "FAIL: rss grew from $rss5 to $load_rss KiB"; fail=1; }
fi
exit $fail
