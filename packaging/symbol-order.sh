#!/usr/bin/env bash
# Writes packaging/symbol-order.txt, the release link order that build.rs hands the linker:
# start-up and idle code first, then the request path (BENCHMARKS.md, "Link order").
# Run it after a toolchain or dependency update (CI prints how much of the list the
# build still finds). Needs valgrind; takes about 8 minutes on 2 cores.
#
# Two builds of the same code are listed: `cargo build --release` (the package) and
# `cargo bench`'s (the benchmark); their symbol names differ by the profile's hash.
#
# `symbol-order.sh --check BIN` is CI's side: how much of the list's release section BIN
# has (a stale list only warns: it is a layout hint), and that BIN was linked in its
# order (fails if the listed functions are spread over the whole code, as without it).
set -euo pipefail
cd "$(dirname "$0")/.."
out=packaging/symbol-order.txt

if [ "${1:-}" = --check ]; then
  exec python3 - "$out" "$2" <<'PY'
import subprocess, sys
listed, section = [], None
for line in open(sys.argv[1]):
    if line.startswith("# release:") or line.startswith("# bench:"):
        section = line[2:].split(":")[0]
    elif not line.startswith("#") and section == "release":
        listed.append(line.strip())
nm = subprocess.run(["nm", "--defined-only", sys.argv[2]], capture_output=True, text=True, check=True)
code = {f[2]: int(f[0], 16) for f in (l.split() for l in nm.stdout.splitlines())
        if len(f) == 3 and f[1] in "tTwW"}
found = [code[name] for name in listed if name in code]
share = len(found) / max(len(listed), 1)
print(f"link order: {len(found)} of {len(listed)} listed symbols found ({share:.0%})")
if share < 0.9:
    print("link order: stale; run packaging/symbol-order.sh (idle RSS grows back)")
    sys.exit(0)
# Laid out in order, the listed functions fill ~40% of the code; scattered, all of it.
span = (max(found) - min(found)) / (max(code.values()) - min(code.values()))
print(f"link order: the listed functions span {span:.0%} of the code")
sys.exit("link order: not applied (build.rs)" if span > 0.6 else 0)
PY
fi
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
