#!/usr/bin/env bash
# Does a list reload cost the queries served meanwhile? Open-loop load at RATE qps for 6 s per round;
# in every other round, 2 s in, the list file is replaced (atomically, by rename; the harness's
# 1 %-different variant and back) and qalqan gets SIGHUP, as the harness's reload test does. Prints
# per round whether it reloaded, queries lost, SERVFAIL and the worst latency, then the median and worst
# of the worst latencies with and without a reload: what the reload adds over what the same load shows
# anyway. One worker pinned to CPU 0 (so the build shares its CPU), dnsperf and NSD on CPU 1. Loopback only.
#
#   benches/e2e/reload-latency.sh                     # 1M list, blocked names, 20k qps, 8 rounds
#   QUERIES=mixed ROUNDS=12 benches/e2e/reload-latency.sh
#
# Environment: QALQAN_BIN, BENCH_DIR, BENCH_CACHE (see common.sh), SIZE (1m), RATE (20000), ROUNDS (8),
# QUERIES (blocked | mixed: the harness's query file of that name for SIZE).
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-1m}
RATE=${RATE:-20000}
ROUNDS=${ROUNDS:-8}
QUERIES=${QUERIES:-blocked}
need_data "list-$SIZE.domains" "list-$SIZE-r.domains" q-warm.txt "q-$QUERIES-$SIZE.txt" root.zone
work=$(mktemp -d /tmp/qalqan-reload-latency.XXXXXX)
up_port=15387 port=15388
start_nsd $up_port "$work" taskset -c 1
cp "$cache/list-$SIZE.domains" "$work/list.domains"
qalqan_config "$work/q.toml" $port $up_port "$work/list.domains"
start_qalqan "$work/q.toml" "$work/qalqan.log"
qpid=$qalqan_pid
dp() { taskset -c 1 dnsperf -s 127.0.0.1 -p $port "$@" 2>&1; }
for _ in 1 2; do dp -d "$cache/q-warm.txt" -n 1 -c 4 -q 100 >/dev/null || true; done
printf '%-6s %-7s %8s %9s %14s\n' round reload lost SERVFAIL "max latency ms"
variant=-r
: >"$work/res"
for r in $(seq 1 "$ROUNDS"); do
    reload=$([ $((r % 2)) = 1 ] && echo yes || echo no)
    if [ "$reload" = yes ]; then
        (sleep 2; cp "$cache/list-$SIZE$variant.domains" "$work/l.tmp"; mv "$work/l.tmp" "$work/list.domains"; kill -HUP $qpid) &
        changer=$!
    fi
    out=$(dp -d "$cache/q-$QUERIES-$SIZE.txt" -l 6 -c 4 -q $((RATE * 2 + 1000)) -t 2 -Q "$RATE" || true)
    if [ "$reload" = yes ]; then
        wait $changer
        variant=$([ "$variant" = -r ] && echo "" || echo -r)
    fi
    sf=$(grep -o 'SERVFAIL [0-9]*' <<<"$out" | awk '{print $2}' || true)
    max=$(sed -n 's/.*Average Latency.*max \([0-9.]*\)).*/\1/p' <<<"$out" | awk '{printf "%.1f", $1 * 1000}')
    printf '%-6s %-7s %8s %9s %14s\n' "$r" "$reload" "$(awk '/Queries lost/ {print $3}' <<<"$out")" "${sf:-0}" "$max"
    echo "$reload $max" >>"$work/res"
    sleep 1
done
python3 - "$work/res" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
for kind in ("yes", "no"):
    v = [float(m) for k, m in rows if k == kind]
    if v:
        print(f"reload={kind}: worst latency median {st.median(v):.1f} ms, max {max(v):.1f} ms over {len(v)} rounds")
PY
grep -o 'policy published.*took_ms=[0-9]*' "$work/qalqan.log" | tail -n +2 | sed 's/^/  /'
