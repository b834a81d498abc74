#!/usr/bin/env bash
# The package under a real systemd (issue 17): boots a minimal Debian 12 (debootstrap
# minbase, no procps) with systemd 252 as PID 1 in systemd-nspawn, installs the .deb the
# package stage built and drives it the way a sysadmin does: verify, the security score,
# start (Type=notify), the socket's owner and mode and who may call it (after the first
# start, after `enable --now` and after a reboot), reload, the secrets file, journal
# fields, the watchdog, Restart=, socket activation, upgrade, remove and purge.
#
# As root, after packaging/test-package.sh (which leaves target/packages/otpd_0.1.0-1 and
# otpd_0.1.1-1). Needs systemd-nspawn (systemd-container), debootstrap, nsenter and
# python3 on the host; the minbase tree is cached under target/systemd-stage/. The
# container shares the host's network, so the mock Twilio listens on 127.0.0.1 here.
# Prints one line per check and `N passed, N failed`; exits non-zero on any failure and
# leaves no container, mount or mock behind.
#
# usage: packaging/test-systemd.sh [--deb FILE] [--upgrade-deb FILE]
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$(date +%s)

deb=$(ls target/packages/otpd_0.1.0-1_*.deb 2>/dev/null | head -n 1)
upgrade_deb=$(ls target/packages/otpd_0.1.1-1_*.deb 2>/dev/null | head -n 1)
while [ $# -gt 0 ]; do
    case $1 in
    --deb) deb=$2; shift 2 ;;
    --upgrade-deb) upgrade_deb=$2; shift 2 ;;
    *) echo "usage: $0 [--deb FILE] [--upgrade-deb FILE]" >&2; exit 2 ;;
    esac
done

die() {
    echo "test-systemd: $*" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || die "run as root (it boots a container)"
[ -f "$deb" ] && [ -f "$upgrade_deb" ] || die "no .deb: run packaging/test-package.sh first"
for tool in systemd-nspawn debootstrap nsenter python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install systemd-container debootstrap)"
done

# The tree: what a minimal Debian 12 with systemd has, plus curl to call the socket and
# adduser (the package's dependency), so install needs no network. No procps, on purpose.
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,adduser,curl
cache_root=$repo/target/systemd-stage
cache=$cache_root/$SUITE-minbase-$(echo "$SUITE $INCLUDE 1" | sha256sum | cut -c1-12)
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    tr ' ' '\n' | grep -v -e security -e '^$' | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' \
    /etc/apt/sources.list 2>/dev/null)
