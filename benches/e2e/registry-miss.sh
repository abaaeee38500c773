#!/usr/bin/env bash
# What does the real registry dump cost a cache miss? Three qalqan servers of the same build alive at the
# same time (one worker each, all pinned to CPU 0; dnsperf and the NSD upstream on CPU 1):
#   none    a one-name domains list (no registry)
#   dump    ../shared/data/regulator-ru-zapret/dump-2016-06-13.csv as registry-csv, default settings
#           (listed addresses not enforced: no answer-IP rules)
#   answer  the same dump with ip_rules = "answer" (19,271 answer-IP prefixes: every A record is checked)
# Each round sends every server a slice of unique names (each name once, so every query is a miss and
# its answer goes through the answer checks), in rotating order, so what the neighbours of this shared
# machine do lands on all three alike. Prints the median CPU µs/query (user + system of the whole
# process) of each and the ratios to `none`. Loopback only; every process it starts is stopped.
#
#   cargo build --release && benches/e2e/registry-miss.sh      # ROUNDS=6, NAMES=60000 per slice
#
# Needs nsd and dnsperf (apt-get install nsd dnsperf) and ../shared/data.
set -euo pipefail
. "$(dirname "$0")/common.sh"   # paths, QALQAN_BIN, BENCH_DIR, cleanup of what is started
DUMP=${DUMP:-$(cd "$repo/.." && pwd)/shared/data/regulator-ru-zapret/dump-2016-06-13.csv}
ROUNDS=${ROUNDS:-6}
VARIANTS=${VARIANTS:-none dump answer}   # a build before ip_rules existed: VARIANTS="none dump"
NAMES=${NAMES:-60000}
[ -x "$QALQAN_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -s "$DUMP" ] || { echo "missing $DUMP (../shared/data)" >&2; exit 1; }
command -v nsd >/dev/null && command -v dnsperf >/dev/null || { echo "needs nsd and dnsperf" >&2; exit 1; }

work=$(mktemp -d /tmp/qalqan-registry-miss.XXXXXX)
up_port=15380

# the upstream: every name under miss.bench answers an address no list holds
cat >"$work/root.zone" <<ZONE
\$TTL 3600
. IN SOA ns.bench. h.bench. 1 3600 600 86400 300
. IN NS ns.bench.
ns.bench. IN A 127.0.0.1
*.miss.bench. IN A 198.18.7.9
ZONE
PORT=$up_port ZONE=$work/root.zone WORKDIR=$work/upstream setsid taskset -c 1 "$BENCH_DIR/upstream/nsd" >"$work/nsd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do dig +short +time=1 +tries=1 @127.0.0.1 -p $up_port x.miss.bench >/dev/null 2>&1 && break; sleep 0.2; done

echo "unused.invalid" >"$work/none.txt"
declare -A port qpid
port[none]=15381 port[dump]=15382 port[answer]=15383
read -ra variants <<<"$VARIANTS"
for v in "${variants[@]}"; do
    case $v in
        none) list="source = \"$work/none.txt\"" ;;
        dump) list="source = \"$DUMP\"
format = \"registry-csv\"" ;;
        answer) list="source = \"$DUMP\"
format = \"registry-csv\"
ip_rules = \"answer\"" ;;
    esac
    cat >"$work/$v.toml" <<TOML
[server]
listen = ["127.0.0.1:${port[$v]}"]
threads = 1
[upstream]
servers = ["127.0.0.1:$up_port"]
timeout_ms = 2000
[cache]
max_entries = 2000000
[[lists]]
name = "reg"
$list
TOML
    setsid taskset -c 0 "$QALQAN_BIN" run --config "$work/$v.toml" >/dev/null 2>"$work/$v.log" &
    qpid[$v]=$!
    pids+=($!)
    for _ in $(seq 100); do grep -q ready "$work/$v.log" && break; sleep 0.1; done
    grep -q ready "$work/$v.log" || { echo "qalqan ($v) did not start: $work/$v.log" >&2; exit 1; }
done
"$QALQAN_BIN" check --config "$work/dump.toml" | sed -n 1,3p

# one VARIANT SLICE: unique names, each once; prints "cpu-us/q qps"
one() {
    local v=$1 f="$work/slice-$2" u0 s0 u1 s1 out n t
    read -r u0 s0 < <(awk '{sub(/.*\) /,""); print $12, $13}' "/proc/${qpid[$v]}/stat")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[$v]}" -d "$f" -n 1 -c 4 -q 100 2>&1)
    read -r u1 s1 < <(awk '{sub(/.*\) /,""); print $12, $13}' "/proc/${qpid[$v]}/stat")
    n=$(awk '/Queries completed/ {print $3}' <<<"$out")
    t=$(awk '/Run time \(s\)/ {print $4}' <<<"$out")
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="${n:-0}" -v t="${t:-1}" -v clk="$(getconf CLK_TCK)" \
        'BEGIN { if (n == 0) n = 1; printf "%.3f %.0f\n", (u + s) * 1e6 / clk / n, n / t }'
}

slice=0
: >"$work/res"
for r in $(seq "$ROUNDS"); do
    k=$((r % ${#variants[@]}))
    order=("${variants[@]:$k}" "${variants[@]:0:$k}")
    declare -A got=()
    for v in "${order[@]}"; do
        awk -v s=$slice -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "m%x-%d.miss.bench A\n", s * n + i, s }' >"$work/slice-$slice"
        got[$v]=$(one "$v" $slice)
        slice=$((slice + 1))
    done
    line="round $r:"
    for v in "${variants[@]}"; do
        echo "$v ${got[$v]}" >>"$work/res"
        line+="  $v ${got[$v]%% *}"
    done
    echo "$line µs/q"
done
python3 - "$work/res" <<'PY'
import statistics as st, sys
rows = {}
for l in open(sys.argv[1]):
    v, cpu, _ = l.split()
    rows.setdefault(v, []).append(float(cpu))
base = st.median(rows["none"])
print(f"miss CPU µs/q, median of {len(rows['none'])} rounds: " +
      "  ".join(f"{v} {st.median(c):.2f} ({st.median(c) / base:.3f}x)" for v, c in rows.items()))
PY
