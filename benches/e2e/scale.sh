#!/usr/bin/env bash
# Regulator lists at national scale (issue #23), with the release binary and generated lists in /tmp.
#
# 1. A 10M-name domains file: time from start to `ready`, the build's own time (the log's
#    "policy published ... took_ms"), VmRSS once serving and VmHWM (peak).
# 2. A 1M-name file list and a 1M-name pushed list side by side: the time to enforcement (log
#    `enforce_us`: update received to the policy swap) and to the end of the publish (`took_us`,
#    which includes persisting a pushed list)
#    and `qalqan_update_enforce_seconds` of (a) a file change of 10 names (5 removed, 5 appended:
#    diffed, published as a delta), (b) a PATCH of 10 names on the pushed list (curl's round trip
#    too), (c) a file change of 3 % of the lines (6 % of the base deleted plus inserted, past
#    `delta_merge_share`: a full build), (d) the harness's reload: 0.5 % of the lines removed and
#    0.5 % new names added, scattered (a delta of 10k lines: the line-hash multiset diff), timed
#    also from the SIGHUP to the first NXDOMAIN for an added name; each checked over the wire.
#
#   cargo build --release && benches/e2e/scale.sh
#
# Environment: QALQAN_BIN (target/release/qalqan), SIZE_BIG (10000000; 0 skips part 1), SIZE (1000000),
# RELOAD_NICE ([server] reload_nice, 19 as shipped; 0 measures the work itself on a box others
# load: at 19 the build thread gets only what nice-0 processes leave), KEEP=1 keeps the work directory. Loopback only; no upstream is needed (blocked names only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
QALQAN_BIN=${QALQAN_BIN:-$repo/target/release/qalqan}
SIZE_BIG=${SIZE_BIG:-10000000}
SIZE=${SIZE:-1000000}
RELOAD_NICE=${RELOAD_NICE:-19}
[ -x "$QALQAN_BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d /tmp/qalqan-scale.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait 2>/dev/null || true; [ "${KEEP:-}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

# gen N FILE: N distinct names, ~28 bytes each (the shape of the hot_path benches' synthetic names)
gen() { awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "s%x.tracker-%d.example%d\n", i, i % 977, i % 13 }' >"$2"; }
rss() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
ms() { date +%s%3N; }
# wait_log FILE PATTERN COUNT: until PATTERN occurs COUNT times in FILE (60 s at most)
wait_log() {
    for _ in $(seq 600); do [ "$(grep -c "$2" "$1" || true)" -ge "$3" ] && return; sleep 0.1; done
    echo "timed out waiting for '$2' x$3 in $1" >&2; tail -5 "$1" >&2; exit 1
}
last_published() { grep 'policy published' "$1" | tail -1; }
field() { sed -n "s/.*$1=\"\{0,1\}\([0-9a-z.]*\).*/\1/p" <<<"$2"; }
rcode() { dig +time=2 +tries=1 +noall +comments @127.0.0.1 -p "$port" "$1" A | sed -n 's/.*status: \([A-Z]*\).*/\1/p'; }
port=15391 mport=15392 aport=15393

if [ "$SIZE_BIG" -gt 0 ]; then
echo "== 1. load: $SIZE_BIG names"
gen "$SIZE_BIG" "$work/big.domains"
ls -l "$work/big.domains" | awk '{printf "list file: %.0f MiB\n", $5 / 1048576}'
cat >"$work/big.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 500
[metrics]
listen = "127.0.0.1:$mport"
[[lists]]
name = "big"
source = "$work/big.domains"
max_bytes = 2000000000
max_rules = 20000000
TOML
t0=$(ms)
"$QALQAN_BIN" run --config "$work/big.toml" >/dev/null 2>"$work/big.log" &
pid=$!
wait_log "$work/big.log" ready 1
t1=$(ms)
sleep 2
line=$(last_published "$work/big.log")
printf 'start to ready: %.2f s; build (log took_ms): %s ms; VmRSS serving: %s MiB; VmHWM: %s MiB\n' \
    "$(echo "($t1 - $t0) / 1000" | bc -l)" "$(field took_ms "$line")" "$(rss $pid)" "$(hwm $pid)"
echo "blocked s1.tracker-1.example1: $(rcode s1.tracker-1.example1.)"
kill -TERM $pid; wait $pid || true; pid=
rm -f "$work/big.domains"
fi

echo "== 2. updates on $SIZE-name lists"
gen "$SIZE" "$work/f.domains"
sed 's/^s/p/' "$work/f.domains" >"$work/p.domains"
mkdir -p "$work/state"
printf 'scale-token-0123456789\n' >"$work/token"; chmod 600 "$work/token"
cat >"$work/q.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1
reload_nice = $RELOAD_NICE
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 500
[metrics]
listen = "127.0.0.1:$mport"
[state]
dir = "$work/state"
[admin]
listen = "127.0.0.1:$aport"
token_file = "$work/token"
require_signature = false
[[lists]]
name = "file"
source = "$work/f.domains"
[[lists]]
name = "pushed"
source = "push"
max_bytes = 200000000
TOML
"$QALQAN_BIN" run --config "$work/q.toml" >/dev/null 2>"$work/q.log" &
pid=$!
wait_log "$work/q.log" ready 1
auth=(-H "Authorization: Bearer scale-token-0123456789")
curl -sf -o /dev/null -X PUT "${auth[@]}" --data-binary @"$work/p.domains" "http://127.0.0.1:$aport/v1/lists/pushed"
n=$(grep -c 'policy published' "$work/q.log")
echo "VmRSS with both lists: $(rss $pid) MiB"

# (a) file: 5 lines removed, 5 appended, by rename
awk 'NR % 200003 != 7' "$work/f.domains" >"$work/f.tmp"
for i in 1 2 3 4 5; do echo "urgent-file-$i.example" >>"$work/f.tmp"; done
mv "$work/f.tmp" "$work/f.domains"
kill -HUP $pid
n=$((n + 1)); wait_log "$work/q.log" 'policy published' $n
line=$(last_published "$work/q.log")
echo "(a) file, 10 names: kind=$(field kind "$line") enforce_us=$(field enforce_us "$line") publish took_us=$(field took_us "$line"); urgent-file-3.example: $(rcode urgent-file-3.example.)"

# (b) PATCH of 10 names on the pushed list
patch=$(for i in 1 2 3 4 5; do echo "+urgent-push-$i.example"; done; sed -n '500000p;500001p;500002p;500003p;500004p' "$work/p.domains" | sed 's/^/-/')
t=$(curl -sf -o /dev/null -w '%{time_total}' -X PATCH "${auth[@]}" --data-binary "$patch" "http://127.0.0.1:$aport/v1/lists/pushed")
n=$((n + 1)); wait_log "$work/q.log" 'policy published' $n
line=$(last_published "$work/q.log")
echo "(b) PATCH, 10 names: kind=$(field kind "$line") enforce_us=$(field enforce_us "$line") publish took_us=$(field took_us "$line"); curl round trip $(echo "$t * 1000" | bc -l | cut -c1-6) ms; urgent-push-2.example: $(rcode urgent-push-2.example.)"

# (c) file: 3 % of the lines changed (a full build)
awk 'NR % 33 != 5 {print; next} {print "changed-" $0}' "$work/f.domains" >"$work/f.tmp"
mv "$work/f.tmp" "$work/f.domains"
kill -HUP $pid
n=$((n + 1)); wait_log "$work/q.log" 'policy published' $n
line=$(last_published "$work/q.log")
echo "(c) file, 3 % changed: kind=$(field kind "$line") publish took_ms=$(field took_ms "$line")"
# (d) the harness's reload: 0.5 % removed, 0.5 % added, scattered
awk 'NR % 200 == 7 {next} {print} NR % 200 == 107 {print "new-" NR ".added.example"}' "$work/f.domains" >"$work/f.tmp"
probe=$(grep -m1 '^new-' "$work/f.tmp")
mv "$work/f.tmp" "$work/f.domains"
n=$((n + 1))
t0=$(ms)
kill -HUP $pid
# (no upstream here, so an unblocked name takes the upstream timeout: poll the log, not DNS)
until [ "$(grep -c 'policy published' "$work/q.log")" -ge $n ]; do
    [ $(($(ms) - t0)) -lt 60000 ] || { echo "(d) no publish" >&2; exit 1; }
    sleep 0.005
done
t1=$(ms)
line=$(last_published "$work/q.log")
echo "(d) file, 1 % changed (harness reload): kind=$(field kind "$line") delta_size=$(field delta_size "$line") enforce_us=$(field enforce_us "$line") publish took_us=$(field took_us "$line"); SIGHUP to published $((t1 - t0)) ms; $probe: $(rcode "$probe.")"
curl -sf "http://127.0.0.1:$mport/metrics" | grep -E '^qalqan_(list_updates_total|update_enforce_seconds_(sum|count))' || true
curl -sf "http://127.0.0.1:$mport/lists"
