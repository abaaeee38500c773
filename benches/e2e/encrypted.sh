#!/usr/bin/env bash
# Encrypted DNS (DoT, DoH) against dnsdist and Unbound in one run (issue #22's speed check).
#
# One NSD upstream (the harness's root zone); three servers forwarding to it, each with DoT and DoH
# listeners on one throw-away certificate (contrib/make-test-cert.sh): qalqan (release, one worker,
# the 100k list), dnsdist (addTLSLocal, addDOHLocal, a packet cache) and Unbound (tls-port,
# https-port; Debian builds it with nghttp2). Servers pinned to CPU 0, NSD and dnsperf to CPU 1.
# Workloads, each server in turn (order alternating by round), over persistent connections
# (dnsperf -m dot / -m doh, -c CLIENTS connections, -e: EDNS, so replies are padded where the server
# pads):
#   cached    HOT hot names (from q-cached), asked over and over, warmed over the same transport first
#   blocked   HOT names of the 100k list (qalqan only: the others have no list here)
# and the handshake cost: the cached names again with one query per connection
# (dnsperf -O num-queries-per-conn=1), every query a new TCP connection and a full TLS handshake.
# CPU µs/query = (utime + stime of the whole server process) / queries completed; the median of
# ROUNDS rounds of SECONDS_PER seconds. Prints one table, with qalqan / best of the others.
#
#   cargo build --release && benches/e2e/encrypted.sh   # ROUNDS=3 SECONDS_PER=5 CLIENTS=4 HOT=1000
#   DOH_METHOD=POST benches/e2e/encrypted.sh             # dnsperf's DoH method (default GET)
#
# Needs the harness's data cache (q-cached, q-blocked-100k, list-100k, root.zone), nsd, dnsdist,
# unbound, dnsperf >= 2.6, openssl. Loopback only; every process it starts is stopped.
set -euo pipefail
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
CLIENTS=${CLIENTS:-4}
HOT=${HOT:-1000}
DOH_METHOD=${DOH_METHOD:-GET}
need_data q-cached.txt q-blocked-100k.txt list-100k.domains root.zone
PATH=$PATH:/usr/sbin
for t in nsd dnsdist unbound dnsperf openssl; do
    command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done
unbound -V | grep -q nghttp2 || { echo "this unbound has no DoH (built without nghttp2)" >&2; exit 1; }

work=$(mktemp -d /tmp/qalqan-encrypted.XXXXXX)
sh "$repo/contrib/make-test-cert.sh" "$work/tls" bench.qalqan.test 2 >/dev/null
cert=$work/tls/fullchain.pem key=$work/tls/key.pem
first() { awk -v n="$HOT" '!seen[$0]++ { print; if (++k == n) exit }' "$1"; }
first "$cache/q-cached.txt" >"$work/cached"
first "$cache/q-blocked-100k.txt" >"$work/blocked"

up_port=15400
declare -A udp dot doh spid
udp[qalqan]=15401 dot[qalqan]=15402 doh[qalqan]=15403
udp[dnsdist]=15411 dot[dnsdist]=15412 doh[dnsdist]=15413
udp[unbound]=15421 dot[unbound]=15422 doh[unbound]=15423
servers="qalqan dnsdist unbound"
start_nsd $up_port "$work" taskset -c 1

cat >"$work/qalqan.toml" <<TOML
[server]
listen = ["127.0.0.1:${udp[qalqan]}"]
dot_listen = ["127.0.0.1:${dot[qalqan]}"]
doh_listen = ["127.0.0.1:${doh[qalqan]}"]
threads = 1
max_tls_per_client = 1000
[tls]
cert = "$cert"
key = "$key"
[upstream]
servers = ["127.0.0.1:$up_port"]
timeout_ms = 2000
[cache]
max_entries = 200000
[[lists]]
name = "bench"
source = "$cache/list-100k.domains"
TOML
start_qalqan "$work/qalqan.toml" "$work/qalqan.log"
spid[qalqan]=$qalqan_pid

cat >"$work/dnsdist.conf" <<CONF
setLocal("127.0.0.1:${udp[dnsdist]}")
setSecurityPollSuffix("")
local srv = newServer({address="127.0.0.1:$up_port", name="upstream"})
srv:setUp()
pc = newPacketCache(200000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60})
getPool(""):setCache(pc)
addTLSLocal("127.0.0.1:${dot[dnsdist]}", "$cert", "$key")
addDOHLocal("127.0.0.1:${doh[dnsdist]}", "$cert", "$key", "/dns-query")
CONF
setsid taskset -c 0 dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 &
spid[dnsdist]=$!
pids+=($!)

