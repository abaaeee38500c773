#!/usr/bin/env bash
# The test command (README "Two commands"; .ci/run calls exactly this).
# Installs what the tests need on Debian (dig/kdig for interop checks, knotd as a
# zone-transfer primary, nsd + ldnsutils for the loopback DNS hierarchy, faketime for TSIG clock skew, openssl for Ed25519
# signatures made independently of ours and the test CA of the encrypted-DNS tests, curl for DoH, promtool,
# chromium for the block page, fstrm-bin, golang-dnstap and dnstap-ldns for the dnstap readers,
# systemd + strace + man-db for the Debian package test),
# then runs every test and keeps the benchmarks compiling.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v kdig >/dev/null 2>&1 || need+=(knot-dnsutils)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v knotd >/dev/null 2>&1 || need+=(knot)
# clock-skewed TSIG signers (kdig under libfaketime) in tests/axfr_knot.rs
command -v faketime >/dev/null 2>&1 || need+=(faketime)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# DoH over the wire (tests/it/encrypted.rs)
command -v curl >/dev/null 2>&1 || need+=(curl)
# a real browser loading the block page (tests/it/blockpage.rs): headless Chromium
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
# the loopback DNS hierarchy of the recursive-mode tests (tests/it/hierarchy.rs):
# NSD authorities on 127.x.y.z:53 (needs root or sudo), zones signed with ldns
command -v nsd >/dev/null 2>&1 || [ -x /usr/sbin/nsd ] || need+=(nsd)
command -v ldns-signzone >/dev/null 2>&1 || need+=(ldnsutils)
# the reference resolver the recursive-mode tests compare qalqan with on that hierarchy
command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || need+=(unbound)
# dnstap readers (tests/it/dnstap.rs): libfstrm's capture tool, golang-dnstap's and ldns's decoders
command -v fstrm_capture >/dev/null 2>&1 || need+=(fstrm-bin)
command -v dnstap >/dev/null 2>&1 || need+=(golang-github-dnstap-golang-dnstap-cli)
command -v dnstap-ldns >/dev/null 2>&1 || need+=(dnstap-ldns)
# the Debian package test (tests/package.sh): systemd-analyze verify on the unit, strace for the
# system calls the server makes against its SystemCallFilter, man to find the pages, setpriv/runuser
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
# the package's one dependency besides libc (its postinst makes the user with it)
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || need+=(adduser)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "tests/run.sh: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The hierarchy's NSDs and probes bind port 53 on 127.x.y.z: fine as root; otherwise let
# unprivileged processes bind from port 53 up (Linux >= 4.11), or those tests fail under CI.
if [ "$(id -u)" -ne 0 ] && [ "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)" -gt 53 ]; then
    echo "tests/run.sh: allowing unprivileged binds of port 53 for the DNS hierarchy tests" >&2
    sudo sysctl -q -w net.ipv4.ip_unprivileged_port_start=53 || echo "tests/run.sh: could not; the hierarchy tests will fail" >&2
fi

if [ ! -d ../shared/data ]; then
    if [ -n "${CI:-}" ] && [ "${CI}" != false ] && [ "${CI}" != 0 ]; then
        echo "tests/run.sh: CI is set and ../shared/data is missing: the real-data tests will fail" >&2
    else
        echo "tests/run.sh: ../shared/data not found: tests on the shared real-world lists will be SKIPPED" >&2
    fi
fi

cargo build --release --locked --quiet
cargo check --benches --locked --quiet
# supply-chain policy (deny.toml): licenses, bans, sources; and advisories (RustSec) whenever an
# advisory database is at hand: fetched from GitHub when it is reachable, else a copy already in
# ~/.cargo/advisory-dbs (e.g. a clone of github.com/rustsec/advisory-db placed there), else skipped
# with a message (this workplace's network reaches only the package registries).
command -v cargo-deny >/dev/null 2>&1 || cargo install cargo-deny --version 0.20.2 --locked
cargo deny --locked check bans licenses sources
if timeout 120 cargo deny --locked fetch db >/dev/null 2>&1 || compgen -G "$HOME/.cargo/advisory-dbs/advisory-db-*/crates" >/dev/null; then
    cargo deny --locked --offline check advisories
else
    echo "tests/run.sh: no RustSec advisory database reachable (github.com): advisories check skipped" >&2
fi
# the Debian package of that release binary, installed, checked and purged (tests/package.sh;
# cargo-deb is installed once and reused)
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked
tests/package.sh
# unit tests, then the integration binary (tests/it) last, so its summary closes the run
cargo test --locked --lib --bins --tests
