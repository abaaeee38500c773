#!/usr/bin/env bash
# Recursive mode against Unbound on one loopback DNS hierarchy (issue #21's speed check).
#
# Three NSD authorities on 127.53.0.{1,2,3}:53 (root, TLD "bench.", leaf "leaf.bench." whose wildcard
# answers every name), both resolvers given the same root hints, one thread each, pinned to CPU 0;
# NSD and dnsperf on CPU 1. Workloads, each resolver in turn, in rounds:
#   miss     unique names nN.leaf.bench (every query a cold miss at the leaf; the delegations are warm)
#   cached   one name asked over and over
# Prints the median CPU µs/query (user + system of the whole resolver process) per workload and the
# ratio qalqan/unbound, then each resolver's RSS after MISS_FILL unique names (memory per cached entry).
# VALIDATE=1 signs the zones (ldns-signzone) and has both resolvers validate with the same trust anchor
# (qalqan: [dnssec] trust_anchor; Unbound: validator module, trust-anchor-file).
#
#   cargo build --release && sudo benches/e2e/recursive.sh      # ROUNDS=5 NAMES=20000 MISS_FILL=0
#
# Needs root (port 53 on 127.53.0.x), nsd, unbound, dnsperf (apt-get install nsd unbound dnsperf).
# Loopback only; every process it starts is stopped.
set -euo pipefail
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-5}
NAMES=${NAMES:-20000}
MISS_FILL=${MISS_FILL:-0}
[ -x "$QALQAN_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for t in nsd unbound dnsperf; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || { echo "needs $t" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin

work=$(mktemp -d /tmp/qalqan-recursive.XXXXXX)
net=127.53.0
soa() { printf '$TTL 86400\n%s IN SOA ns.%s h.invalid. 1 3600 600 86400 3600\n' "$1" "${1#.}"; }
{ soa .; echo ". IN NS ns-root."; echo "ns-root. IN A $net.1"; echo "bench. IN NS ns.bench."; echo "ns.bench. IN A $net.2"; } >"$work/root.zone"
{ soa bench.; echo "bench. IN NS ns.bench."; echo "ns.bench. IN A $net.2"; echo "leaf.bench. IN NS ns.leaf.bench."; echo "ns.leaf.bench. IN A $net.3"; } >"$work/bench.zone"
{ soa leaf.bench.; echo "leaf.bench. IN NS ns.leaf.bench."; echo "ns.leaf.bench. IN A $net.3"; echo "*.leaf.bench. IN A 198.18.7.9"; echo "www.leaf.bench. IN A 198.18.7.10"; } >"$work/leaf.zone"

zonefile() { echo "$work/$1.zone"; }
if [ -n "${VALIDATE:-}" ]; then
    # sign leaf, then bench (with the leaf's DS), then the root (with bench's DS); ECDSA P-256
    (
        cd "$work"
        sign() { # ZONE FILE
            local ksk zsk
            ksk=$(ldns-keygen -a ECDSAP256SHA256 -k -r /dev/urandom "$1")
            zsk=$(ldns-keygen -a ECDSAP256SHA256 -r /dev/urandom "$1")
            ldns-signzone -f "$2.signed" -o "$1" "$2" "$ksk" "$zsk"
            echo "$ksk"
        }
        k=$(sign leaf.bench. leaf.zone)
        ldns-key2ds -n -2 "$k.key" >>bench.zone
        k=$(sign bench. bench.zone)
        ldns-key2ds -n -2 "$k.key" >>root.zone
        k=$(sign . root.zone)
        cp "$k.key" root.key
    )
    zonefile() { echo "$work/$1.zone.signed"; }
fi

start_auth() { # N ZONE FILE
    local d="$work/nsd$1"
    mkdir -p "$d"
    cat >"$d/nsd.conf" <<CONF
server:
  ip-address: $net.$1
  port: 53
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$work"
  database: ""
  zonelistfile: "$d/zone.list"
  xfrdfile: "$d/xfrd.state"
  pidfile: "$d/nsd.pid"
  logfile: "$d/nsd.log"
  verbosity: 0
  do-ip6: no
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "$2"
  zonefile: "$3"
CONF
    setsid taskset -c 1 nsd -d -c "$d/nsd.conf" >"$d/out.log" 2>&1 &
    pids+=($!)
}
start_auth 1 . "$(zonefile root)"
start_auth 2 bench. "$(zonefile bench)"
start_auth 3 leaf.bench. "$(zonefile leaf)"
for n in 1 2 3; do
    for _ in $(seq 50); do dig +short +time=1 +tries=1 @$net.$n www.leaf.bench >/dev/null 2>&1 && break; sleep 0.2; done
done
printf '. 3600000 NS ns-root.\nns-root. 3600000 A %s.1\n' "$net" >"$work/root.hints"

declare -A port rpid
port[qalqan]=15391 port[unbound]=15392
cat >"$work/qalqan.toml" <<TOML
[server]
listen = ["127.0.0.1:${port[qalqan]}"]
threads = 1
[upstream]
mode = "recursive"
root_hints = "$work/root.hints"
timeout_ms = 3000
[recursion]
ipv6 = false
[dnssec]
$(if [ -n "${VALIDATE:-}" ]; then echo "trust_anchor = \"$work/root.key\""; else echo "validate = false"; fi)
[cache]
max_entries = 2000000
max_bytes = 1073741824
TOML
setsid taskset -c 0 "$QALQAN_BIN" run --config "$work/qalqan.toml" >/dev/null 2>"$work/qalqan.log" &
rpid[qalqan]=$!
pids+=($!)
cat >"$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1
  port: ${port[unbound]}
  num-threads: 1
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  logfile: ""
  use-syslog: no
  verbosity: 0
  do-ip6: no
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  root-hints: "$work/root.hints"
  module-config: "$(if [ -n "${VALIDATE:-}" ]; then echo "validator iterator"; else echo "iterator"; fi)"
$(if [ -n "${VALIDATE:-}" ]; then echo "  trust-anchor-file: \"$work/root.key\""; fi)
  qname-minimisation: yes
  msg-cache-size: 512m
  rrset-cache-size: 1024m
  num-queries-per-thread: 4096
  outgoing-range: 8192
  ratelimit: 0
  ip-ratelimit: 0
remote-control:
  control-enable: no
CONF
setsid taskset -c 0 unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
rpid[unbound]=$!
pids+=($!)
for r in qalqan unbound; do
    ok=""
    for _ in $(seq 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "${port[$r]}" www.leaf.bench | grep -q 198.18.7.10 && { ok=1; break; }
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "$r does not resolve www.leaf.bench (see $work/$r.log)" >&2; exit 1; }
done

# the name files: unique names per round and resolver (no name asked twice anywhere), and a hot name
for round in $(seq "$ROUNDS"); do
    for r in qalqan unbound; do
        awk -v r="$r" -v k="$round" -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "m%s%d-%d.leaf.bench A\n", r, k, i }' >"$work/miss-$r-$round"
    done
