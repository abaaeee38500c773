#!/usr/bin/env bash
# Worker scaling: qalqan with `threads = 1` and `threads = 2` (one SO_REUSEPORT UDP socket and fast-path
# task per worker) on the same workload, nothing pinned (on a 2-core box dnsperf and the upstream share the
# cores with the workers, so this shows what a second worker buys when the client competes for CPU).
# Uses the shared harness's data sets and NSD upstream; loopback only; every process it starts is stopped.
#
#   benches/e2e/scaling.sh                     # workloads blocked, cached, mixed; 10 s each
#   WORKLOADS=mixed SECONDS_PER=5 benches/e2e/scaling.sh
#
# Environment: QALQAN_BIN (default target/release/qalqan), BENCH_DIR (../shared/bench), BENCH_CACHE
# (/tmp/bench-cache, filled by a harness run), SIZE (100k), THREADS ("1 2"), CLIENTS (dnsperf -c, 8).
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-100k}
THREADS=${THREADS:-1 2}
WORKLOADS=${WORKLOADS:-blocked cached mixed}
SECONDS_PER=${SECONDS_PER:-10}
CLIENTS=${CLIENTS:-8}
need_data "list-$SIZE.domains" q-warm.txt q-cached.txt "q-blocked-$SIZE.txt" "q-mixed-$SIZE.txt" root.zone
work=$(mktemp -d /tmp/qalqan-scaling.XXXXXX)
up_port=15350 port=15351
start_nsd $up_port "$work"

printf '%-8s %-8s %10s %12s\n' threads workload qps "cpu us/q"
for t in $THREADS; do
    cat >"$work/q.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = $t
[upstream]
servers = ["127.0.0.1:$up_port"]
[cache]
max_entries = 200000
[[lists]]
name = "bench"
source = "$cache/list-$SIZE.domains"
TOML
    "$QALQAN_BIN" run --config "$work/q.toml" 2>"$work/qalqan-$t.log" &
    qpid=$!
    for _ in $(seq 100); do grep -q ready "$work/qalqan-$t.log" && break; sleep 0.1; done
    dnsperf -s 127.0.0.1 -p $port -d "$cache/q-warm.txt" -n 1 -c 4 -q 100 >/dev/null 2>&1 || true
    for w in $WORKLOADS; do
        case $w in
            blocked) f=$cache/q-blocked-$SIZE.txt ;;
            cached) f=$cache/q-cached.txt ;;
            mixed) f=$cache/q-mixed-$SIZE.txt ;;
            *) echo "unknown workload '$w' (blocked, cached, mixed)" >&2; exit 2 ;;
        esac
        c0=$(cpu_s $qpid)
        out=$(dnsperf -s 127.0.0.1 -p $port -d "$f" -l "$SECONDS_PER" -c "$CLIENTS" -q 200 2>&1)
        c1=$(cpu_s $qpid)
        qps=$(sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' <<<"$out")
        done_q=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' <<<"$out")
        printf '%-8s %-8s %10.0f %12.2f\n' "$t" "$w" "$qps" "$(python3 -c "print(($c1-$c0)*1e6/max(1,$done_q))")"
    done
    kill -TERM $qpid; wait $qpid 2>/dev/null || true
done
