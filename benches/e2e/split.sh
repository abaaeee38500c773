#!/usr/bin/env bash
# User vs system CPU per query, with the harness's dnsperf settings (-c 4 -q 100).
#
#   blocked (default): qalqan beside the harness's `floor` responder. floor is nearly all kernel, so the
#     user column is what qalqan adds on top of the system calls both make.
#   miss: qalqan alone, forwarding the harness's unique names to its NSD upstream (one disjoint slice
#     of q-miss per round, each name sent once, so every query is a miss; SECONDS_PER does not apply).
#
# Servers on CPU 0, dnsperf (and NSD) on CPU 1; loopback only; every process it starts is stopped.
#
#   benches/e2e/split.sh              # SIZE=1m (or 100k), SECONDS_PER=5, ROUNDS=3, WORKLOAD=blocked
#   WORKLOAD=miss benches/e2e/split.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-1m}
SECONDS_PER=${SECONDS_PER:-5}
ROUNDS=${ROUNDS:-3}
WORKLOAD=${WORKLOAD:-blocked}
case $WORKLOAD in
    blocked) need_data "list-$SIZE.domains" "q-blocked-$SIZE.txt" ;;
    miss) need_data "list-$SIZE.domains" q-miss.txt root.zone ;;
    *) echo "WORKLOAD must be blocked or miss" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/qalqan-split.XXXXXX)
floor_port=15371 port=15372 up_port=15373
upstream_port=9
if [ "$WORKLOAD" = blocked ]; then
    # floor's C source, as the harness builds it
    sed -n '/cat > "\$WORKDIR\/floor.c" <<.C./,/^C$/p' "$BENCH_DIR/targets/floor" | sed '1d;$d' >"$work/floor.c"
    gcc -O2 -o "$work/floor" "$work/floor.c"
    setsid taskset -c 0 "$work/floor" $floor_port &
    fpid=$!
    pids+=($fpid)
else
    start_nsd $up_port "$work" taskset -c 1
    upstream_port=$up_port
    # one disjoint slice of the unique names per round
    split -n "l/$ROUNDS" -d -a 3 "$cache/q-miss.txt" "$work/miss."
fi
qalqan_config "$work/q.toml" $port $upstream_port "$cache/list-$SIZE.domains"
setsid taskset -c 0 "$QALQAN_BIN" run --config "$work/q.toml" 2>"$work/qalqan.log" &
qpid=$!
pids+=($qpid)
for _ in $(seq 100); do grep -q ready "$work/qalqan.log" && break; sleep 0.1; done
# user and system CPU seconds of a process
cpu_split() { awk -v clk="$(getconf CLK_TCK)" '{sub(/.*\) /,""); printf "%.3f %.3f\n", $12/clk, $13/clk}' "/proc/$1/stat"; }
measure() { # NAME PID PORT QUERYFILE DNSPERF-LENGTH-ARGS...
    local u0 s0 u1 s1 out n name=$1 pid=$2 p=$3 file=$4
    shift 4
    read -r u0 s0 < <(cpu_split "$pid")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$p" -d "$file" "$@" -c 4 -q 100 -t 2 2>&1)
    read -r u1 s1 < <(cpu_split "$pid")
    n=$(awk '/Queries completed/ {print $3}' <<<"$out")
    awk -v n="$n" -v u0="$u0" -v u1="$u1" -v s0="$s0" -v s1="$s1" -v name="$name" 'BEGIN {
        printf "%-7s %8d queries  user %.2f  system %.2f  total %.2f µs/q\n", name, n, (u1-u0)*1e6/n, (s1-s0)*1e6/n, (u1-u0+s1-s0)*1e6/n }'
}
for r in $(seq "$ROUNDS"); do
    if [ "$WORKLOAD" = blocked ]; then
        measure floor $fpid $floor_port "$cache/q-blocked-$SIZE.txt" -l "$SECONDS_PER"
        measure qalqan $qpid $port "$cache/q-blocked-$SIZE.txt" -l "$SECONDS_PER"
    else
        # each name once (-n 1), so no query is answered from the cache
        measure qalqan $qpid $port "$(printf "%s/miss.%03d" "$work" $((r - 1)))" -n 1
    fi
done
