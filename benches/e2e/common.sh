# Shared by the e2e scripts (sourced, not run): paths, the harness's data sets, the NSD upstream,
# cleanup of everything started, and CPU seconds of a process.
# Environment: QALQAN_BIN (default target/release/qalqan), BENCH_DIR (../shared/bench), BENCH_CACHE
# (/tmp/bench-cache, filled by a harness run).
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
QALQAN_BIN=${QALQAN_BIN:-$repo/target/release/qalqan}
BENCH_DIR=${BENCH_DIR:-$(cd "$repo/.." && pwd)/shared/bench}
cache=${BENCH_CACHE:-/tmp/bench-cache}

# need_data FILE...: every file must be in the data cache; the binary must be built
need_data() {
    local f
    for f in "$@"; do
        [ -s "$cache/$f" ] || { echo "missing $cache/$f: run the shared harness once (it generates the data)" >&2; exit 1; }
    done
    [ -x "$QALQAN_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_nsd PORT WORKDIR [taskset prefix...]: the harness's NSD upstream on 127.0.0.1:PORT, waited for
start_nsd() {
    local port=$1 dir=$2
    shift 2
    PORT=$port ZONE=$cache/root.zone WORKDIR=$dir/upstream setsid "$@" "$BENCH_DIR/upstream/nsd" >"$dir/nsd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" google.com >/dev/null 2>&1 && return; sleep 0.2; done
    echo "NSD did not come up on port $port (see $dir/nsd.log)" >&2
    exit 1
}

# cpu_s PID: user + system CPU seconds of a process so far
cpu_s() { awk -v clk="$(getconf CLK_TCK)" '{sub(/.*\) /,""); printf "%.3f", ($12+$13)/clk}' "/proc/$1/stat"; }

# qalqan_config FILE PORT UPSTREAM_PORT LIST: the harness adapter's settings (one worker, 200k cache
# entries, 2 s upstream timeout); UPSTREAM_MAX_INFLIGHT, if set, overrides upstream.max_inflight
qalqan_config() {
    cat >"$1" <<TOML
[server]
listen = ["127.0.0.1:$2"]
threads = 1
${RELOAD_NICE:+reload_nice = $RELOAD_NICE}
[upstream]
servers = ["127.0.0.1:$3"]
timeout_ms = 2000
${UPSTREAM_MAX_INFLIGHT:+max_inflight = $UPSTREAM_MAX_INFLIGHT}
[cache]
max_entries = 200000
[[lists]]
name = "bench"
source = "$4"
TOML
}

# start_qalqan CONFIG LOG: qalqan on CPU 0 (QALQAN_CPUS: a taskset list), waited for until it serves; its pid in $qalqan_pid
start_qalqan() {
    setsid taskset -c "${QALQAN_CPUS:-0}" "$QALQAN_BIN" run --config "$1" >/dev/null 2>"$2" &
    qalqan_pid=$!
    pids+=($qalqan_pid)
    for _ in $(seq 100); do grep -q ready "$2" && return; sleep 0.1; done
    echo "qalqan did not start: $2" >&2
    exit 1
}
