#!/usr/bin/env bash
# Soak test: qalqan (threads = 1, 100k-name blocklist) under a steady open-loop mixed load for a
# long time, with the list file atomically replaced every RELOAD_EVERY seconds (qalqan's directory
# watcher picks it up by itself), sampling RSS as it goes. Reuses the shared benchmark harness
# (../shared/bench): its data sets (lib/gen.py, cached in /tmp/bench-cache) and its NSD upstream
# (upstream/nsd). Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
#
#   benches/e2e/soak.sh                        # 30 min
#   SOAK_MINUTES=3 benches/e2e/soak.sh         # quick validation
#   SOAK_QPS=20000 benches/e2e/soak.sh         # fixed rate instead of 80 % of measured capacity
#
# Environment (all optional):
#   SOAK_MINUTES (30)      duration of the loaded phase
#   SOAK_QPS               offered rate (dnsperf -Q); default LOAD_FRACTION x capacity measured by a
#                          CAPACITY_SECONDS closed-loop mixed run (dnsperf -c 4 -q 100, like the harness)
#   LOAD_FRACTION (0.8)    CAPACITY_SECONDS (10)
#   RELOAD_EVERY (60)      seconds between list replacements (list <-> list-r)
#   SAMPLE_EVERY (60)      seconds between RSS samples
#   STATS_EVERY (1)        dnsperf -S interval: answered qps per interval, to find stalls (e.g. at reloads)
#   QALQAN_BIN             default <repo>/target/release/qalqan (built with cargo build --release if missing)
#   BENCH_DIR              default <repo>/../shared/bench        BENCH_CACHE   default /tmp/bench-cache
#   SIZE (100k)            list size tag of the harness data set
#   UPSTREAM_PORT          NSD port; default 15300 if free, else any free port
#   SERVER_CPU (0) CLIENT_CPU (1)   taskset pinning like the harness (qalqan / dnsperf+NSD); "" = none
#   RUST_LOG (info)        qalqan log filter; ",hickory_server=warn,hickory_proto=warn" is appended unless it
#                          names hickory (hickory-server logs every request at INFO)
#   SOAK_DIR               work dir (kept afterwards: config, lists, logs, samples); default mktemp
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SOAK_MINUTES=${SOAK_MINUTES:-30}
SOAK_QPS=${SOAK_QPS:-}
LOAD_FRACTION=${LOAD_FRACTION:-0.8}
CAPACITY_SECONDS=${CAPACITY_SECONDS:-10}
RELOAD_EVERY=${RELOAD_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-60}
STATS_EVERY=${STATS_EVERY:-1}
QALQAN_BIN=${QALQAN_BIN:-$repo/target/release/qalqan}
BENCH_DIR=${BENCH_DIR:-$(cd "$repo/.." && pwd)/shared/bench}
BENCH_CACHE=${BENCH_CACHE:-/tmp/bench-cache}
SIZE=${SIZE:-100k}
SERVER_CPU=${SERVER_CPU-0}
CLIENT_CPU=${CLIENT_CPU-1}

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }
pin() { local cpu=$1; shift; if [ -n "$cpu" ]; then taskset -c "$cpu" "$@"; else "$@"; fi; }

for t in dnsperf nsd python3 taskset setsid; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (apt-get install dnsperf nsd util-linux python3)"
done
[ -x "$BENCH_DIR/upstream/nsd" ] && [ -f "$BENCH_DIR/lib/gen.py" ] || die "shared harness not found at $BENCH_DIR"

work=${SOAK_DIR:-$(mktemp -d /tmp/qalqan-soak.XXXXXX)}
mkdir -p "$work/lists"
qlog=$work/qalqan.log
log "soak: ${SOAK_MINUTES} min, work dir $work"

# ---------------------------------------------------------------- cleanup: stop what we started
pids=()        # each started with setsid -> its own process group (pid == pgid)
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- binary
if [ ! -x "$QALQAN_BIN" ]; then
    [ "$QALQAN_BIN" = "$repo/target/release/qalqan" ] || die "QALQAN_BIN=$QALQAN_BIN not executable"
    log "building $QALQAN_BIN (cargo build --release; waits for any running build via cargo's lock)"
    (cd "$repo" && nice -n 19 cargo build --release --locked)