mirror=${mirror:-http://deb.debian.org/debian}

if [ ! -d "$cache" ]; then
    echo "== debootstrap $SUITE (minbase) from $mirror into $cache (once; cached)"
    mkdir -p "$cache_root"
    # Earlier trees (another package list) are not reused: keep the disk for this one.
    find "$cache_root" -maxdepth 1 -name "$SUITE-minbase-*" -exec rm -rf {} +
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$cache.tmp" "$mirror" \
        >"$cache_root/debootstrap.log" 2>&1 || {
        tail -n 20 "$cache_root/debootstrap.log"
        die "debootstrap failed"
    }
    rm -rf "$cache.tmp/var/cache/apt/archives"/*.deb
    mv "$cache.tmp" "$cache"
fi

# Each run boots an overlay on the cached tree, so the cache stays pristine.
work=$(mktemp -d "$cache_root/run.XXXXXX")
root=$work/root
mkdir -p "$work/upper" "$work/ovl" "$root"
mount -t overlay overlay -o "lowerdir=$cache,upperdir=$work/upper,workdir=$work/ovl" "$root" ||
    die "cannot mount an overlay on $cache"

nspawn_pid=
mock_pid=
leader=
halt_container() {
    [ -n "$nspawn_pid" ] || return 0
    # systemd-nspawn turns SIGTERM into a clean poweroff of the container.
    kill -TERM "$nspawn_pid" 2>/dev/null
    for _ in $(seq 300); do
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
    nspawn_pid=
    leader=
}
cleanup() {
    halt_container
    if [ -n "$mock_pid" ]; then
        kill "$mock_pid" 2>/dev/null
        wait "$mock_pid" 2>/dev/null
    fi
    umount "$root" 2>/dev/null || umount -l "$root" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- running things inside ------------------------------------------------------------
boot() {
    systemd-nspawn --boot --register=no --keep-unit --quiet --console=read-only \
        --directory="$root" --machine=otpd-stage >>"$work/console.log" 2>&1 &
    nspawn_pid=$!
    leader=
    for _ in $(seq 300); do
        # The container's PID 1 is the child of systemd-nspawn.
        for stat in /proc/[0-9]*/stat; do
            read -r -a fields <<<"$(sed 's/^.*) //' "$stat" 2>/dev/null)"
            if [ "${fields[1]:-}" = "$nspawn_pid" ]; then
                pid=${stat#/proc/}
                leader=${pid%/stat}
                break
            fi
        done
        # Entered only once it is systemd, not nspawn still setting up its namespaces.
        [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
        leader=
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$leader" ] || { tail -n 30 "$work/console.log"; die "the container did not boot"; }
    local state
    state=$(c timeout 60 systemctl is-system-running --wait)
    case $state in
    running) ;;
    degraded) echo "# booted degraded: $(c systemctl --failed --no-legend --plain | tr '\n' ' ')" ;;
    *) tail -n 30 "$work/console.log"; die "the container's systemd is '$state'" ;;
    esac
}
# c CMD...: run CMD as root in the container, with a clean environment.
c() {
    nsenter --target "$leader" --all --root --wd -- /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_COLORS=0 "$@"
}
cs() { c /bin/sh -c "$1"; }
# api USER METHOD PATH [JSON]: the body, then the HTTP status on a line of its own.
api() {
    local data=()
    [ $# -ge 4 ] && data=(-H 'Content-Type: application/json' --data-binary "$4")
    c runuser -u "$1" -- curl -s --max-time 20 -X "$2" --unix-socket /run/otpd/otpd.sock \
        -w '\n%{http_code}' "${data[@]}" "http://localhost$3"
}
status_of() { tail -n 1 <<<"$1"; }
body_of() { sed '$d' <<<"$1"; }
# jget EXPR: EXPR over the JSON on stdin as `v` (Python), printed.
jget() {
    python3 -c "import json,sys
text = sys.stdin.read()
try:
    v = json.loads(text)
except ValueError:
    sys.exit(f'not JSON: {text!r}')
print($1)"
}
mode_of() { c stat -c '%a %U:%G' "$1" 2>&1; }
prop() { c systemctl show -p "$2" --value "$1"; }
unit() { c systemctl "$@"; }
# The control plane survives a burst of restarts: clear the start-rate counter first.
restart_otpd() { unit reset-failed otpd.service 2>/dev/null; unit restart otpd.service; }
# How many reloads the running otpd has finished, by its own log lines: `systemctl
# reload` returns once the signal is sent, not when otpd has applied (or refused) it.
reloads_done() {
    c journalctl --no-pager -o cat "_PID=$(prop otpd.service MainPID)" |
        grep -ciE 'reloaded|reload rejected'
}
reloads_above() { [ "$(reloads_done)" -gt "$1" ]; }
reload_otpd() {
    local before
    before=$(reloads_done)
    unit reload otpd.service || return 1
    within 10 reloads_above "$before" || { echo "otpd logged no reload outcome"; return 1; }
}

# --- checks -----------------------------------------------------------------------------
n=0 passed=0 failed=0
check() {
    local name=$1 out
    shift
    n=$((n + 1))
    if out=$("$@" 2>&1); then
        passed=$((passed + 1))
        echo "ok $n - $name"
    else
        failed=$((failed + 1))
        echo "not ok $n - $name"
        tail -n 25 <<<"$out" | sed 's/^/#   /'
    fi
}
group() { echo "== $*"; }
eq() { [ "$1" = "$2" ] || { echo "$3: got '$1', expected '$2'"; return 1; }; }
has() { grep -qF -- "$2" <<<"$1" || { echo "$3: '$2' not in:"; echo "$1"; return 1; }; }
# within SECONDS CMD...: CMD succeeds within SECONDS (polled); else its last output.
within() {
    local deadline=$(($(date +%s) + $1)) out
    shift
    while :; do
        out=$("$@" 2>&1) && return 0
        [ "$(date +%s)" -ge "$deadline" ] && { echo "$out"; return 1; }
        sleep 0.2
    done
}

# --- the mock Twilio and the configuration -----------------------------------------------
SID=AC$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
WRONG_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
FROM=+15005550006
python3 packaging/mock-twilio.py --sid "$SID" --token "$TOKEN" --port-file "$work/port" \
    --record "$work/twilio.jsonl" 2>"$work/mock.log" &
mock_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || die "the mock Twilio did not start: $(cat "$work/mock.log")"
: >>"$work/twilio.jsonl"
api_base=http://127.0.0.1:$(cat "$work/port")

# Each send goes to a number of its own, so no per-phone limit links two checks. A file:
# checks run in subshells.
echo 100 >"$work/phone_n"
next_phone() {
    local n
    n=$(($(cat "$work/phone_n") + 1))
    echo "$n" >"$work/phone_n"
    phone=+34600111$n
}
masked() { echo "${1:0:3}*****${1: -3}"; }
send_otp() { # send_otp PHONE: the answer of send-otp as the backend
    api backend POST /api/v1/messaging/send-otp/ \
        "{\"phone_number\":\"$1\",\"purpose\":\"login\",\"user_id\":\"42\"}"
}
# The last message the mock got for PHONE, as JSON.
last_to() {
    python3 - "$work/twilio.jsonl" "$1" <<'PY'
import json, sys
hits = [r for r in map(json.loads, open(sys.argv[1])) if r.get("form", {}).get("To") == sys.argv[2]]
if not hits:
    sys.exit(f"the mock got no message to {sys.argv[2]}")
print(json.dumps(hits[-1]))
PY
}
# configure: the installed config pointed at the mock, all secrets in config.toml.
configure() {
    cs "sed -i -e 's|^api_base = .*|api_base = \"$api_base\"|' \
        -e 's|^account_sid = \"\"|account_sid = \"$SID\"|' \
        -e 's|^auth_token = \"\"|auth_token = \"$TOKEN\"|' \
        -e 's|^from_number = \"\"|from_number = \"$FROM\"|' /etc/otpd/config.toml &&
        grep -q '^auth_token = \"$TOKEN\"' /etc/otpd/config.toml &&
        cp -p /etc/otpd/config.toml /root/config.base.toml"
}
restore_config() { cs 'cp -p /root/config.base.toml /etc/otpd/config.toml'; }

# =========================================================================================
boot
group "the minimal system"
t_pid1() {
    eq "$(c cat /proc/1/comm)" systemd "PID 1" &&
        has "$(c systemctl --version)" "systemd 252" "systemctl --version"
}
check "PID 1 in the container is systemd 252" t_pid1
check "the container has no procps (no /bin/kill): the system ExecReload= must work on" \
    cs '[ ! -e /bin/kill ] && [ ! -e /usr/bin/kill ] && ! dpkg -s procps >/dev/null 2>&1'

group "install"
cp "$deb" "$root/root/otpd.deb"
cp "$upgrade_deb" "$root/root/otpd-upgrade.deb"
check "dpkg -i $(basename "$deb")" c dpkg -i /root/otpd.deb
check "/run/otpd exists at install, 755 otpd:otpd (tmpfiles.d, before any start)" \
    eq "$(mode_of /run/otpd)" "755 otpd:otpd" "/run/otpd"
t_not_started() {
    eq "$(unit is-enabled otpd.service otpd.socket | tr '\n' ' ')" "disabled disabled " "enabled" &&
        eq "$(unit is-active otpd.service otpd.socket | tr '\n' ' ')" "inactive inactive " "active"
}
check "the install enables and starts nothing (Twilio is configured first)" t_not_started
t_verify() {
    local out
    # --man=no: Documentation=man:otpd(1) is checked by running man, which a minimal system
    # lacks; the page itself is checked below.
    out=$(c systemd-analyze verify --man=no /usr/lib/systemd/system/otpd.socket \
        /usr/lib/systemd/system/otpd.service 2>&1) || { echo "$out"; return 1; }
    eq "$out" "" "systemd-analyze verify's findings" &&
        c test -s /usr/share/man/man1/otpd.1.gz
}
check "systemd-analyze verify otpd.socket otpd.service inside: clean (and the man page there)" \
    t_verify
t_security() {
    local online readme
    online=$(c systemd-analyze security --no-pager otpd.service 2>&1 |
        sed -n 's/.*Overall exposure level for otpd.service: \([0-9.]*\).*/\1/p')
    readme=$(sed -n 's/.*Overall exposure level for otpd.service: \([0-9.]*\) .*/\1/p' README.md)
    [ -n "$online" ] && [ -n "$readme" ] || { echo "online '$online', README '$readme'"; return 1; }
    eq "$online" "$readme" "online score vs the README's"
}
check "the online systemd-analyze security score is the README's" t_security

group "first start: socket activation"
check "configure the mock Twilio in /etc/otpd/config.toml" configure
check "otpd check-config accepts the installed config" c otpd check-config --config /etc/otpd/config.toml
check "make a caller in otpd-clients (backend) and one outside it (stranger)" \
    cs 'useradd --create-home backend && useradd --create-home stranger &&
        adduser --quiet backend otpd-clients'
t_socket_listens() {
    unit start otpd.socket || return 1
    eq "$(unit is-active otpd.service)" inactive "otpd.service before a request" &&
        eq "$(mode_of /run/otpd/otpd.sock)" "660 otpd:otpd-clients" "the socket"
}
check "systemctl start otpd.socket: the socket is 660 otpd:otpd-clients, otpd not running" \
    t_socket_listens
t_activation() {
    local r
    r=$(api backend GET /healthz)
    eq "$(status_of "$r")" 200 "healthz" && eq "$(body_of "$r")" '{"status":"ok"}' "healthz" &&
        eq "$(unit is-active otpd.service)" active "otpd.service after the request"
}
check "socket activation: the first request starts otpd and is answered" t_activation
# t_access WHEN: the socket's owner, group and mode, and who may call it.
t_access() {
    eq "$(mode_of /run/otpd)" "755 otpd:otpd" "/run/otpd" &&
        eq "$(mode_of /run/otpd/otpd.sock)" "660 otpd:otpd-clients" "the socket" || return 1
    c runuser -u backend -- otpd status >/dev/null || {
        echo "otpd status as a member of otpd-clients failed"
        return 1
    }
    local out
    if out=$(c runuser -u stranger -- curl -sS -v --unix-socket /run/otpd/otpd.sock \
        http://localhost/healthz 2>&1); then
        echo "a caller outside otpd-clients got in: $out"
        return 1
    fi
    has "$out" "Permission denied" "the stranger's refusal"
}
check "after the first start: socket 660 otpd:otpd-clients; a member calls, a non-member gets EACCES" \
    t_access
t_ready() {
    unit stop otpd.service || return 1
    eq "$(prop otpd.service Type)" notify "Type" || return 1
    unit start otpd.service || return 1
    # Type=notify: start returns once otpd said READY=1, so no 'activating' is left.
    eq "$(prop otpd.service ActiveState)/$(prop otpd.service SubState)" active/running "state" &&
        eq "$(status_of "$(api backend GET /healthz)")" 200 "healthz right after start"
}
check "systemctl start otpd reaches active/running (Type=notify: READY=1)" t_ready

group "journal fields"
next_phone
journal_phone=$phone
t_journal() {
    local r id code entries
    r=$(send_otp "$journal_phone")
    eq "$(status_of "$r")" 200 "send-otp" || { echo "$r"; return 1; }
    id=$(body_of "$r" | jget 'v["otp_id"]')
    code=$(last_to "$journal_phone" | jget 'v["form"]["Body"]' | grep -oE '[0-9]{4,10}' | head -n 1)
    [ -n "$code" ] || { echo "no code in the mock's message"; return 1; }
    c journalctl -u otpd --no-pager -o json "OTP_ID=$id" >"$work/otp.json" || return 1
    python3 - "$(masked "$journal_phone")" "$work/otp.json" <<'PY' || return 1
import json, sys
lines = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
if not any(e.get("PHONE") == sys.argv[1] for e in lines):
    sys.exit(f"no entry with PHONE={sys.argv[1]} among {len(lines)} for the OTP_ID: {lines}")
PY
    # Nothing the unit logged carries the number, the code or the token.
    c journalctl -u otpd --no-pager -o json >"$work/unit.json" || return 1
    python3 - "${journal_phone#+}" "$code" "$TOKEN" "$work/unit.json" <<'PY'
import json, re, sys
digits, code, token, path = sys.argv[1:]
for line in open(path):
    entry = json.loads(line)
    for key, value in entry.items():
        text = json.dumps(value)
        if digits in text or token in text:
            sys.exit(f"{key} carries the full number or the token: {entry}")
        # The code is a word of its own; timestamps and ids (underscore fields) hold digits.
        if not key.startswith("_") and re.search(rf"(?<!\d){code}(?!\d)", text):
            sys.exit(f"{key} carries the code: {entry}")
PY
}
check "journalctl -u otpd OTP_ID=… finds the send with PHONE masked; no number, code or token logged" \
    t_journal

group "reload"
otp_length_is() {
    eq "$(api backend GET /api/v1/messaging/status/ | sed '$d' | jget 'v["otp_length"]')" "$1" \
        "otp_length"
}
journal_has() { c journalctl -u otpd --no-pager "${@:2}" | grep -qF -- "$1"; }
# restarted_from PID: otpd runs again, as another process than PID.
restarted_from() {
    local p
    p=$(prop otpd.service MainPID)
    [ "$p" != "$1" ] && [ "$p" != 0 ] && [ "$(prop otpd.service ActiveState)" = active ]
}
t_reload_applies() {
    local pid r
    pid=$(prop otpd.service MainPID)
    cs "sed -i -e 's/^length = 6\$/length = 7/' -e 's|^send_per_phone = .*|send_per_phone = \"1/1h\"|' \
        /etc/otpd/config.toml && grep -q '^length = 7\$' /etc/otpd/config.toml" || return 1
    reload_otpd || return 1
    within 10 otp_length_is 7 || { echo "otp_length did not become 7"; return 1; }
    eq "$(prop otpd.service MainPID)" "$pid" "MainPID across the reload" &&
        eq "$(prop otpd.service ActiveState)/$(prop otpd.service SubState)" active/running "state" ||
        return 1
    next_phone
    r=$(send_otp "$phone")
    eq "$(status_of "$r")" 200 "the first send after the reload" || { echo "$r"; return 1; }
    r=$(send_otp "$phone")
    eq "$(status_of "$r")" 429 "the second send under send_per_phone = 1/1h" &&
        has "$r" '"rate_limited"' "the answer"
}
check "systemctl reload otpd applies a changed [otp] length and [limits] send_per_phone" \
    t_reload_applies
t_reload_rejects() {
    local pid
    pid=$(prop otpd.service MainPID)
    cs 'echo "this is not = toml [" >>/etc/otpd/config.toml' || return 1
    reload_otpd || return 1
    within 10 journal_has "reload rejected" -p err ||
        { echo "no 'reload rejected' error in the journal"; return 1; }
    eq "$(prop otpd.service MainPID)" "$pid" "MainPID" &&
        eq "$(prop otpd.service ActiveState)/$(prop otpd.service SubState)" active/running "state" &&
        otp_length_is 7
}
check "a broken config is rejected on reload, logged as an error, and the old one keeps serving" \
    t_reload_rejects
t_restore() { restore_config && reload_otpd && otp_length_is 6; }
check "restore the configuration (reload)" t_restore

group "secrets file: otpd reads it itself"
check "the unit has no EnvironmentFile= (systemd would read it only at start)" \
    eq "$(prop otpd.service EnvironmentFiles)" "" "EnvironmentFiles"
t_secrets_file_key() {
    c grep -qx 'secrets_file = "/etc/otpd/otpd.env"' /etc/otpd/config.toml || {
        echo "/etc/otpd/config.toml's [twilio] has: $(c sed -n '/^\[twilio\]/,/^\[/p' \
            /etc/otpd/config.toml | grep -v '^#' | grep secrets || echo 'no secrets_file')"
        return 1
    }
}
check "the packaged config reads the secrets file: secrets_file = \"/etc/otpd/otpd.env\"" \
    t_secrets_file_key
# set_env_token TOKEN: the token only in otpd.env, none in config.toml.
set_env_token() {
    cs "sed -i 's|^auth_token = .*|auth_token = \"\"|' /etc/otpd/config.toml &&
        sed -i '/^TWILIO_AUTH_TOKEN=/d' /etc/otpd/otpd.env &&
        echo 'TWILIO_AUTH_TOKEN=$1' >>/etc/otpd/otpd.env"
}
t_check_config_env() {
    local out
    set_env_token "$TOKEN" || return 1
    out=$(c otpd check-config --config /etc/otpd/config.toml) || { echo "$out"; return 1; }
    ! grep -qF "$TOKEN" <<<"$out" || { echo "check-config printed the token"; return 1; }
    has "$out" 'auth_token = "********"' "check-config (the token from otpd.env, masked)"
}
check "otpd check-config shows the token from otpd.env (masked) that the service will use" \
    t_check_config_env
# sent_with PHONE: whether the mock saw the last message to PHONE with the right token.
sent_with() { last_to "$1" | jget 'v["authorized"]'; }
t_env_reload() {
    set_env_token "$WRONG_TOKEN" && reload_otpd || return 1
    next_phone
    send_otp "$phone" >/dev/null
    eq "$(sent_with "$phone")" False "after otpd.env got a wrong token and a reload, Twilio saw" ||
        return 1
    set_env_token "$TOKEN" && reload_otpd || return 1
    next_phone
    local r
    r=$(send_otp "$phone")
    eq "$(status_of "$r")" 200 "send-otp with the right token back in otpd.env" &&
        eq "$(sent_with "$phone")" True "Twilio saw"
}
check "an edit to otpd.env applies on systemctl reload (wrong token refused, right one accepted)" \
    t_env_reload
group "health (issue 17 item 7)"
t_head_healthz() {
    local out
    out=$(c runuser -u backend -- curl -sS -I --unix-socket /run/otpd/otpd.sock \
        http://localhost/healthz) || { echo "$out"; return 1; }
    has "$(head -n 1 <<<"$out")" " 200" "HEAD /healthz"
}
check "HEAD /healthz answers 200 like GET" t_head_healthz
# credentials_are: what /status/ says of Twilio's verdict on the running credentials.
credentials_are() {
    eq "$(api backend GET /api/v1/messaging/status/ | sed '$d' | jget 'v["provider_credentials"]')" \
        "$1" "provider_credentials"
}
t_credentials_status() {
    credentials_are accepted || return 1
    set_env_token "$WRONG_TOKEN" && reload_otpd || return 1
    # A reload builds a new Twilio client, so the verdict is asked again, not cached.
    credentials_are rejected || return 1
    local out
    out=$(c otpd status) || true
    has "$out" "rejected" "otpd status with a wrong token" || return 1
    set_env_token "$TOKEN" && reload_otpd && credentials_are accepted
}
check "status tells whether Twilio accepts the credentials (FetchAccount): accepted, rejected after a wrong token, accepted again" \
    t_credentials_status

group "credentials (LoadCredential=): copied at start only, so a change needs a restart"
t_credentials() {
    local r
    cs "mkdir -p /etc/otpd/credentials /etc/systemd/system/otpd.service.d &&
        printf %s '$WRONG_TOKEN' >/etc/otpd/credentials/twilio_auth_token &&
        chmod 0600 /etc/otpd/credentials/twilio_auth_token &&
        printf '[Service]\nLoadCredential=twilio_auth_token:/etc/otpd/credentials/twilio_auth_token\n' \
            >/etc/systemd/system/otpd.service.d/credential.conf &&
        sed -i 's|^auth_token = .*|auth_token = \"$TOKEN\"|' /etc/otpd/config.toml" || return 1
    unit daemon-reload && restart_otpd || return 1
    next_phone
    send_otp "$phone" >/dev/null
    eq "$(sent_with "$phone")" False "with a wrong credential (it beats the config), Twilio saw"
}
check "a credential (LoadCredential=) is used from the start, over the config's token" \
    t_credentials
t_credential_reload() {
    cs "printf %s '$TOKEN' >/etc/otpd/credentials/twilio_auth_token" && reload_otpd || return 1
    next_phone
    send_otp "$phone" >/dev/null
    eq "$(sent_with "$phone")" False "after a reload, Twilio still saw the old credential" ||
        return 1
    restart_otpd || return 1
    next_phone
    eq "$(status_of "$(send_otp "$phone")")" 200 "send-otp after the restart" &&
        eq "$(sent_with "$phone")" True "after a restart, Twilio saw the new credential"
}
check "a changed credential file needs a restart, not a reload" t_credential_reload
t_no_credential() {
    cs 'rm -rf /etc/systemd/system/otpd.service.d /etc/otpd/credentials' && restore_config &&
        unit daemon-reload && restart_otpd
}
check "drop the credential again (restart)" t_no_credential

group "watchdog, Restart=, stop"
t_watchdog_default() { eq "$(prop otpd.service WatchdogUSec)" 30s "WatchdogUSec"; }
check "the unit sets WatchdogSec=30s" t_watchdog_default
# The unit's 30 s would make these checks slow: a runtime drop-in shortens it to 2 s.
t_watchdog_pings() {
    local pid stamp
    cs 'mkdir -p /run/systemd/system/otpd.service.d &&
        printf "[Service]\nWatchdogSec=2s\n" >/run/systemd/system/otpd.service.d/watchdog.conf' &&
        unit daemon-reload && restart_otpd || return 1
    pid=$(prop otpd.service MainPID)
    stamp=$(prop otpd.service WatchdogTimestampMonotonic)
    sleep 5
    eq "$(prop otpd.service MainPID)" "$pid" "MainPID 5 s later (2.5 watchdog periods)" &&
        eq "$(prop otpd.service ActiveState)" active "state" || return 1
    [ "$(prop otpd.service WatchdogTimestampMonotonic)" -gt "$stamp" ] ||
        { echo "no WATCHDOG=1 in 5 s"; return 1; }
}
check "otpd pings the watchdog (WatchdogSec=2s: alive after 5 s, WATCHDOG=1 received)" \
    t_watchdog_pings
t_watchdog_fires() {
    local pid
    pid=$(prop otpd.service MainPID)
    cs "kill -STOP $pid" || return 1
    within 20 restarted_from "$pid" || { echo "otpd was not restarted after it hung"; return 1; }
    has "$(c journalctl -u otpd --no-pager)" "Watchdog timeout" "the journal"
}
check "a hung otpd (SIGSTOP) is killed by the watchdog and restarted" t_watchdog_fires
t_watchdog_back() {
    cs 'rm -rf /run/systemd/system/otpd.service.d' && unit daemon-reload && restart_otpd &&
        t_watchdog_default
}
check "back to the unit's WatchdogSec" t_watchdog_back
t_restart_on_failure() {
    local pid restarts
    pid=$(prop otpd.service MainPID)
    restarts=$(prop otpd.service NRestarts)
    cs "kill -KILL $pid" || return 1
    within 15 restarted_from "$pid" || { echo "otpd was not restarted after kill -9"; return 1; }
    [ "$(prop otpd.service NRestarts)" -gt "$restarts" ] || { echo "NRestarts did not grow"; return 1; }
    eq "$(status_of "$(api backend GET /healthz)")" 200 "healthz after the restart"
}
check "Restart=on-failure: kill -9 of otpd is followed by a new otpd that answers" \
    t_restart_on_failure
t_stop() {
    unit stop otpd.service || return 1
    eq "$(unit is-active otpd.service)" inactive "otpd.service" &&
        eq "$(prop otpd.service Result)" success "Result (a clean exit on SIGTERM)" &&
        eq "$(prop otpd.service ExecMainStatus)" 0 "exit status" &&
        eq "$(unit is-active otpd.socket)" active "otpd.socket" &&
        eq "$(mode_of /run/otpd/otpd.sock)" "660 otpd:otpd-clients" "the socket after the stop"
}
check "systemctl stop otpd: a clean exit, the socket keeps listening" t_stop
t_activation_again() {
    local r
    r=$(api backend GET /api/v1/messaging/status/)
    eq "$(status_of "$r")" 200 "status" &&
        eq "$(unit is-active otpd.service)" active "otpd.service after the request"
}
check "socket activation after a stop: the first request starts otpd again" t_activation_again

group "upgrade, remove, purge"
next_phone
upgrade_phone=$phone
t_upgrade() {
    local r code pid
    r=$(send_otp "$upgrade_phone")
    eq "$(status_of "$r")" 200 "send-otp before the upgrade" || { echo "$r"; return 1; }
    code=$(last_to "$upgrade_phone" | jget 'v["form"]["Body"]' | grep -oE '[0-9]{4,10}' | head -n 1)
    pid=$(prop otpd.service MainPID)
    c dpkg -i /root/otpd-upgrade.deb || return 1
    eq "$(c dpkg-query -W -f='${Version}' otpd)" "$(dpkg-deb -f "$upgrade_deb" Version)" "version" &&
        eq "$(prop otpd.service ActiveState)" active "otpd.service after the upgrade" || return 1
    [ "$(prop otpd.service MainPID)" != "$pid" ] || { echo "the upgrade did not restart otpd"; return 1; }
    c grep -q "^api_base = \"$api_base\"" /etc/otpd/config.toml || { echo "config edit lost"; return 1; }
    eq "$(mode_of /run/otpd/otpd.sock)" "660 otpd:otpd-clients" "the socket after the upgrade" ||
        return 1
    # The database and hmac.key were kept: a code sent before verifies after.
    r=$(api backend POST /api/v1/messaging/verify-otp/ \
        "{\"phone_number\":\"$upgrade_phone\",\"purpose\":\"login\",\"user_id\":\"42\",\"otp_code\":\"$code\"}")
    eq "$(status_of "$r")" 200 "verify-otp after the upgrade" || { echo "$r"; return 1; }
}
check "upgrade (dpkg -i $(basename "$upgrade_deb")): restarted, config and data kept" t_upgrade
t_remove() {
    c dpkg --remove otpd || return 1
    eq "$(unit is-active otpd.service otpd.socket | tr '\n' ' ')" "inactive inactive " "units" &&
        c test ! -e /usr/bin/otpd -a ! -e /run/otpd/otpd.sock &&
        c test -f /var/lib/otpd/otpd.db -a -f /var/lib/otpd/hmac.key -a -f /etc/otpd/config.toml
}
check "dpkg --remove: units stopped, binary and socket gone, data and config kept" t_remove
t_purge() {
    c dpkg --purge otpd || return 1
    c sh -c 'for p in /var/lib/otpd /etc/otpd /run/otpd /usr/lib/tmpfiles.d/otpd.conf; do
        [ ! -e "$p" ] || { echo "$p left after purge"; exit 1; }; done' &&
        c getent passwd otpd >/dev/null && c getent group otpd >/dev/null &&
        has "$(c getent group otpd-clients)" backend "otpd-clients (kept, with its members)"
}
check "dpkg --purge: data, config and /run/otpd gone; the user and groups kept (policy)" t_purge

group "a fresh install started with enable --now, then a reboot"
check "dpkg -i again after the purge" c dpkg -i /root/otpd.deb
check "configure the mock Twilio again" configure
t_enable_now() {
    unit enable --now otpd.socket otpd.service || return 1
    eq "$(unit is-active otpd.socket otpd.service | tr '\n' ' ')" "active active " "units"
}
check "systemctl enable --now otpd.socket otpd.service" t_enable_now
check "after enable --now: socket 660 otpd:otpd-clients; a member calls, a non-member gets EACCES" \
    t_access
halt_container
boot
t_after_boot() {
    eq "$(unit is-active otpd.socket otpd.service | tr '\n' ' ')" "active active " "units at boot" &&
        eq "$(unit is-enabled otpd.service)" enabled "otpd.service"
}
check "after a reboot: otpd.socket and otpd.service are up" t_after_boot
check "after a reboot: socket 660 otpd:otpd-clients; a member calls, a non-member gets EACCES" \
    t_access
halt_container

echo "test-systemd: $passed passed, $failed failed in $(($(date +%s) - started)) s"
[ "$failed" -eq 0 ]
