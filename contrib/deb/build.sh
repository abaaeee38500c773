#!/usr/bin/env bash
# Builds the Debian package from the release binary already in target/release
# (run `cargo build --release --locked` first, as tests/run.sh does):
# the man pages are generated from that binary (`qalqan man`: qalqan(8) from
# its clap definitions, qalqan.toml(5) from docs/configuration.md), so they
# cannot drift from the code, then `cargo deb --no-build` packs it.
# Prints the path of the .deb. Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/../.."
# PROFILE=dev packs target/debug/qalqan instead (a quick local try; not for shipping)
profile="${PROFILE:-release}"
dir=release
[ "$profile" = release ] || dir=debug
bin="target/$dir/qalqan"
[ -x "$bin" ] || { echo "contrib/deb/build.sh: $bin missing: cargo build --release --locked first" >&2; exit 2; }
rm -rf target/man
"$bin" man target/man >/dev/null
gzip -9n target/man/qalqan.8 target/man/qalqan.toml.5
cargo deb --no-build --profile "$profile" --locked --quiet "$@" | tail -n 1