cat >"$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@${udp[unbound]}
  interface: 127.0.0.1@${dot[unbound]}
  interface: 127.0.0.1@${doh[unbound]}
  tls-port: ${dot[unbound]}
  https-port: ${doh[unbound]}
  tls-service-key: "$key"
  tls-service-pem: "$cert"
  http-endpoint: "/dns-query"
  do-ip6: no
  num-threads: 1
  so-reuseport: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-not-query-localhost: no
  incoming-num-tcp: 1000
  msg-cache-size: 128m
  rrset-cache-size: 256m
  qname-minimisation: no
  prefetch: no
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$up_port
CONF
setsid taskset -c 0 unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
spid[unbound]=$!
pids+=($!)

probe=$(head -n 1 "$work/cached" | cut -d' ' -f1)
for s in $servers; do
    ok=""
    for _ in $(seq 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "${udp[$s]}" "$probe" | grep -q . && { ok=1; break; }
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "$s does not answer $probe (see $work/$s.log)" >&2; exit 1; }
done

# PERF MODE PORT FILE [dnsperf args...]: dnsperf's output (bounded in time)
perf() {
    local mode=$1 p=$2 f=$3
    shift 3
    local extra=()
    [ "$mode" = doh ] && extra=(-O "doh-method=$DOH_METHOD")
    timeout $((SECONDS_PER + 60)) taskset -c 1 dnsperf -m "$mode" -s 127.0.0.1 -p "$p" -d "$f" -e -c "$CLIENTS" -q 100 -t 5 "${extra[@]}" "$@" 2>&1
}
# RUN SERVER MODE FILE [dnsperf args...]: prints CPU µs/query
run() {
    local s=$1 mode=$2 f=$3 c0 c1 out n lost p
    shift 3
    [ "$mode" = dot ] && p=${dot[$s]} || p=${doh[$s]}
    c0=$(cpu_s "${spid[$s]}")
    out=$(perf "$mode" "$p" "$f" -l "$SECONDS_PER" "$@")
    c1=$(cpu_s "${spid[$s]}")
    n=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    if [ -z "$n" ] || [ "$n" = 0 ]; then
        echo "$s $mode: no queries completed:" >&2
        echo "$out" | tail -n 5 >&2
        echo nan
        return
    fi
    [ "${lost:-0}" = 0 ] || echo "  ($s $mode: $lost queries lost)" >&2
    awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# warm every cache over every transport (dnsdist's packet cache keys on the transport)
for s in $servers; do
    for m in dot doh; do
        [ "$m" = dot ] && p=${dot[$s]} || p=${doh[$s]}
        perf "$m" "$p" "$work/cached" -n 2 >/dev/null || true
    done
done

declare -A res
cells=()
for round in $(seq "$ROUNDS"); do
    order=$servers
    [ $((round % 2)) = 0 ] && order="unbound dnsdist qalqan"
    for s in $order; do
        for m in dot doh; do
            # dnsperf 2.10 loses nearly every reply of dnsdist 1.7.3's DoH (h2o) once a
            # connection has more than one query in flight (the HTTP/2 replies arrive, dnsperf
            # does not count them): not measurable over persistent connections
            [ "$s,$m" = dnsdist,doh ] || res[$s,$m,cached]+="$(run "$s" "$m" "$work/cached") "
            [ "$s" = qalqan ] && res[$s,$m,blocked]+="$(run "$s" "$m" "$work/blocked") "
            res[$s,$m,handshake]+="$(run "$s" "$m" "$work/cached" -O num-queries-per-conn=1) "
        done
    done
done

med() { tr ' ' '\n' <<<"${res[$1]:-}" | { grep -E '^[0-9.]+$' || true; } | median; }
printf '%-16s %10s %10s %10s %8s\n' workload qalqan dnsdist unbound ratio
for w in cached blocked handshake; do
    for m in dot doh; do
        q=$(med "qalqan,$m,$w") d=$(med "dnsdist,$m,$w") u=$(med "unbound,$m,$w")
        [ "$w" = blocked ] && { d=$(med "dnsdist,$m,cached"); u=$(med "unbound,$m,cached"); }
        awk -v w="$w $m" -v q="$q" -v d="$d" -v u="$u" -v b="$w" 'BEGIN {
            if (d == "nan") d = "n/a"
            if (u == "nan") u = "n/a"
            best = (d + 0 > 0 && (u + 0 == 0 || d + 0 < u + 0)) ? d : u
            printf "%-16s %10s %10s %10s %8s\n", w, q, (b == "blocked" ? "(" d ")" : d), (b == "blocked" ? "(" u ")" : u),
                (best + 0 > 0 ? sprintf("%.2f", q / best) : "-")
        }'
    done
done
echo "(CPU µs per query, median of $ROUNDS rounds of ${SECONDS_PER}s; $CLIENTS connections, dnsperf -e, DoH $DOH_METHOD;"
echo " blocked: qalqan's list, beside the others' cached figure in parentheses; handshake: one query per connection;"
echo " dnsdist DoH cached n/a: dnsperf loses its replies when a connection has more than one query in flight)"