done
awk 'BEGIN { for (i = 0; i < 200000; i++) print "www.leaf.bench A" }' >"$work/hot"

# RUN RESOLVER FILE [dnsperf args...]: prints CPU µs/query
run() {
    local r=$1 f=$2 c0 c1 out n
    shift 2
    c0=$(cpu_s "${rpid[$r]}")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[$r]}" -d "$f" "$@" 2>&1)
    c1=$(cpu_s "${rpid[$r]}")
    n=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    [ "${lost:-0}" = 0 ] || echo "  ($r: $lost queries lost)" >&2
    awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ -n "${PERF:-}" ]; then   # PERF=FILE: a perf profile of qalqan over one miss slice, then stop
    awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "perf-%d.leaf.bench A\n", i }' >"$work/perf-names"
    perf record -F 2000 -g -p "${rpid[qalqan]}" -o "$PERF" 2>/dev/null &
    perf_pid=$!
    sleep 0.5
    taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[qalqan]}" -d "$work/perf-names" -n 1 -c 8 -q 200 >/dev/null 2>&1
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    exit 0
fi

declare -A miss cached
for round in $(seq "$ROUNDS"); do
    order="qalqan unbound"
    [ $((round % 2)) = 0 ] && order="unbound qalqan"
    for r in $order; do
        miss[$r]+="$(run "$r" "$work/miss-$r-$round" -n 1 -c 8 -q 200) "
        cached[$r]+="$(run "$r" "$work/hot" -n 1 -c 8 -q 200 -l 5) "
    done
done
printf '%-8s %12s %12s %8s\n' workload qalqan unbound ratio
for w in miss cached; do
    declare -n col=$w
    q=$(tr ' ' '\n' <<<"${col[qalqan]}" | grep . | median)
    u=$(tr ' ' '\n' <<<"${col[unbound]}" | grep . | median)
    awk -v w="$w" -v q="$q" -v u="$u" 'BEGIN { printf "%-8s %12.2f %12.2f %8.2f\n", w, q, u, q / u }'
done
echo "(CPU µs per query, median of $ROUNDS rounds; $NAMES unique names per miss round)"

if [ "$MISS_FILL" -gt 0 ]; then
    for r in qalqan unbound; do
        awk -v r="$r" -v n="$MISS_FILL" 'BEGIN { for (i = 0; i < n; i++) printf "fill%s-%d.leaf.bench A\n", r, i }' >"$work/fill-$r"
        taskset -c 1 dnsperf -s 127.0.0.1 -p "${port[$r]}" -d "$work/fill-$r" -n 1 -c 8 -q 500 >/dev/null 2>&1
        rss=$(awk '/VmRSS/ {print $2}' "/proc/${rpid[$r]}/status")
        echo "$r: RSS $((rss / 1024)) MiB after $MISS_FILL more unique names"
    done
fi
