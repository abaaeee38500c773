#!/usr/bin/env bash
# Worker scaling: qalqan with `threads = 1` and `threads = 2` (one SO_REUSEPORT UDP socket and fast-path
# task per worker) on the same workload, nothing pinned (on a 2-core box dnsperf and the upstream share the
# cores with the workers, so this shows what a second worker buys when the client competes for CPU), and
# a third row "1p": one worker pinned to CPU 0 with dnsperf and NSD pinned to CPU 1 (the single-core
# figure with the client on a core of its own).
# For each row and workload: qps, CPU µs/query of the qalqan process, and futex(2) calls per query
# counted by `perf stat -e syscalls:sys_enter_futex` on the qalqan process over the same window (the
# shared-lock check: a lock taken per query, contended across workers, shows up as futex calls; the
# fast path takes none, so what remains is the runtime parking an idle worker).
# Workload "miss": every name unique (q-miss, -n 1, a fresh slice per row), each one forwarded to NSD.
# Uses the shared harness's data sets and NSD upstream; loopback only; every process it starts is stopped.
#
#   benches/e2e/scaling.sh                     # workloads blocked, cached, miss; 10 s each
#   WORKLOADS=mixed SECONDS_PER=5 benches/e2e/scaling.sh
#
# Environment: QALQAN_BIN (default target/release/qalqan), BENCH_DIR (../shared/bench), BENCH_CACHE
# (/tmp/bench-cache, filled by a harness run), SIZE (100k), THREADS ("1 2 1p"), CLIENTS (dnsperf -c, 8).
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-100k}
THREADS=${THREADS:-1 2 1p}
WORKLOADS=${WORKLOADS:-blocked cached miss}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-8}
need_data "list-$SIZE.domains" q-warm.txt q-cached.txt "q-blocked-$SIZE.txt" "q-mixed-$SIZE.txt" q-miss.txt root.zone
work=$(mktemp -d /tmp/qalqan-scaling.XXXXXX)
up_port=15350 port=15351
start_nsd $up_port "$work" taskset -c 0-1
nsd_pids=$(pgrep -s "${pids[-1]}" || true)
# a slice of the unique names per row, so no row asks a name another row cached
rows=$(wc -w <<<"$THREADS")
split -n "l/$rows" -d "$cache/q-miss.txt" "$work/q-miss-"
perf_ok=1
command -v perf >/dev/null && perf stat -e syscalls:sys_enter_futex -- true >/dev/null 2>&1 || perf_ok=0

printf '%-8s %-8s %10s %12s %10s\n' threads workload qps "cpu us/q" "futex/q"
row=0
for t in $THREADS; do
    pin=() client_pin=()
    if [ "$t" = 1p ]; then
        pin=(taskset -c 0) client_pin=(taskset -c 1)
        for p in $nsd_pids; do taskset -a -p -c 1 "$p" >/dev/null 2>&1 || true; done
    fi
    cat >"$work/q.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = ${t%p}
[upstream]
servers = ["127.0.0.1:$up_port"]
[cache]
max_entries = 200000
[[lists]]
name = "bench"
source = "$cache/list-$SIZE.domains"
TOML
    "${pin[@]}" "$QALQAN_BIN" run --config "$work/q.toml" 2>"$work/qalqan-$t.log" &
    qpid=$!
    for _ in $(seq 100); do grep -q ready "$work/qalqan-$t.log" && break; sleep 0.1; done
    dnsperf -s 127.0.0.1 -p $port -d "$cache/q-warm.txt" -n 1 -c 4 -q 100 >/dev/null 2>&1 || true
    for w in $WORKLOADS; do
        case $w in
            blocked) f=$cache/q-blocked-$SIZE.txt ;;
            cached) f=$cache/q-cached.txt ;;
            mixed) f=$cache/q-mixed-$SIZE.txt ;;
            miss) f=$work/q-miss-$(printf '%02d' $row) ;;
            *) echo "unknown workload '$w' (blocked, cached, mixed, miss)" >&2; exit 2 ;;
        esac
        extra=()
        [ "$w" = miss ] && extra=(-n 1)
        if [ $perf_ok = 1 ]; then
            perf stat -x, -e syscalls:sys_enter_futex -p $qpid -o "$work/futex" -- sleep "$SECONDS_PER" &
            perf_pid=$!
        fi
        c0=$(cpu_s $qpid)
        out=$("${client_pin[@]}" dnsperf -s 127.0.0.1 -p $port -d "$f" -l "$SECONDS_PER" "${extra[@]}" -c "$CLIENTS" -q 200 2>&1)
        c1=$(cpu_s $qpid)
        futex=-
        if [ $perf_ok = 1 ]; then
            wait $perf_pid 2>/dev/null || true
            futex=$(awk -F, '/sys_enter_futex/ { print $1 }' "$work/futex")
        fi
        qps=$(sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' <<<"$out")
        done_q=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
        printf '%-8s %-8s %10.0f %12.2f %10s\n' "$t" "$w" "$qps" "$(python3 -c "print(($c1-$c0)*1e6/max(1,$done_q))")" \
            "$(python3 -c "f='$futex'; print('%.4f' % (int(f)/max(1,$done_q)) if f.isdigit() else '-')")"
    done
    kill -TERM $qpid; wait $qpid 2>/dev/null || true
    for p in $nsd_pids; do taskset -a -p -c 0-1 "$p" >/dev/null 2>&1 || true; done
    row=$((row + 1))
done
