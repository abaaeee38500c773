#!/usr/bin/env bash
# Deltas under load (issue #23): a 10-name change to a 1M-name list while dnsperf sends 20k qps
# open loop (`-Q 20000`, the harness's mixed query file, misses to the harness's NSD upstream).
#
#   (a) IXFR: a Knot primary serves the harness's 1M-name RPZ zone (list-1m.rpz, 2M records: each
#       name and its wildcard) with its journal on; qalqan is its secondary (`axfr://`, NOTIFY).
#       `knotc zone-begin/zone-unset/zone-set/zone-commit` removes 5 names and adds 5; Knot bumps
#       the serial and NOTIFYs qalqan, which transfers the IXFR and publishes it.
#   (b) PATCH: 5 names added, 5 removed, on a 1M-name pushed list (the admin API).
#
# Per round: NOTIFY (log line "NOTIFY accepted") to the policy swap (log "policy published": its
# timestamp) and `enforce_us` (the update received, i.e. the IXFR or PATCH body read, to the
# swap); over the wire: Knot's commit returned / curl's PATCH sent to the first NXDOMAIN for an
# added name (dig polled, each poll a fork: ~5-10 ms resolution; Knot's own commit of a 2M-record
# zone, which comes before its NOTIFY, is given apart as knot_commit_ms; a PATCH is polled while
# curl waits, and reply_ms is curl's own round trip, which includes the journal's fsync); dnsperf's lost queries, SERVFAIL count, max latency over
# the 10 s run the change falls in. ROUNDS rounds (3), medians at the end. Machine load printed.
#
#   cargo build --release && benches/e2e/delta-load.sh
#
# Placement: qalqan on CPU 0 (threads = 1, reload_nice 19 as shipped), Knot, NSD and dnsperf on
# CPU 1. Environment: QALQAN_BIN, BENCH_CACHE (see common.sh), ROUNDS (3), QPS (20000),
# RELOAD_NICE (19), KEEP=1 keeps the work directory.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_data list-1m.rpz q-mixed-1m.txt root.zone
command -v dnsperf >/dev/null || { echo "dnsperf not installed" >&2; exit 1; }
KNOTD=$(command -v knotd || echo /usr/sbin/knotd)
KNOTC=$(command -v knotc || echo /usr/sbin/knotc)
[ -x "$KNOTD" ] || { echo "knotd not installed (apt-get install knot)" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
QPS=${QPS:-20000}
RELOAD_NICE=${RELOAD_NICE:-19}
work=$(mktemp -d /tmp/qalqan-delta-load.XXXXXX)
trap 'cleanup; [ "${KEEP:-}" = 1 ] || rm -rf "$work"' EXIT
port=15491 mport=15492 aport=15493 kport=15494 uport=15495
ms() { date +%s%3N; }
# ts_ms LINE: a log line's RFC 3339 timestamp, in ms since the epoch
ts_ms() { date -d "$(awk '{print $1}' <<<"$1")" +%s%3N; }
field() { sed -n "s/.*$1=\"\{0,1\}\([0-9a-z.]*\).*/\1/p" <<<"$2"; }
rcode() { dig +time=1 +tries=1 +noall +comments @127.0.0.1 -p "$port" "$1" A | sed -n 's/.*status: \([A-Z]*\).*/\1/p'; }
wait_log() {
    for _ in $(seq 1200); do [ "$(grep -c "$2" "$1" || true)" -ge "$3" ] && return; sleep 0.1; done
    echo "timed out waiting for '$2' x$3 in $1" >&2; tail -5 "$1" >&2; exit 1
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== setup: $(nproc) CPUs, load $(load)"
mkdir -p "$work/knot" "$work/state"
{ echo '$ORIGIN rpz.bench.'; cat "$cache/list-1m.rpz"; } >"$work/knot/rpz.bench.zone"
cat >"$work/knot/knot.conf" <<CONF
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@$kport
    tcp-io-timeout: 60000
    tcp-remote-io-timeout: 60000
    tcp-idle-timeout: 60000
log:
  - target: stderr
    any: notice
database:
    storage: "$work/knot"
remote:
  - id: qalqan
    address: 127.0.0.1@$port
acl:
  - id: xfr
    address: 127.0.0.1
    action: transfer
template:
  - id: default
    storage: "$work/knot"
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    journal-max-usage: 1G
    semantic-checks: off
zone:
  - domain: rpz.bench
    file: rpz.bench.zone
    acl: xfr
    notify: qalqan
CONF
setsid taskset -c 1 "$KNOTD" -c "$work/knot/knot.conf" >"$work/knot.log" 2>&1 &
pids+=($!)
t=$(ms)
until dig +short +time=1 +tries=1 @127.0.0.1 -p $kport rpz.bench SOA 2>/dev/null | grep -q '^localhost\. '; do
    [ $(($(ms) - t)) -lt 300000 ] || { echo "knotd did not load the zone" >&2; tail "$work/knot.log" >&2; exit 1; }
    sleep 0.5
done
echo "knot: zone loaded in $(($(ms) - t)) ms"
start_nsd "$uport" "$work" taskset -c 1

# the pushed list: 1M names of its own
awk 'BEGIN { for (i = 1; i <= 1000000; i++) printf "p%d.pushed.example\n", i }' >"$work/p.domains"
printf 'delta-load-token-0123456789\n' >"$work/token"; chmod 600 "$work/token"
cat >"$work/q.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1
reload_nice = $RELOAD_NICE
[upstream]
servers = ["127.0.0.1:$uport"]
timeout_ms = 2000
[cache]
max_entries = 200000
[metrics]
listen = "127.0.0.1:$mport"
[state]
dir = "$work/state"
[admin]
listen = "127.0.0.1:$aport"
token_file = "$work/token"
require_signature = false
[[lists]]
name = "rpz"
source = "axfr://127.0.0.1:$kport/rpz.bench"
format = "rpz"
refresh_s = 3600
timeout_ms = 120000
max_rules = 5000000
max_bytes = 500000000
[[lists]]
name = "pushed"
source = "push"
max_bytes = 200000000
TOML
t=$(ms)
# (start_qalqan of common.sh waits 10 s: the first AXFR of 2M records takes longer)
setsid taskset -c 0 "$QALQAN_BIN" run --config "$work/q.toml" >/dev/null 2>"$work/q.log" &
qalqan_pid=$!
pids+=($qalqan_pid)
wait_log "$work/q.log" ready 1
wait_log "$work/q.log" 'policy published' 1
echo "qalqan: AXFR of 2M records published in $(($(ms) - t)) ms"
auth=(-H "Authorization: Bearer delta-load-token-0123456789")
curl -sf -o /dev/null -X PUT "${auth[@]}" --data-binary @"$work/p.domains" "http://127.0.0.1:$aport/v1/lists/pushed"
wait_log "$work/q.log" 'policy published' 2
echo "qalqan: both lists in force; VmRSS $(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$qalqan_pid/status") MiB"
echo "warm-up: 10 s of the query mix"
taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$cache/q-mixed-1m.txt" -Q "$QPS" -l 10 -c 4 >/dev/null 2>&1 || true

# run_dnsperf OUT: 10 s at $QPS in the background; its pid in $perf_pid
run_dnsperf() {
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$cache/q-mixed-1m.txt" -Q "$QPS" -l 10 -c 4 -t 2 >"$1" 2>&1 &
    perf_pid=$!
}
# perf_summary OUT: lost, SERVFAIL, max latency (ms)
perf_summary() {
    local lost servfail max
    lost=$(sed -n 's/.*Queries lost: *\([0-9]*\).*/\1/p' "$1")
    servfail=$(grep -o 'SERVFAIL [0-9]*' "$1" | awk '{print $2}'); servfail=${servfail:-0}
    max=$(sed -n 's/.*Average Latency (s):.*max \([0-9.]*\)).*/\1/p' "$1")
    echo "lost=$lost servfail=$servfail max_ms=$(echo "$max * 1000" | bc -l | xargs printf '%.2f')"
}
# poll NAME T0: ms from T0 to the first NXDOMAIN for NAME (30 s at most)
poll() {
    until [ "$(rcode "$1")" = NXDOMAIN ]; do
        [ $(($(ms) - $2)) -lt 30000 ] || { echo "$1 never blocked" >&2; echo -1; return; }
    done
    echo $(($(ms) - $2))
}

results="$work/results"
: >"$results"
for r in $(seq "$ROUNDS"); do
    # (a) IXFR of 10 names after NOTIFY
    n=$(grep -c 'policy published' "$work/q.log")
    l0=$(load)
    run_dnsperf "$work/perf-a$r.txt"
    sleep 3
    gone=$(awk -v r="$r" 'NR > 3 && $2 == "CNAME" && $1 !~ /^\*/ { if (++k % 100003 == r && m++ < 5) print $1 }' "$cache/list-1m.rpz")
    { echo "zone-begin rpz.bench"
      for o in $gone; do echo "zone-unset rpz.bench $o.rpz.bench. CNAME"; done
      for i in 1 2 3 4 5; do echo "zone-set rpz.bench ixfr-$r-$i.example.rpz.bench. 300 CNAME ."; done
      echo "zone-commit rpz.bench"; } >"$work/knotc-$r.txt"
    while read -r cmd; do
        [[ $cmd == zone-commit* ]] && tc=$(ms)
        # shellcheck disable=SC2086
        "$KNOTC" -c "$work/knot/knot.conf" $cmd >/dev/null
    done <"$work/knotc-$r.txt"
    # knotc returns once Knot has committed (O(zone) in Knot: seconds for 2M records); Knot
    # NOTIFYs after that: the wire time counts from the commit's return
    t0=$(ms)
    commit=$((t0 - tc))
    wire=$(poll "ixfr-$r-3.example." "$t0")
    wait_log "$work/q.log" 'policy published' $((n + 1))
    wait $perf_pid || true
    line=$(grep 'policy published' "$work/q.log" | tail -1)
    notify=$(grep 'NOTIFY accepted' "$work/q.log" | tail -1)
    echo "a $r kind=$(field kind "$line") enforce_us=$(field enforce_us "$line") notify_to_swap_ms=$(($(ts_ms "$line") - $(ts_ms "$notify"))) knot_commit_ms=$commit wire_ms=$wire $(perf_summary "$work/perf-a$r.txt") load=\"$l0\"" | tee -a "$results"

    # (b) PATCH of 10 names on the pushed list
    n=$(grep -c 'policy published' "$work/q.log")
    l0=$(load)
    run_dnsperf "$work/perf-b$r.txt"
    sleep 3
    patch=$(for i in 1 2 3 4 5; do echo "+patch-$r-$i.example"; done; sed -n "$((r * 100000 + 1)),$((r * 100000 + 5))p" "$work/p.domains" | sed 's/^/-/')
    # polled while the PATCH is in flight: the reply comes after the swap and the journal's
    # fsync, the name is blocked from the swap on
    t0=$(ms)
    curl -sf -o /dev/null -X PATCH "${auth[@]}" --data-binary "$patch" "http://127.0.0.1:$aport/v1/lists/pushed" &
    curl_pid=$!
    wire=$(poll "patch-$r-3.example." "$t0")
    wait $curl_pid
    reply=$(($(ms) - t0))
    wait_log "$work/q.log" 'policy published' $((n + 1))
    wait $perf_pid || true
    line=$(grep 'policy published' "$work/q.log" | tail -1)
    echo "b $r kind=$(field kind "$line") enforce_us=$(field enforce_us "$line") wire_ms=$wire reply_ms=$reply $(perf_summary "$work/perf-b$r.txt") load=\"$l0\"" | tee -a "$results"
done

echo "== medians over $ROUNDS rounds"
for c in a b; do
    for f in enforce_us notify_to_swap_ms knot_commit_ms wire_ms reply_ms lost servfail max_ms; do
        v=$(awk -v c="$c" -v f="$f" '$1 == c { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$results" | sort -n)
        [ -n "$v" ] || continue
        printf '%s %s=%s  ' "$c" "$f" "$(awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }' <<<"$v")"
    done
    echo
done
grep -h -A3 'Response codes' "$work"/perf-a1.txt | head -3 || true
echo "load at the end: $(load)"
