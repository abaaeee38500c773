#!/usr/bin/env bash
# What a stall of the worker costs: open-loop mixed load at RATE qps right after a flood of unique names
# (so most popular names must go upstream again, as in the harness's reload test, which follows its miss
# workload); 2 s in, qalqan is stopped for STALL s (SIGSTOP / SIGCONT), as a hypervisor's steal of its CPU
# or a reload build on the same CPU would. Per round: queries lost, SERVFAIL, the worst latency, and UDP
# receive-buffer drops (system-wide; `ss -uam` at the end shows qalqan's own sockets' drop counters).
# One worker pinned to CPU 0, dnsperf and the NSD upstream on CPU 1. Loopback only.
#
#   benches/e2e/stall.sh                      # 1M list, 20k qps, 300 ms stalls, 4 rounds
#   STALL=0.1 RATE=40000 ROUNDS=6 benches/e2e/stall.sh
#
# Environment: QALQAN_BIN, BENCH_DIR, BENCH_CACHE (see common.sh), SIZE (1m), RATE (20000), STALL (0.3),
# ROUNDS (4), UPSTREAM_MAX_INFLIGHT (default: qalqan's; 2048, the old default, gave SERVFAILs here).
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-1m}
RATE=${RATE:-20000}
STALL=${STALL:-0.3}
ROUNDS=${ROUNDS:-4}
need_data "list-$SIZE.domains" q-warm.txt q-miss.txt "q-mixed-$SIZE.txt" root.zone
work=$(mktemp -d /tmp/qalqan-stall.XXXXXX)
up_port=15385 port=15386
start_nsd $up_port "$work" taskset -c 1
qalqan_config "$work/q.toml" $port $up_port "$cache/list-$SIZE.domains"
start_qalqan "$work/q.toml" "$work/qalqan.log"
qpid=$qalqan_pid
dp() { taskset -c 1 dnsperf -s 127.0.0.1 -p $port "$@" 2>&1; }
for _ in 1 2; do dp -d "$cache/q-warm.txt" -n 1 -c 4 -q 100 >/dev/null || true; done
split -n "l/$ROUNDS" -d -a 3 "$cache/q-miss.txt" "$work/miss-"
printf '%-6s %8s %9s %14s %14s\n' round lost SERVFAIL "max latency s" "rcvbuf drops"
for r in $(seq 0 $((ROUNDS - 1))); do
    dp -d "$(printf '%s/miss-%03d' "$work" "$r")" -n 1 -c 4 -q 100 -t 2 >/dev/null || true
    nstat -n 2>/dev/null || true
    (sleep 2; kill -STOP $qpid; sleep "$STALL"; kill -CONT $qpid) &
    stopper=$!
    out=$(dp -d "$cache/q-mixed-$SIZE.txt" -l 6 -c 4 -q $((RATE * 2 + 1000)) -t 2 -Q "$RATE" || true)
    wait $stopper
    drops=$(nstat 2>/dev/null | awk '/UdpRcvbufErrors/ {print $2}')
    sf=$(grep -o 'SERVFAIL [0-9]*' <<<"$out" | awk '{print $2}' || true)
    printf '%-6s %8s %9s %14s %14s\n' $((r + 1)) "$(awk '/Queries lost/ {print $3}' <<<"$out")" "${sf:-0}" \
        "$(sed -n 's/.*Average Latency.*max \([0-9.]*\)).*/\1/p' <<<"$out")" "${drops:-0}"
done
echo "qalqan's UDP sockets (d = drops):"
ss -uampn 2>/dev/null | grep -A1 "pid=$qpid," | grep -o 'skmem:([^)]*)' | sed 's/.*rb\([0-9]*\).*d\([0-9]*\))/  rcvbuf \1 drops \2/' | sort | uniq -c
