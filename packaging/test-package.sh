#!/usr/bin/env bash
# The Debian package, end to end, as root on a machine without systemd as PID 1 (CI):
# build the .deb from the release binary, lintian, the unit files (verify + offline
# security score <= 2.0), dpkg -i, the user/groups/files/modes/conffiles, check-config,
# the installed daemon serving as user otpd, an upgrade that keeps the edited config and
# the database, then purge and check that nothing of it is left but the user and groups
# (Debian policy keeps them) and nothing else changed.
set -euo pipefail
cd "$(dirname "$0")/.."

SCORE_BAR=2.0
started=$(date +%s)
fail() {
    echo "test-package: FAIL: $*" >&2
    exit 1
}
step() { echo "== test-package: $*"; }
mode_of() { stat -c '%a %U:%G' "$1"; }
expect_mode() {
    local got
    got=$(mode_of "$1") || fail "$1 missing"
    [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
}
# What a package could leave behind: compared before install and after purge.
snapshot() {
    {
        find /etc /var/lib /usr/bin /usr/lib/systemd /lib/systemd /usr/lib/tmpfiles.d \
            /usr/share/man/man1 /usr/share/bash-completion /usr/share/zsh /usr/share/fish \
            /usr/share/doc /usr/share/lintian /usr/share/otpd /run -xdev 2>/dev/null |
            grep -v -e '^/var/lib/dpkg' -e '^/var/lib/apt' -e '^/var/lib/man-db' \
                -e '^/etc/ld.so.cache' -e '-$' -e '^/run/' || true
        # Purge keeps these (policy); a first run creates them: checked on their own.
        getent passwd | cut -d: -f1 | grep -vx otpd
        getent group | cut -d: -f1 | grep -vx -e otpd -e otpd-clients
    } | sort
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
if dpkg -s otpd >/dev/null 2>&1; then
    dpkg --purge otpd >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "build the .deb"
rm -rf target/debian
packaging/build-deb.sh --deb-version 0.1.0-1 >"$work/build.log" 2>&1 || {
    cat "$work/build.log"
    fail "cargo deb"
}
deb=$(ls target/debian/otpd_0.1.0-1_*.deb)
echo "$deb"
# cargo deb replaces target/debian's .deb: keep both versions for packaging/test-systemd.sh.
rm -rf target/packages
mkdir -p target/packages
cp "$deb" target/packages/

step "lintian"
lintian --version
# --fail-on warning: every warning is fixed or overridden (packaging/lintian-overrides).
lintian --fail-on error,warning --display-level ">=warning" "$deb" | tee "$work/lintian.log" ||
    fail "lintian found errors or warnings"

step "unit files: offline security score"
score=$(systemd-analyze security --offline=true systemd/otpd.service 2>&1 |
    sed -n 's/.*Overall exposure level for otpd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no security score from systemd-analyze"
echo "otpd.service exposure: $score (bar: $SCORE_BAR)"
awk -v s="$score" -v bar="$SCORE_BAR" 'BEGIN { exit !(s <= bar) }' ||
    fail "security score $score is above $SCORE_BAR"
grep -q "exposure level for otpd.service: $score OK" README.md ||
    fail "README.md does not print the current score ($score)"

before=$(snapshot)

step "dpkg -i"
dpkg -i "$deb"

step "user, groups, files, modes, conffiles"
getent passwd otpd | grep -q ':/var/lib/otpd:/usr/sbin/nologin$' || fail "user otpd: $(getent passwd otpd)"
[ "$(id -gn otpd)" = otpd ] || fail "otpd's primary group is $(id -gn otpd)"
getent group otpd-clients | grep -qw otpd || fail "otpd-clients: $(getent group otpd-clients)"
expect_mode /usr/bin/otpd "755 root:root"
unitdir=$(dirname "$(dpkg -L otpd | grep '/otpd.service$')")
expect_mode "$unitdir/otpd.service" "644 root:root"
expect_mode "$unitdir/otpd.socket" "644 root:root"
expect_mode /usr/lib/tmpfiles.d/otpd.conf "644 root:root"
grep -qx 'd /run/otpd 0755 otpd otpd -' /usr/lib/tmpfiles.d/otpd.conf || fail "tmpfiles.d entry"
expect_mode /etc/otpd "750 root:otpd"
expect_mode /etc/otpd/config.toml "640 root:otpd"
expect_mode /etc/otpd/otpd.env "640 root:otpd"
expect_mode /var/lib/otpd "750 otpd:otpd"
for page in otpd otpd-serve otpd-check-config otpd-send-otp otpd-status; do
    expect_mode "/usr/share/man/man1/$page.1.gz" "644 root:root"
done
expect_mode /usr/share/doc/otpd/configuration.md "644 root:root"
for f in otpd.rules.yml otpd.rules.test.yml otpd-dashboard.json; do
    expect_mode "/usr/share/otpd/monitoring/$f" "644 root:root"
done
for f in /usr/share/bash-completion/completions/otpd /usr/share/zsh/vendor-completions/_otpd \
    /usr/share/fish/vendor_completions.d/otpd.fish; do
    expect_mode "$f" "644 root:root"
done
zcat /usr/share/man/man1/otpd.1.gz | grep -q 'check\\-config' || fail "man page lacks check-config"
for section in FILES ENVIRONMENT '"EXIT STATUS"' SIGNALS; do
    zcat /usr/share/man/man1/otpd.1.gz | grep -q "^\.SH $section" || fail "man page lacks $section"
done
grep -q '^socket_group = "otpd-clients"$' /etc/otpd/config.toml || fail "production config"
conffiles=$(dpkg-query -W -f='${Conffiles}' otpd)
for f in /etc/otpd/config.toml /etc/otpd/otpd.env; do
    grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile: $conffiles"
done

step "otpd check-config --config /etc/otpd/config.toml (as root and as otpd)"
otpd check-config --config /etc/otpd/config.toml >"$work/effective.toml"
runuser -u otpd -- otpd check-config --config /etc/otpd/config.toml >/dev/null

step "systemd-analyze verify (installed units)"
systemd-analyze verify "$unitdir/otpd.socket" "$unitdir/otpd.service"

step "the installed daemon serves as otpd (the unit's user, paths and config)"
# What the tmpfiles.d entry makes at boot (postinst runs it only under systemd as PID 1).
systemd-tmpfiles --create otpd.conf
expect_mode /run/otpd "755 otpd:otpd"
# setpriv execs otpd itself (runuser would stay between, and answer SIGTERM itself).
setpriv --reuid=otpd --regid=otpd --init-groups otpd serve --config /etc/otpd/config.toml >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    [ -S /run/otpd/otpd.sock ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; fail "otpd exited"; }
    sleep 0.1
done
expect_mode /run/otpd/otpd.sock "660 otpd:otpd-clients"
otpd status --socket /run/otpd/otpd.sock --json >"$work/status.json" || {
    cat "$work/serve.log"
    fail "otpd status"
}
kill -TERM "$pid"
wait "$pid" || fail "otpd did not exit cleanly: $(cat "$work/serve.log")"
[ -f /var/lib/otpd/otpd.db ] || fail "no database in /var/lib/otpd"
expect_mode /var/lib/otpd/hmac.key "600 otpd:otpd"

step "upgrade keeps the edited config and the database"
sed -i 's/^length = 6$/length = 7/' /etc/otpd/config.toml
grep -q '^length = 7$' /etc/otpd/config.toml || fail "could not edit the config"
# A comment: otpd reads otpd.env itself (twilio.secrets_file), so a value must be valid.
echo '# edited before the upgrade' >>/etc/otpd/otpd.env
db_sum=$(sha256sum /var/lib/otpd/otpd.db /var/lib/otpd/hmac.key)
packaging/build-deb.sh --deb-version 0.1.1-1 >"$work/build2.log" 2>&1 || {
    cat "$work/build2.log"
    fail "cargo deb (upgrade)"
}
cp target/debian/otpd_0.1.1-1_*.deb target/packages/
dpkg -i target/debian/otpd_0.1.1-1_*.deb
[ "$(dpkg-query -W -f='${Version}' otpd)" = 0.1.1-1 ] || fail "not upgraded"
grep -q '^length = 7$' /etc/otpd/config.toml || fail "the upgrade lost the config edit"
grep -q '^# edited before the upgrade$' /etc/otpd/otpd.env || fail "the upgrade lost the env file edit"
[ "$(sha256sum /var/lib/otpd/otpd.db /var/lib/otpd/hmac.key)" = "$db_sum" ] || fail "the database changed"
expect_mode /etc/otpd/config.toml "640 root:otpd"
otpd check-config --config /etc/otpd/config.toml | grep -q '^length = 7$' || fail "check-config after upgrade"

step "remove keeps data and config; purge removes what the package created, keeps the user"
dpkg --remove otpd
[ -f /var/lib/otpd/otpd.db ] || fail "remove deleted the database"
[ -f /etc/otpd/config.toml ] || fail "remove deleted the config"
dpkg --purge otpd
for path in /usr/bin/otpd /etc/otpd /var/lib/otpd /run/otpd "$unitdir/otpd.service" \
    /usr/lib/tmpfiles.d/otpd.conf; do
    [ ! -e "$path" ] || fail "$path left after purge"
done
getent passwd otpd >/dev/null || fail "purge removed the user otpd (policy keeps it)"
getent group otpd >/dev/null || fail "purge removed the group otpd"
getent group otpd-clients >/dev/null || fail "purge removed the group otpd-clients"
after=$(snapshot)
diff <(echo "$before") <(echo "$after") || fail "purge left or removed the paths above"

echo "test-package: OK in $(($(date +%s) - started)) s (security score $score)"
