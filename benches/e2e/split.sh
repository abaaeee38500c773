#!/usr/bin/env bash
# User vs system CPU per query, qalqan beside the harness's `floor` responder, on the blocked workload
# with the harness's dnsperf settings (-c 4 -q 100): floor is nearly all kernel, so the user column is
# what qalqan adds on top of the system calls both make. Both servers on CPU 0, dnsperf on CPU 1;
# loopback only; every process it starts is stopped.
#
#   benches/e2e/split.sh              # SIZE=1m (or 100k), SECONDS_PER=5, ROUNDS=3
set -euo pipefail
. "$(dirname "$0")/common.sh"
SIZE=${SIZE:-1m}
SECONDS_PER=${SECONDS_PER:-5}
ROUNDS=${ROUNDS:-3}
need_data "list-$SIZE.domains" "q-blocked-$SIZE.txt"
work=$(mktemp -d /tmp/qalqan-split.XXXXXX)
floor_port=15371 port=15372
# floor's C source, as the harness builds it
sed -n '/cat > "\$WORKDIR\/floor.c" <<.C./,/^C$/p' "$BENCH_DIR/targets/floor" | sed '1d;$d' >"$work/floor.c"
gcc -O2 -o "$work/floor" "$work/floor.c"
setsid taskset -c 0 "$work/floor" $floor_port &
fpid=$!
pids+=($fpid)
cat >"$work/q.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1
[upstream]
servers = ["127.0.0.1:9"]
[[lists]]
name = "bench"
source = "$cache/list-$SIZE.domains"
TOML
setsid taskset -c 0 "$QALQAN_BIN" run --config "$work/q.toml" 2>"$work/qalqan.log" &
qpid=$!
pids+=($qpid)
for _ in $(seq 100); do grep -q ready "$work/qalqan.log" && break; sleep 0.1; done
# user and system CPU seconds of a process
cpu_split() { awk -v clk="$(getconf CLK_TCK)" '{sub(/.*\) /,""); printf "%.3f %.3f\n", $12/clk, $13/clk}' "/proc/$1/stat"; }
measure() { # NAME PID PORT
    local u0 s0 u1 s1 out n
    read -r u0 s0 < <(cpu_split "$2")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$3" -d "$cache/q-blocked-$SIZE.txt" -l "$SECONDS_PER" -c 4 -q 100 -t 2 2>&1)
    read -r u1 s1 < <(cpu_split "$2")
    n=$(awk '/Queries completed/ {print $3}' <<<"$out")
    awk -v n="$n" -v u0="$u0" -v u1="$u1" -v s0="$s0" -v s1="$s1" -v name="$1" 'BEGIN {
        printf "%-7s %8d queries  user %.2f  system %.2f  total %.2f µs/q\n", name, n, (u1-u0)*1e6/n, (s1-s0)*1e6/n, (u1-u0+s1-s0)*1e6/n }'
}
for _ in $(seq "$ROUNDS"); do
    measure floor $fpid $floor_port
    measure qalqan $qpid $port
done
