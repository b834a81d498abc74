#!/usr/bin/env bash
# The integration suite again, against a real PostgreSQL (issue 20): Debian's server
# package, a throwaway cluster initialised here (Unix socket only, no port to clash,
# fsync off: the suite checks behaviour, not durability), every daemon in a schema of
# its own (tests/it/common/mod.rs), plus the several-hosts tests, which only run here.
# Reuses the debug build of the main test run. Usage: bash .ci/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
# Debian's package starts its own cluster; this stage does not use it.
pg_ctlcluster --help >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | while read -r v c _; do
  pg_ctlcluster "$v" "$c" stop 2>/dev/null || true
done

pgtmp=$(mktemp -d /tmp/otpd-pg.XXXXXX)
chown postgres "$pgtmp"
stop() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgtmp/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pgtmp"; }
trap stop EXIT
runuser -u postgres -- "$pgbin/initdb" -D "$pgtmp/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgtmp/data" -l "$pgtmp/log" -w start \
  -o "-k $pgtmp -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=400" >/dev/null
runuser -u postgres -- psql -h "$pgtmp" -U postgres -qc "CREATE ROLE otpd_test LOGIN SUPERUSER" \
  -c "CREATE DATABASE otpd_test OWNER otpd_test"

export OTPD_TEST_POSTGRES_URL="host=$pgtmp user=otpd_test dbname=otpd_test"
log=$(mktemp)
set +e
cargo test --locked --test it -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "postgres: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
