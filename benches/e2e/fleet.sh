#!/usr/bin/env bash
# Fan-out of a regulator zone change over a fleet: one Knot primary and N qalqan secondaries on loopback
# (127.0.0.1, distinct ports), each a secondary of the RPZ zone `regulator.rpz` (SIZE rules) by AXFR/IXFR
# with TSIG, NOTIFYed by Knot (MODE=list: a `[[lists]]` axfr:// source; MODE=catalog: the zone is the one
# member of a catalog zone, `[[catalogs]]`). Per round a new name is added to the zone (serial + 1,
# `knotc zone-reload`, Knot NOTIFYs every instance) and every instance is polled over UDP (each 2 ms)
# until it answers the name NXDOMAIN: the time from the reload command to the last instance enforcing it.
# Prints, for N = 1, 4, 16 (NS), the median and max over ROUNDS of the time until all N enforce it, and
# the median time of a single instance. qalqan instances on CPU 0 (one worker each), Knot and the poller
# on CPU 1. Loopback only; everything started is stopped on exit; each wait is bounded (TIMEOUT s).
#
#   benches/e2e/fleet.sh                       # N = 1 4 16, 5 rounds, 10k-rule zone, [[lists]]
#   MODE=catalog NS="4 16" ROUNDS=9 benches/e2e/fleet.sh
#
# Environment: QALQAN_BIN (target/release/qalqan), NS ("1 4 16"), ROUNDS (5), SIZE (10000), MODE (list |
# catalog), TIMEOUT (10), QALQAN_CPUS (0), OTHER_CPUS (1).
set -euo pipefail
. "$(dirname "$0")/common.sh"
NS=${NS:-1 4 16}
ROUNDS=${ROUNDS:-5}
SIZE=${SIZE:-10000}
MODE=${MODE:-list}
TIMEOUT=${TIMEOUT:-10}
OTHER_CPUS=${OTHER_CPUS:-1}
[ -x "$QALQAN_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
knotd=$(command -v knotd || echo /usr/sbin/knotd)
knotc=$(command -v knotc || echo /usr/sbin/knotc)
[ -x "$knotd" ] || { echo "knotd not installed (apt-get install knot)" >&2; exit 1; }
secret=cWFscWFuLXRlc3Qtc2VjcmV0LTMyLWJ5dGVzLWxvbmchIQ==
work=$(mktemp -d /tmp/qalqan-fleet.XXXXXX)
kport=15390 base=15400

# zone_file SERIAL EXTRA...: the regulator zone with SIZE rules and EXTRA names
zone_file() {
    local serial=$1 n
    shift
    {
        printf '$ORIGIN regulator.rpz.\n$TTL 300\n@ SOA ns.regulator.rpz. admin.regulator.rpz. %s 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n' "$serial"
        seq 1 "$SIZE" | sed 's/.*/host&.listed.example CNAME ./'
        for n in "$@"; do printf '%s CNAME .\n' "$n"; done
    } >"$work/regulator.rpz.zone.tmp"
    mv "$work/regulator.rpz.zone.tmp" "$work/regulator.rpz.zone"
}

# start_knot N: Knot on 127.0.0.1:kport serving the zone (and the catalog), NOTIFYing N instances
start_knot() {
    local n=$1 i remotes="" ids=""
    mkdir -p "$work/knot-db"
    for i in $(seq 0 $((n - 1))); do
        remotes+="  - id: q$i"$'\n'"    address: 127.0.0.1@$((base + i))"$'\n'"    key: fleet-key"$'\n'
        ids+="${ids:+, }q$i"
    done
    printf '$ORIGIN catalog.fleet.\n$TTL 0\n@ SOA invalid. invalid. 1 3600 600 86400 0\n@ NS invalid.\nversion TXT "2"\nreg.zones PTR regulator.rpz.\n' >"$work/catalog.fleet.zone"
    cat >"$work/knot.conf" <<CONF
server:
    rundir: "$work"
    listen: 127.0.0.1@$kport
log:
  - target: stderr
    any: notice
database:
    storage: "$work/knot-db"
key:
  - id: fleet-key
    algorithm: hmac-sha256
    secret: $secret
remote:
$remotes
acl:
  - id: xfr
    address: 127.0.0.1
    key: fleet-key
    action: transfer
template:
  - id: default
    storage: "$work"
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    semantic-checks: off
zone:
  - domain: regulator.rpz
    file: regulator.rpz.zone
    acl: xfr
    notify: [$ids]
  - domain: catalog.fleet
    file: catalog.fleet.zone
    acl: xfr
    notify: [$ids]
CONF
    setsid taskset -c "$OTHER_CPUS" "$knotd" -c "$work/knot.conf" >"$work/knotd.log" 2>&1 &
    knot_pid=$!
    pids+=($knot_pid)
    for _ in $(seq 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p $kport regulator.rpz SOA 2>/dev/null | grep -q admin && return
        sleep 0.1
    done
    echo "knotd did not come up (see $work/knotd.log)" >&2
    exit 1
}

# start_instance I: qalqan I on 127.0.0.1:(base + I), its state in its own directory
start_instance() {
    local i=$1 dir=$work/q$1 source
    mkdir -p "$dir"
    if [ "$MODE" = catalog ]; then
        source=$'[[catalogs]]\nsource = "axfr://127.0.0.1:'$kport$'/catalog.fleet"\ntsig = "hmac-sha256:fleet-key:'$secret$'"\nrefresh_s = 3600\nmax_members = 2'
    else
        source=$'[[lists]]\nname = "regulator"\nsource = "axfr://127.0.0.1:'$kport$'/regulator.rpz"\nformat = "rpz"\ntsig = "hmac-sha256:fleet-key:'$secret$'"\nrefresh_s = 3600'
    fi
    cat >"$dir/q.toml" <<TOML
[server]
listen = ["127.0.0.1:$((base + i))"]
threads = 1
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 200
[state]
dir = "$dir/state"
$source
TOML
    setsid taskset -c "${QALQAN_CPUS:-0}" "$QALQAN_BIN" run --config "$dir/q.toml" >/dev/null 2>"$dir/qalqan.log" &
    pids+=($!)
    echo $! >"$dir/pid"
}

# wait_enforced N NAME: every instance answers NAME NXDOMAIN (bounded by TIMEOUT)
wait_enforced() {
    python3 "$work/poll.py" "$1" "$2" "$TIMEOUT" 0 >/dev/null
}

cat >"$work/poll.py" <<'PY'
# poll.py N NAME TIMEOUT [RELOAD...]: runs RELOAD (a command), then sends a query for NAME to each of the
# N instances every 2 ms until it answers NXDOMAIN; prints the milliseconds from the start of RELOAD to
# each instance's first NXDOMAIN, comma-separated. Exits 1 if one did not within TIMEOUT s.
import os, random, select, socket, struct, subprocess, sys, time
n, name, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
reload_cmd = sys.argv[5:]
base = int(os.environ.get("BASE", "15400"))
def query(qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", base + i))
    s.setblocking(False)
    socks.append(s)
done = [None] * n
t0 = time.monotonic()
if reload_cmd:
    subprocess.run(reload_cmd, check=True, stdout=subprocess.DEVNULL)
while None in done:
    now = time.monotonic()
    if now - t0 > timeout:
        print("timeout: instances " + ",".join(str(i) for i, d in enumerate(done) if d is None), file=sys.stderr)
        sys.exit(1)
    for i, s in enumerate(socks):
        if done[i] is None:
            try:
                s.send(query(random.randrange(65536)))
            except OSError:
                pass
    end = time.monotonic() + 0.002
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([s for i, s in enumerate(socks) if done[i] is None], [], [], left)
        for s in ready:
            i = socks.index(s)
            try:
                reply = s.recv(4096)
            except OSError:
                continue
            if len(reply) >= 4 and reply[3] & 0x0F == 3 and done[i] is None:
                done[i] = (time.monotonic() - t0) * 1000
print(",".join(f"{d:.1f}" for d in done))
PY

printf '%-4s %-8s %6s %16s %14s %20s\n' N mode rounds "all-N median ms" "all-N max ms" "one instance median ms"
for n in $NS; do
    serial=1
    zone_file $serial
    rm -rf "$work/knot-db" "$work"/q*
    start_knot "$n"
    for i in $(seq 0 $((n - 1))); do start_instance "$i"; done
    for i in $(seq 0 $((n - 1))); do
        for _ in $(seq 200); do grep -q ready "$work/q$i/qalqan.log" && break; sleep 0.05; done
        grep -q ready "$work/q$i/qalqan.log" || { echo "instance $i did not start: $work/q$i/qalqan.log" >&2; exit 1; }
    done
    BASE=$base wait_enforced "$n" host1.listed.example || { echo "the zone was not enforced by all $n instances" >&2; exit 1; }
    : >"$work/times"
    names=()
    for r in $(seq 1 "$ROUNDS"); do
        serial=$((serial + 1))
        names+=("fleet-$n-$r-$RANDOM.example")
        zone_file $serial "${names[@]}"
        times=$(BASE=$base taskset -c "$OTHER_CPUS" python3 "$work/poll.py" "$n" "${names[-1]}" "$TIMEOUT" run \
            "$knotc" -c "$work/knot.conf" zone-reload regulator.rpz) || { echo "round $r: not enforced by all $n within $TIMEOUT s" >&2; exit 1; }
        echo "$times" >>"$work/times"
        sleep 0.5
    done
    python3 - "$n" "$MODE" "$work/times" <<'PY'
import statistics as st, sys
n, mode, path = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = [[float(x) for x in l.strip().split(",")] for l in open(path) if l.strip()]
alln = [max(r) for r in rounds]
one = [x for r in rounds for x in r]
print(f"{n:<4} {mode:<8} {len(rounds):>6} {st.median(alln):>16.1f} {max(alln):>14.1f} {st.median(one):>20.1f}")
PY
    cleanup
    pids=()
    sleep 0.5
done
