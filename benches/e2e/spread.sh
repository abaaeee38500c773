#!/usr/bin/env bash
# Does a query cost more with a 1M-rule list than with 100k? Two qalqan servers, one per list, alive at
# the same time (one worker each, both pinned to CPU 0; dnsperf and the NSD upstream on CPU 1), given the
# same workload in alternating order, ROUNDS runs of SECONDS_PER s each: what the neighbours of this shared
# machine do lands on both sizes alike, which it does not when the harness measures 100k and then 1M
# a minute or two later (its floor target, which has no list, has moved 10 % between its two sizes).
# Prints per workload the median CPU µs/query (user + system of the whole process) and user µs/query of
# each size and 1M against 100k. Loopback only; every process it starts is stopped.
#
#   benches/e2e/spread.sh                          # blocked cached mixed miss, 8 rounds of 2 s
#   WORKLOADS="cached mixed" ROUNDS=12 benches/e2e/spread.sh
#
# Before measuring, each server gets what the harness gives it first (its blocked queries for
# PRE_SECONDS, then two passes over the popular names), so the cache holds the same for both.
# Miss runs each send a slice of `q-miss` once, names no earlier run sent (the cache never answers them;
# 1M names in 2 × ROUNDS slices, so a miss run is shorter than SECONDS_PER).
#
# Environment: QALQAN_BIN (default target/release/qalqan), BENCH_DIR (../shared/bench), BENCH_CACHE
# (/tmp/bench-cache, filled by a harness run), WORKLOADS, ROUNDS (8), SECONDS_PER (2), PRE_SECONDS (10).
set -euo pipefail
. "$(dirname "$0")/common.sh"
WORKLOADS=${WORKLOADS:-blocked cached mixed miss}
ROUNDS=${ROUNDS:-8}
SECONDS_PER=${SECONDS_PER:-2}
PRE_SECONDS=${PRE_SECONDS:-10}
need_data list-100k.domains list-1m.domains q-warm.txt q-cached.txt q-blocked-100k.txt q-blocked-1m.txt \
    q-mixed-100k.txt q-mixed-1m.txt q-miss.txt root.zone
work=$(mktemp -d /tmp/qalqan-spread.XXXXXX)
up_port=15370
start_nsd $up_port "$work" taskset -c 1
declare -A port qpid
port[100k]=15371 port[1m]=15372
for size in 100k 1m; do
    qalqan_config "$work/$size.toml" "${port[$size]}" $up_port "$cache/list-$size.domains"
    start_qalqan "$work/$size.toml" "$work/$size.log"
    qpid[$size]=$qalqan_pid
    taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[$size]}" -d "$cache/q-blocked-$size.txt" -l "$PRE_SECONDS" -c 4 -q 100 >/dev/null 2>&1 || true
    for _ in 1 2; do taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[$size]}" -d "$cache/q-warm.txt" -n 1 -c 4 -q 100 >/dev/null 2>&1 || true; done
done
# the unique names, cut into one slice per miss run (2 × ROUNDS runs)
split -n "l/$((2 * ROUNDS))" -d -a 3 "$cache/q-miss.txt" "$work/miss-"

# one SIZE WORKLOAD SLICE: one closed-loop run (a miss run sends miss slice SLICE once);
# prints "cpu-us/q user-us/q qps"
one() {
    local size=$1 w=$2 f u0 s0 u1 s1 out n t len=(-l "$SECONDS_PER")
    case $w in
        blocked) f=$cache/q-blocked-$size.txt ;;
        cached) f=$cache/q-cached.txt ;;
        mixed) f=$cache/q-mixed-$size.txt ;;
        miss) f=$(printf '%s/miss-%03d' "$work" "$3"); len=(-n 1) ;;
    esac
    read -r u0 s0 < <(awk '{sub(/.*\) /,""); print $12, $13}' "/proc/${qpid[$size]}/stat")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[$size]}" -d "$f" "${len[@]}" -c 4 -q 100 2>&1)
    read -r u1 s1 < <(awk '{sub(/.*\) /,""); print $12, $13}' "/proc/${qpid[$size]}/stat")
    n=$(awk '/Queries completed/ {print $3}' <<<"$out")
    t=$(awk '/Run time \(s\)/ {print $4}' <<<"$out")
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="${n:-0}" -v t="${t:-1}" -v clk="$(getconf CLK_TCK)" \
        'BEGIN { if (n == 0) n = 1; printf "%.3f %.3f %.0f\n", (u + s) * 1e6 / clk / n, u * 1e6 / clk / n, n / t }'
}

printf '%-8s %22s %22s %10s\n' workload "100k µs/q (user)" "1M µs/q (user)" "1M/100k"
for w in $WORKLOADS; do
    : >"$work/$w.res"
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then a=$(one 100k "$w" $((2 * r - 2))); b=$(one 1m "$w" $((2 * r - 1)))
        else b=$(one 1m "$w" $((2 * r - 2))); a=$(one 100k "$w" $((2 * r - 1))); fi
        echo "$a $b" >>"$work/$w.res"
    done
    python3 - "$work/$w.res" "$w" <<'PY'
import statistics as st, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
m = lambda k: st.median(r[k] for r in rows)
a, au, b, bu = m(0), m(1), m(3), m(4)
lo, hi = min(r[0] for r in rows), max(r[0] for r in rows)
print(f"{sys.argv[2]:<8} {a:12.2f} ({au:.2f}) {b:14.2f} ({bu:.2f}) {b / a - 1:+9.1%}   (100k runs {lo:.2f}–{hi:.2f})")
PY
done
