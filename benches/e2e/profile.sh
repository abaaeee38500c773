#!/usr/bin/env bash
# Where the time goes on one workload: qalqan (one worker, pinned to CPU 0) under `perf record -g` while
# dnsperf (CPU 1, with the NSD upstream) sends the shared harness's queries; prints CPU µs/query and the
# top of `perf report`. Loopback only; every process it starts is stopped.
#
#   benches/e2e/profile.sh miss               # or blocked | cached | mixed
#   SECONDS_PER=5 PERF=0 benches/e2e/profile.sh miss   # CPU µs/query only, no perf
#   PERF=syscalls benches/e2e/profile.sh miss   # system calls per query (recvmmsg, sendmmsg, epoll_wait, …)
#   CALLGRIND=1 benches/e2e/profile.sh miss   # user-space instructions per query under callgrind
#       (repeatable on this noisy machine: QUERIES queries at RATE qps after start-up, counters zeroed
#       once serving; a 1000-name list so start-up under valgrind is quick)
#
# Environment: QALQAN_BIN (default target/release/qalqan), BENCH_DIR (../shared/bench), BENCH_CACHE
# (/tmp/bench-cache, filled by a harness run), SIZE (100k), SECONDS_PER (5), PERF (1), OUT (/tmp/qalqan-profile),
# CALLGRIND (0), QUERIES (20000), RATE (2000).
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-100k}
SECONDS_PER=${SECONDS_PER:-5}
PERF=${PERF:-1}
OUT=${OUT:-/tmp/qalqan-profile}
workload=${1:-miss}
case $workload in
    blocked) f=$cache/q-blocked-$SIZE.txt ;;
    cached) f=$cache/q-cached.txt ;;
    mixed) f=$cache/q-mixed-$SIZE.txt ;;
    miss) f=$cache/q-miss.txt ;;
    *) echo "usage: $0 blocked|cached|mixed|miss" >&2; exit 2 ;;
esac
need_data "list-$SIZE.domains" q-warm.txt root.zone "$(basename "$f")"
mkdir -p "$OUT"
work=$(mktemp -d /tmp/qalqan-profile.XXXXXX)
up_port=15360 port=15361
start_nsd $up_port "$work" taskset -c 1
qalqan_config "$work/q.toml" $port $up_port "$cache/list-$SIZE.domains"
if [ "${CALLGRIND:-0}" = 1 ]; then
    QUERIES=${QUERIES:-20000} RATE=${RATE:-2000}
    head -1000 "$cache/list-$SIZE.domains" >"$work/list.domains"
    sed -i "s|source = .*|source = \"$work/list.domains\"|" "$work/q.toml"
    setsid taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind-$workload.out" \
        "$QALQAN_BIN" run --config "$work/q.toml" 2>"$work/qalqan.log" &
    pids+=($!)
    for _ in $(seq 600); do grep -q ready "$work/qalqan.log" && break; sleep 0.1; done
    if [ "$workload" = cached ] || [ "$workload" = mixed ]; then
        head -"$QUERIES" "$f" >"$work/q.txt"
        taskset -c 1 dnsperf -s 127.0.0.1 -p $port -d "$work/q.txt" -n 1 -c 1 -q 50 -Q "$RATE" -t 5 >/dev/null 2>&1 || true
    fi
    if [ "$workload" = blocked ]; then   # names of the cut list, so that they are blocked
        awk -v n="$QUERIES" '{a[NR] = $1} END {for (i = 0; i < n; i++) print a[i % NR + 1], "A"}' "$work/list.domains" >"$work/q.txt"
    else
        head -"$QUERIES" "$f" >"$work/q.txt"
    fi
    callgrind_control -z >/dev/null
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $port -d "$work/q.txt" -n 1 -c "${CLIENTS:-4}" -q "${OUTSTANDING:-50}" -Q "$RATE" -t 5 2>&1)
    callgrind_control -d >/dev/null
    done_q=$(awk '/Queries completed/ {print $3}' <<<"$out")
    sleep 1
    last=$(ls -t "$OUT/callgrind-$workload.out"* | head -1)
    ir=$(callgrind_annotate "$last" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    echo "$workload: $done_q queries answered ($(grep -o "Response codes:.*" <<<"$out")), $(awk -v i="$ir" -v n="$done_q" 'BEGIN {printf "%.0f", i/n}') instructions/query (user space; $last)"
    callgrind_annotate "$last" 2>/dev/null | sed -n '/file:function/,$p' | head -40 >"$OUT/callgrind-$workload.txt"
    exit 0
fi
setsid taskset -c 0 "$QALQAN_BIN" run --config "$work/q.toml" 2>"$work/qalqan.log" &
qpid=$!
pids+=($qpid)
for _ in $(seq 100); do grep -q ready "$work/qalqan.log" && break; sleep 0.1; done
if [ "$workload" = cached ] || [ "$workload" = mixed ]; then
    for _ in 1 2; do taskset -c 1 dnsperf -s 127.0.0.1 -p $port -d "$cache/q-warm.txt" -n 1 -c 4 -q 100 >/dev/null 2>&1 || true; done
fi
if [ "$PERF" = syscalls ]; then
    ev=syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex
    perf stat -e "$ev" -p $qpid -o "$OUT/syscalls-$workload.txt" -- sleep "$SECONDS_PER" >/dev/null 2>&1 &
    perfpid=$!
elif [ "$PERF" = 1 ]; then
    perf record -F 4999 -g -p $qpid -o "$OUT/perf-$workload.data" -- sleep "$SECONDS_PER" >/dev/null 2>&1 &
    perfpid=$!
fi
c0=$(cpu_s $qpid)
out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $port -d "$f" -l "$SECONDS_PER" -c 4 -q 100 2>&1)
c1=$(cpu_s $qpid)
done_q=$(awk '/Queries completed/ {print $3}' <<<"$out")
qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
echo "$workload: $done_q queries, $qps qps, $(awk -v a="$c0" -v b="$c1" -v n="$done_q" 'BEGIN {printf "%.2f", (b-a)*1e6/n}') cpu us/q"
if [ "$PERF" = syscalls ]; then
    wait $perfpid || true
    awk -v n="$done_q" '/syscalls:/ {gsub(",", "", $1); printf "  %-32s %8.3f per query\n", $2, $1 / n}' "$OUT/syscalls-$workload.txt"
elif [ "$PERF" = 1 ]; then
    wait $perfpid || true
    perf report -i "$OUT/perf-$workload.data" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -60 | tee "$OUT/report-$workload.txt"
fi