fi
log "binary: $QALQAN_BIN ($("$QALQAN_BIN" --version 2>/dev/null || echo '?'), built $(date -u -r "$QALQAN_BIN" '+%F %T') UTC)"

# ---------------------------------------------------------------- data (harness generator, cached)
cache=$BENCH_CACHE
need_files=("list-$SIZE.domains" "list-$SIZE-r.domains" "q-mixed-$SIZE.txt" "q-warm.txt" "added-$SIZE.txt"
            "meta-$SIZE.json" root.zone)
missing=0
for f in "${need_files[@]}"; do [ -s "$cache/$f" ] || missing=1; done
if [ "$missing" = 1 ]; then
    log "generating harness data in $cache (lib/gen.py; takes a few minutes) ..."
    python3 - "$BENCH_DIR/lib" "$cache" "$SIZE" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import gen
gen.generate(sys.argv[2], [gen.parse_size(sys.argv[3])])
PY
fi
for f in "${need_files[@]}"; do [ -s "$cache/$f" ] || die "$cache/$f missing after generation"; done

# ---------------------------------------------------------------- helpers (python: ports, DNS probes)
free_port() {   # a port free for both UDP and TCP on 127.0.0.1, optionally trying $1 first
    python3 - "${1:-0}" <<'PY'
import socket, sys
def ok(p):
    try:
        for t in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, t); s.bind(('127.0.0.1', p)); s.close()
        return True
    except OSError:
        return False
want = int(sys.argv[1])
if want and ok(want):
    print(want); sys.exit()
while True:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close()
    if ok(p):
        print(p); break
