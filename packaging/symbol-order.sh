#!/usr/bin/env bash
# Writes packaging/symbol-order.txt, the release link order that build.rs hands the linker:
# start-up and idle code first, then the request path (BENCHMARKS.md, "Link order").
# Run it after a toolchain or dependency update (CI prints how much of the list the
# build still finds). Needs valgrind; takes about 8 minutes on 2 cores.
#
# Two builds of the same code are listed: `cargo build --release` (the package) and
# `cargo bench`'s (the benchmark); their symbol names differ by the profile's hash.
set -euo pipefail
cd "$(dirname "$0")/.."
out=packaging/symbol-order.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo build --release --locked --bin otpd
cp target/release/otpd "$tmp/release"
cargo bench --bench load --locked --no-run
cp target/release/otpd "$tmp/bench"
for build in release bench; do
  python3 benches/icount.py "$tmp/$build" 2000 16 --order-file "$tmp/$build.txt"
done
{
  echo "# otpd's release link order (build.rs): start-up and idle code first, then the"
  echo "# request path, hottest first. Written by packaging/symbol-order.sh with"
  echo "# $(rustc --version); .ci/run says how many of the first list a build still has."
  echo "# release: \`cargo build --release\` (the package)"
  grep -v '^#' "$tmp/release.txt"
  echo "# bench: \`cargo bench\`'s build, where the names differ"
  grep -v '^#' "$tmp/bench.txt" | grep -vxF -f "$tmp/release.txt"
} >"$out"
echo "$out: $(grep -vc '^#' "$out") symbols"
