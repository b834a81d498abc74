#!/usr/bin/env bash
# The Python side of otpd, as a user gets it: build the wheel and sdist of
# clients/python, install the wheel into a fresh venv, and run against the real daemon
# ($OTPD_BIN, default target/debug/otpd, built by `cargo test`):
#   1. the package's pytest suite,
#   2. the Django app's tests (Django's runner; plain Django, then DRF),
#   3. clients/tests: schemathesis on docs/openapi.json, the error table, and the seed's
#      flow in headless Chromium (examples/django; screenshots in target/browser/).
# Ends with one "clients: N passed, N failed" line; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OTPD_BIN=$(realpath -m "${OTPD_BIN:-$ROOT/target/debug/otpd}")
export OTPD_BIN
WORK="$ROOT/target/python-ci"
PYTHON=/usr/bin/python3   # Debian's: the one the package must support
passed=0
failed=0
problems=()

step() { printf '\n=== clients: %s\n' "$*"; }
fail() { problems+=("$1"); failed=$((failed + ${2:-1})); }

if [ ! -x "$OTPD_BIN" ]; then
    echo "clients/ci.sh: no otpd binary at $OTPD_BIN (run cargo build, or set OTPD_BIN)" >&2
    echo "clients: 0 passed, 1 failed"
    exit 1
fi

step "system packages"
missing=()
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { echo "cannot install ${missing[*]}" >&2; echo "clients: 0 passed, 1 failed"; exit 1; }
fi

step "build the wheel and the sdist"
rm -rf "$WORK" && mkdir -p "$WORK"
pipq() { "$1/bin/pip" install --disable-pip-version-check --no-input --quiet "${@:2}"; }
"$PYTHON" -m venv "$WORK/build-venv" && pipq "$WORK/build-venv" build==1.6.1 \
    && "$WORK/build-venv/bin/python" -m build --outdir "$WORK/dist" "$ROOT/clients/python" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log" >&2; echo "clients: 0 passed, 1 failed"; exit 1; }
wheel=$(ls "$WORK"/dist/otpd-*-py3-none-any.whl)
sdist=$(ls "$WORK"/dist/otpd-*.tar.gz)
echo "built $(basename "$wheel") and $(basename "$sdist")"
# The sdist carries the tests, so a packager can run them from it.
case "$(tar -tzf "$sdist")" in */tests/test_client.py*) ;; *) fail "sdist lacks the tests" ;; esac

step "install the wheel into a fresh venv"
VENV="$WORK/venv"
"$PYTHON" -m venv "$VENV" && pipq "$VENV" "$wheel[drf]" -r "$ROOT/clients/ci-requirements.txt" \
    || { echo "clients: 0 passed, 1 failed"; exit 1; }
# The tests must import the installed package, never the source tree.
installed=$(cd / && "$VENV/bin/python" -c 'import otpd; print(otpd.__file__)')
case "$installed" in "$VENV"/*) echo "otpd from $installed" ;; *) fail "otpd imported from $installed" ;; esac

# pytest's JUnit report gives the counts, whatever it printed.
run_pytest() {
    local name=$1 dir=$2; shift 2
    step "$name"
    (cd "$dir" && PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m pytest -p no:cacheprovider \
        --junitxml="$WORK/$name.xml" "$@")
    local rc=$?
    read -r p f s < <("$VENV/bin/python" - "$WORK/$name.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 1, 0); raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root)
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skipped, bad, skipped)
PY
)
    passed=$((passed + p))
    # A skipped test did not run: counted as a failure, so skipping cannot pass CI.
    [ "$s" -gt 0 ] && fail "$name: $s skipped" "$s"
    [ "$f" -gt 0 ] && fail "$name: $f failed" "$f"
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && fail "$name: pytest exited $rc"
}

run_django() {
    local settings=$1
    step "Django app tests ($settings)"
    local out
    out=$(cd "$ROOT/clients/python" && PYTHONDONTWRITEBYTECODE=1 \
        "$VENV/bin/python" -m django test tests_django --settings="tests_django.$settings" -v 1 2>&1)
    local rc=$?
    printf '%s\n' "$out"
    local ran bad
    ran=$(printf '%s\n' "$out" | sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' | tail -n 1)
    bad=$(printf '%s\n' "$out" | sed -n 's/^FAILED (\(.*\))$/\1/p' | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}')
    ran=${ran:-0}; bad=${bad:-0}
    passed=$((passed + ran - bad))
    [ "$bad" -gt 0 ] && fail "Django tests ($settings): $bad failed" "$bad"
    [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && fail "Django tests ($settings): exited $rc"
    [ "$ran" -eq 0 ] && fail "Django tests ($settings): none ran"
}

run_pytest package "$ROOT/clients/python" tests -q
run_django settings_plain
run_django settings_drf
run_pytest repository "$ROOT/clients/tests" -q test_error_table.py test_openapi.py test_browser.py

echo
for problem in "${problems[@]}"; do echo "clients: $problem"; done
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