PY
}
# dnsq PORT NAME -> "RCODE [addr,...]" or "timeout"
dnsq() {
    python3 - "$BENCH_DIR/lib" "$1" "$2" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import dnsq
r = dnsq.query(sys.argv[3], port=int(sys.argv[2]), timeout=1)
print('timeout' if r is None else (r[0] + (' ' + ','.join(r[1]) if r[1] else '')))
PY
}
# wait_rcode PORT NAME WANT TIMEOUT_S [T_REF] -> seconds since T_REF (default: now) until NAME answers
# rcode WANT, or "never"; polls every 0.1 s
wait_rcode() {
    python3 - "$BENCH_DIR/lib" "$@" <<'PY'
import sys, time
sys.path.insert(0, sys.argv[1])
import dnsq
port, name, want, tmo = int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
t0 = float(sys.argv[6]) if len(sys.argv) > 6 else time.time()   # optional reference time (epoch s)
while time.time() - t0 < tmo:
    r = dnsq.query(name, port=port, timeout=0.5)
    if r and r[0] == want:
        print('%.2f' % (time.time() - t0)); sys.exit()
    time.sleep(0.1)
print('never')
PY
}
meta() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$cache/meta-$SIZE.json" "$1"; }
mem() { awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} END{print r+0, h+0}' "/proc/$1/status" 2>/dev/null || echo "0 0"; }
udp_errs() { awk '/^Udp:/{n++; if(n==2) print $4, $6}' /proc/net/snmp; }   # InErrors RcvbufErrors (host-wide)
# sock_drops PORT -> "SERVER CLIENT": kernel drops (receive buffer full) summed over the UDP sockets bound
# to 127.0.0.1:PORT (qalqan's) and over those connected to it (dnsperf's), from /proc/net/udp
sock_drops() {
    awk -v p="$(printf '%04X' "$1")" 'NR>1{split($2,l,":"); split($3,r,":"); if(l[2]==p) s+=$NF; else if(r[2]==p) c+=$NF}
        END{print s+0, c+0}' /proc/net/udp
}
# runq_s PID -> seconds its threads spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat):
# tells "qalqan was starved by other processes on its CPU" from "qalqan was slow"
runq_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{w+=$2} END{printf "%.1f", w/1e9}'; }
cpu_s() { awk -v clk="$(getconf CLK_TCK)" '{sub(/.*\) /,""); printf "%.1f", ($12+$13)/clk}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- upstream: the harness's NSD
up_port=$(free_port "${UPSTREAM_PORT:-15300}")
PORT=$up_port ZONE=$cache/root.zone WORKDIR=$work/upstream \
    setsid bash -c 'exec "$@"' _ $( [ -n "$CLIENT_CPU" ] && echo taskset -c "$CLIENT_CPU" ) \
    "$BENCH_DIR/upstream/nsd" >"$work/upstream.log" 2>&1 &
nsd_pid=$!; pids+=("$nsd_pid")
allowed=$(meta allowed)
w=$(wait_rcode "$up_port" "$allowed" NOERROR 120)
[ "$w" != never ] || die "NSD upstream did not come up on 127.0.0.1:$up_port (see $work/upstream.log)"
log "upstream NSD on 127.0.0.1:$up_port (pid $nsd_pid), up after ${w}s"

# ---------------------------------------------------------------- qalqan
port=$(free_port)
list=$work/lists/list.domains
cp "$cache/list-$SIZE.domains" "$list"
cat >"$work/qalqan.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1

[upstream]
servers = ["127.0.0.1:$up_port"]

[[lists]]
name = "bench"
source = "$list"
format = "domains"
kind = "block"
action = "nxdomain"
TOML
t_start=$(date +%s.%N)
# qalqan's own default filter (RUST_LOG unset) is "info,hickory_server=warn,hickory_proto=warn"; a plain
# RUST_LOG=info would switch hickory-server's per-request INFO lines back on (~2 lines per query: GBs of
# log and a CPU-bound server), so default to the same filter explicitly and keep hickory at warn in a
# caller's RUST_LOG unless it names hickory itself.
qrust_log=${RUST_LOG:-info}
[[ $qrust_log == *hickory* ]] || qrust_log+=",hickory_server=warn,hickory_proto=warn"
RUST_LOG=$qrust_log setsid bash -c 'exec "$@"' _ $( [ -n "$SERVER_CPU" ] && echo taskset -c "$SERVER_CPU" ) \
    "$QALQAN_BIN" run --config "$work/qalqan.toml" >"$qlog" 2>&1 &
qpid=$!; pids+=("$qpid")
blocked=$(meta blocked)
w=$(wait_rcode "$port" "$blocked" NXDOMAIN 120)
kill -0 "$qpid" 2>/dev/null || die "qalqan exited at start-up; log: $(tail -5 "$qlog")"
[ "$w" != never ] || die "qalqan did not block $blocked within 120 s (log $qlog)"
log "qalqan on 127.0.0.1:$port (pid $qpid, threads 1) blocking after $(python3 -c "import time; print('%.2f' % (time.time() - $t_start))")s;" \
    "allowed $allowed -> $(dnsq "$port" "$allowed")"

dp() {   # dnsperf against qalqan on the client CPU
    pin "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -c 4 -t 2 -O suppress=timeout,unexpected "$@"
}
field() { sed -n "s/^ *$1:[[:space:]]*\([0-9.]*\).*/\1/p" "$2" | head -1; }

# warm the cache with every allowed popular name once (as the harness does before cached/mixed)
dp -d "$cache/q-warm.txt" -n 1 -l 60 -q 100 >"$work/dnsperf-warm.txt" 2>&1 || true
log "warm-up: $(field 'Queries completed' "$work/dnsperf-warm.txt") answers at $(field 'Queries per second' "$work/dnsperf-warm.txt") qps"

if [ -z "$SOAK_QPS" ]; then
    dp -d "$cache/q-mixed-$SIZE.txt" -l "$CAPACITY_SECONDS" -q 100 >"$work/dnsperf-capacity.txt" 2>&1 || true
    cap=$(field 'Queries per second' "$work/dnsperf-capacity.txt")
    [ -n "$cap" ] || die "capacity run failed: $(tail -5 "$work/dnsperf-capacity.txt")"
    SOAK_QPS=$(python3 -c "print(max(100, int($cap * $LOAD_FRACTION)))")
    log "capacity (closed loop, mixed, ${CAPACITY_SECONDS}s): $cap qps -> offered rate $SOAK_QPS qps ($LOAD_FRACTION x)"
else
    log "offered rate $SOAK_QPS qps (SOAK_QPS)"
fi
outstanding=$(( SOAK_QPS * 2 + 1000 )); [ "$outstanding" -le 60000 ] || outstanding=60000

# ---------------------------------------------------------------- soak
dur=$(( SOAK_MINUTES * 60 ))
pub0=$(grep -c 'policy published' "$qlog" || true)
read -r rss0 hwm0 < <(mem "$qpid")
cpu0=$(cpu_s "$qpid")
read -r udp_in0 udp_rcvbuf0 < <(udp_errs)
read -r sdrop0 _ < <(sock_drops "$port")
runq0=$(runq_s "$qpid") load0=$(cut -d' ' -f1-3 /proc/loadavg)
sdrop=$sdrop0 cdrop=0
samples=$work/samples.tsv
printf 't_s\tvmrss_kib\tvmhwm_kib\tcpu_s\tpublished\tevent\n' >"$samples"
printf '0\t%s\t%s\t%s\t%s\tstart\n' "$rss0" "$hwm0" "$cpu0" "$pub0" >>"$samples"
log "soak start: RSS $((rss0 / 1024)) MiB (HWM $((hwm0 / 1024)) MiB), $pub0 'policy published' so far;" \
    "dnsperf -Q $SOAK_QPS -q $outstanding -S $STATS_EVERY -l $dur"

setsid bash -c 'exec "$@"' _ $( [ -n "$CLIENT_CPU" ] && echo taskset -c "$CLIENT_CPU" ) \
    dnsperf -s 127.0.0.1 -p "$port" -c 4 -t 2 -O suppress=timeout,unexpected -d "$cache/q-mixed-$SIZE.txt" \
    -l "$dur" -Q "$SOAK_QPS" -q "$outstanding" -S "$STATS_EVERY" >"$work/dnsperf-soak.txt" 2>&1 &
dpid=$!; pids+=("$dpid")
t0=$(date +%s)
dp_cpu=0 nsd_cpu0=$(cpu_s "$nsd_pid") nsd_cpu=0

mapfile -t added < "$cache/added-$SIZE.txt"
reloads=0 checks_ok=0 checks_bad=0 died=0
next_reload=$RELOAD_EVERY next_sample=$SAMPLE_EVERY
reload_log=$work/reloads.tsv
printf 'n\tt_s\tmv_epoch\tnow_active\tprobe\twant\tpicked_up_after_s\n' >"$reload_log"
while kill -0 "$dpid" 2>/dev/null; do
    now=$(( $(date +%s) - t0 ))
    if ! kill -0 "$qpid" 2>/dev/null; then died=1; log "qalqan DIED at t=${now}s"; break; fi
    c=$(cpu_s "$dpid"); [ "$c" = 0 ] || dp_cpu=$c          # last value before dnsperf exits
    nsd_cpu=$(cpu_s "$nsd_pid")
    read -r sd cd < <(sock_drops "$port"); sdrop=$sd; [ "$cd" = 0 ] || cdrop=$cd   # client sockets vanish at the end
    if [ "$now" -ge "$next_sample" ]; then
        read -r rss hwm < <(mem "$qpid")
        pub=$(grep -c 'policy published' "$qlog" || true)
        printf '%s\t%s\t%s\t%s\t%s\tsample\n' "$now" "$rss" "$hwm" "$(cpu_s "$qpid")" "$pub" >>"$samples"
        log "t=${now}s RSS $((rss / 1024)) MiB HWM $((hwm / 1024)) MiB cpu $(cpu_s "$qpid")s published $pub"
        next_sample=$(( next_sample + SAMPLE_EVERY ))
    fi
    if [ "$now" -ge "$next_reload" ] && [ "$now" -lt $(( dur - 5 )) ]; then
        reloads=$(( reloads + 1 ))
        if (( reloads % 2 )); then active=list-$SIZE-r want=NXDOMAIN
        else active=list-$SIZE want=NOERROR; fi
        src=$cache/$active.domains
        # atomic replace: temp copy in the same directory, then rename over the list
        tmp=$(mktemp "$work/lists/.list.domains.XXXXXX")
        cp "$src" "$tmp"
        t_mv=$(date +%s.%N)
        mv -f "$tmp" "$list"
        # probe: a name only in the -r variant (a fresh one each time the -r list goes in; policy is
        # checked before the cache, so re-using it after switching back is fine)
        probe=${added[$(( ((reloads - 1) / 2 + 2) % ${#added[@]} ))]}
        w=$(wait_rcode "$port" "$probe" "$want" 20 "$t_mv")
        if [ "$w" = never ]; then checks_bad=$(( checks_bad + 1 )); else checks_ok=$(( checks_ok + 1 )); fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$reloads" "$now" "$t_mv" "$active" "$probe" "$want" "$w" >>"$reload_log"
        log "reload #$reloads at t=${now}s -> $active: $probe $want after ${w}s"
        next_reload=$(( next_reload + RELOAD_EVERY ))
    fi
    sleep 1
done
wait "$dpid" 2>/dev/null || true
set +e   # from here on: collect and report whatever is there
tend=$(( $(date +%s) - t0 ))
alive=yes; kill -0 "$qpid" 2>/dev/null || alive=no
read -r rss1 hwm1 < <(mem "$qpid")
cpu1=$(cpu_s "$qpid")
runq1=$(runq_s "$qpid") load1=$(cut -d' ' -f1-3 /proc/loadavg)
read -r udp_in1 udp_rcvbuf1 < <(udp_errs)
pub1=$(grep -c 'policy published' "$qlog" || true)
printf '%s\t%s\t%s\t%s\t%s\tend\n' "$tend" "$rss1" "$hwm1" "$cpu1" "$pub1" >>"$samples"
# last check after the load: the active list still answers right
final=$(dnsq "$port" "$blocked"); final_allowed=$(dnsq "$port" "$allowed")

# ---------------------------------------------------------------- report
out=$work/dnsperf-soak.txt
sent=$(field 'Queries sent' "$out"); completed=$(field 'Queries completed' "$out"); lost=$(field 'Queries lost' "$out")
rcodes=$(sed -n 's/^ *Response codes:[[:space:]]*//p' "$out" | head -1)
servfail=$(sed -n 's/.*SERVFAIL \([0-9]*\).*/\1/p' <<<"$rcodes"); servfail=${servfail:-0}
lat=$(sed -n 's/^ *Average Latency (s):[[:space:]]*//p' "$out" | head -1)
qps=$(field 'Queries per second' "$out")
# answered qps per dnsperf interval -> per-minute means, and the intervals below 90 % of the offered rate
# (with the time since the last list replacement, to tell reload stalls from other hiccups)
intervals=$(python3 - "$out" "$reload_log" "$SOAK_QPS" "$STATS_EVERY" <<'PY'
import re, sys
out, rl, rate, step = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
pts = [(float(a), float(b)) for a, b in re.findall(r'^(\d+\.\d+): ([\d.]+)$', open(out).read(), re.M)]
if not pts:
    print('n/a'); sys.exit()
t0 = pts[0][0] - step
mv = [float(l.split('\t')[2]) for l in open(rl).read().splitlines()[1:] if l.strip()]
per_min = {}
for t, q in pts:
    per_min.setdefault(int((t - t0 - 1e-6) // 60), []).append(q)
print('per-minute mean answered qps: ' + ' '.join('%.0f' % (sum(v) / len(v)) for _, v in sorted(per_min.items())))
low = [(t, q) for t, q in pts if q < 0.9 * rate]
desc = []
for t, q in low:
    since = [t - m for m in mv if m <= t]
    desc.append('t=%.0fs %.0f qps%s' % (t - t0, q, (' (%.0fs after reload)' % min(since)) if since else ''))
print('%d of %d %gs-intervals below 90%% of the offered rate%s' % (
    len(low), len(pts), step, (': ' + ', '.join(desc[:30]) + (' ...' if len(desc) > 30 else '')) if desc else ''))
PY
)
maxrss=$(awk -F'\t' 'NR>1 && $2>m{m=$2} END{print m+0}' "$samples")
nwarn=$(grep -c -E ' (WARN|ERROR) ' "$qlog" || true)
soak_pub=$(( pub1 - pub0 ))
cpu_us=$(python3 -c "c=${completed:-0}; print('%.2f' % (($cpu1 - $cpu0) * 1e6 / c) if c else '-')")
{
echo
echo "==================== qalqan soak summary ===================="
echo "duration           ${SOAK_MINUTES} min (loaded ${tend}s), offered ${SOAK_QPS} qps open loop (dnsperf -Q), mixed $SIZE"
echo "qalqan             alive at end: $alive  (pid $qpid, threads 1, port $port; upstream NSD 127.0.0.1:$up_port)"
echo "RSS (VmRSS)        start $((rss0 / 1024)) MiB, end $((rss1 / 1024)) MiB, max sampled $((maxrss / 1024)) MiB; VmHWM end $((hwm1 / 1024)) MiB"
echo "queries            sent ${sent:-?}, completed ${completed:-?}, lost ${lost:-?} ($(python3 -c "s=${sent:-0}; print('%.4f%%' % (100.0*${lost:-0}/s) if s else '-')"))"
echo "achieved qps       ${qps:-?} (capacity measured: ${cap:-not measured})"
sed 's/^/    /' <<<"$intervals"
echo "latency (s)        ${lat:-?}"
echo "SERVFAIL           $servfail"
echo "rcode mix          ${rcodes:-?}"
echo "server CPU         $(python3 -c "print('%.1f s over the soak (%.0f %% of one core)' % ($cpu1 - $cpu0, 100.0 * ($cpu1 - $cpu0) / max(1, $tend)))") = ${cpu_us} us/query"
echo "server starved     $(python3 -c "print('%.1f' % ($runq1 - $runq0))") s runnable-but-waiting for a CPU (schedstat, all threads); load avg start $load0, end $load1"
echo "client side        dnsperf CPU $(python3 -c "print('%.0f %%' % (100.0 * $dp_cpu / max(1, $tend)))"), NSD CPU $(python3 -c "print('%.0f %%' % (100.0 * ($nsd_cpu - $nsd_cpu0) / max(1, $tend)))") of one core${CLIENT_CPU:+ (both on CPU $CLIENT_CPU)}"
echo "socket drops       qalqan's socket(s) +$(( sdrop - sdrop0 )), dnsperf's sockets $cdrop (receive buffer full; /proc/net/udp)"
echo "UDP drops (host)   InErrors +$(( udp_in1 - udp_in0 )), RcvbufErrors +$(( udp_rcvbuf1 - udp_rcvbuf0 )) during the soak (/proc/net/snmp: whole host, any socket)"
echo "list replacements  $reloads (every ${RELOAD_EVERY}s); 'policy published' during soak: $soak_pub (total $pub1 incl. $pub0 at start-up)"
echo "reload checks      picked up: $checks_ok, NOT picked up within 20 s: $checks_bad; pickup s after mv: $(awk -F'\t' 'NR>1{printf "%s ", $7}' "$reload_log")"
echo "after soak         blocked $blocked -> $final; allowed $allowed -> $final_allowed"
echo "qalqan log         $(du -h "$qlog" | cut -f1), $(wc -l <"$qlog") lines; WARN/ERROR: $nwarn line(s)"
grep -E ' (WARN|ERROR) ' "$qlog" | sed -E 's/^\S+ //' | sort | uniq -c | sort -rn | head -15 | sed 's/^/    /'
echo "files              $work  (qalqan.log, dnsperf-*.txt, samples.tsv, reloads.tsv, qalqan.toml)"
echo "============================================================="
} | tee "$work/summary.txt"
[ "$died" = 0 ] && [ "$alive" = yes ] || exit 1
