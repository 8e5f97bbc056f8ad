#!/usr/bin/env bash
# Live-systemd test: boots a real systemd (Debian bookworm, systemd 252) in
# a container and installs smtpbox in it exactly as INSTALL.md and the
# README say, by running their own shell blocks (the ones after a
# `<!-- live-systemd: NAME -->` line). Then checks that the result works:
# socket activation on 25 and 587, the service's identity and hardening at
# run time, sendmail from root and from an ordinary user, the TLS steps,
# the stop in the middle of DATA, and the Accept=yes pair.
#
#   scripts/live-systemd.sh [BINARY]   (default: the static build of .ci/run)
#   scripts/live-systemd.sh --package DEB
#                                      the Debian package instead, installed
#                                      with apt over exim4 (scripts/live-package.sh)
#
# Needs root, debootstrap and systemd-nspawn (Debian: debootstrap,
# systemd-container) and the Debian archive. The root file system is cached
# in $SMTPBOX_LIVE_CACHE (/var/cache/smtpbox-live) and copied for each run.
# Without root or a container that boots it skips (exit 0), except under CI
# (CI set, as .ci/run does), where that is a failure. Prints PASS/FAIL per
# check; exits 1 when any check fails. The whole run is bounded (15 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
# (Through the environment too: the bounded re-exec below passes on what
# is left of the arguments.)
DEB=${SMTPBOX_LIVE_DEB:-}
if [ "${1:-}" = --package ]; then
  DEB=${2:?--package needs a .deb}
  shift 2
fi
export SMTPBOX_LIVE_DEB=$DEB
BIN=${1:-target/x86_64-unknown-linux-gnu/release/smtpbox}
CACHE=${SMTPBOX_LIVE_CACHE:-/var/cache/smtpbox-live}
MIRROR=${SMTPBOX_LIVE_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,python3,openssl,procps
# The package test starts where a stock Debian box is: exim4 as its MTA,
# mail(1) and cron (the container has no network to install them later).
[ -z "$DEB" ] || PACKAGES=$PACKAGES,exim4-daemon-light,bsd-mailx,cron
LIMIT=900

if [ -z "${SMTPBOX_LIVE_BOUNDED:-}" ]; then
  export SMTPBOX_LIVE_BOUNDED=1
  exec timeout --kill-after=30 "$LIMIT" "$0" "$@"
fi

started=$SECONDS
say() { echo "live-systemd: $*"; }
skip() {
  if [ -n "${CI:-}" ]; then
    say "FAIL: $* (CI is set: this test must run)"
    exit 1
  fi
  say "SKIP: $*"
  exit 0
}

[ "$(id -u)" = 0 ] || skip "not root"
for tool in debootstrap systemd-nspawn nsenter timeout; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install debootstrap systemd-container)"
done
if [ -n "$DEB" ]; then
  [ -f "$DEB" ] || { say "FAIL: no package at $DEB (scripts/deb.sh amd64 makes it)"; exit 1; }
else
  [ -x "$BIN" ] || { say "FAIL: no binary at $BIN (build it as .ci/run does)"; exit 1; }
fi

# ---- The root file system, cached ----
key=$(printf 'bookworm %s' "$PACKAGES" | sha256sum | cut -c1-12)
BASE=$CACHE/base-$key
mkdir -p "$CACHE"
# One run at a time per cache; a container an earlier run left running (a
# run killed with SIGKILL skips its trap) is stopped first, by its PID.
exec 9>"$CACHE/lock"
flock -w 600 9 || { say "FAIL: another run holds $CACHE/lock"; exit 1; }
# Its init outlives a killed nspawn; killing the init ends the container.
is_container_init() {
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = systemd ] &&
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qx container=systemd-nspawn
}
for old in $(cat "$CACHE/leader.pid" 2>/dev/null); do
  if is_container_init "$old"; then
    say "stopping the container an earlier run left (init pid $old)"
    kill -KILL "$old"
    for _ in $(seq 40); do kill -0 "$old" 2>/dev/null || break; sleep 0.5; done
  fi
done
rm -f "$CACHE/leader.pid"
if [ ! -e "$BASE/.complete" ]; then
  say "debootstrap bookworm into $BASE (once per machine, a few minutes)"
  rm -rf "$BASE.tmp"
  if ! timeout 900 debootstrap --variant=minbase --include="$PACKAGES" \
      bookworm "$BASE.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -5 "$CACHE/debootstrap.log"
    say "FAIL: debootstrap (log: $CACHE/debootstrap.log)"
    exit 1
  fi
  touch "$BASE.tmp/.complete"
  rm -rf "$BASE" && mv "$BASE.tmp" "$BASE"
fi
say "root file system ready ($((SECONDS - started)) s)"

ROOT=$CACHE/run
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
# What the README's steps need from a source tree, the binary where a
# build leaves it.
mkdir -p "$ROOT/root/src/target/release"
cp -a README.md INSTALL.md etc systemd "$ROOT/root/src/"
if [ -n "$DEB" ]; then
  cp "$DEB" "$ROOT/root/smtpbox.deb"
else
  cp "$BIN" "$ROOT/root/src/target/release/smtpbox"
fi
cp scripts/live-smtp.py "$ROOT/root/smtp.py"
echo smtpbox-live >"$ROOT/etc/hostname"

# ---- Boot ----
NSPAWN=
LEADER=
cleanup() {
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
    kill -TERM "$NSPAWN" 2>/dev/null # nspawn powers the container off.
    for _ in $(seq 40); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$NSPAWN" 2>/dev/null
  fi
  # The container's init outlives a killed nspawn.
  if [ -n "$LEADER" ] && is_container_init "$LEADER"; then
    kill -KILL "$LEADER" 2>/dev/null
  fi
  rm -f "$CACHE/leader.pid"
  NSPAWN= LEADER=
}
trap cleanup EXIT
trap 'say "FAIL: interrupted"; exit 1' INT TERM

# nspawn's own system-call filter (systemd 252) denies Landlock to the
# whole container: allow it, so that the units' filter is what is tested.
systemd-nspawn --register=no --keep-unit --private-network --boot \
  --system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self' \
  --console=passive -D "$ROOT" -M smtpbox-live </dev/null >"$CACHE/boot.log" 2>&1 9>&- &
NSPAWN=$!
# The container's init: nspawn's child once it runs systemd in a pid
# namespace of its own (before that, the child is nspawn setting up).
for _ in $(seq 200); do
  for pid in $(ps -o pid= --ppid "$NSPAWN" 2>/dev/null); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] &&
      [ "$(readlink "/proc/$pid/ns/pid")" != "$(readlink /proc/self/ns/pid)" ]; then
      LEADER=$pid
    fi
  done
  [ -n "$LEADER" ] && break
  kill -0 "$NSPAWN" 2>/dev/null || break
  sleep 0.1
done
echo "$LEADER" >"$CACHE/leader.pid"

[ -n "$LEADER" ] || { tail -5 "$CACHE/boot.log"; skip "systemd-nspawn cannot start a container"; }

# Runs a command in the container, bounded (T seconds, default 60).
ct() {
  timeout --kill-after=5 "${T:-60}" nsenter -t "$LEADER" -a 9>&- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
sh_ct() { ct bash -c "$1"; }

# Until systemd's private bus socket exists, systemctl cannot connect.
state=
for _ in $(seq 90); do
  state=$(T=90 ct systemctl is-system-running --wait 2>&1)
  case "$state" in *"Failed to connect"*) sleep 1 ;; *) break ;; esac
done
case "$state" in
  running | degraded) say "container booted: $state ($((SECONDS - started)) s)" ;;
  *) tail -5 "$CACHE/boot.log"; skip "the container's systemd did not come up ($state)" ;;
esac

# ---- Checks ----
failed=0
pass() { say "PASS: $*"; }
fail() { say "FAIL: $*"; failed=$((failed + 1)); }

# The shell block after `<!-- live-systemd: NAME -->` in the README or
# INSTALL.md (the install steps live there, the TLS steps in the README).
block() {
  awk -v mark="<!-- live-systemd: $1 -->" '
    $0 == mark { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' README.md INSTALL.md
}
# Runs README or INSTALL.md block NAME in the container's copy of the source tree.
readme() {
  local text
  text=$(block "$1")
  if [ -z "$text" ]; then
    fail "README/INSTALL.md block $1 not found"
    return 1
  fi
  if ! out=$(T=${T:-120} ct bash -euxc "cd /root/src; $text" 2>&1); then
    printf '%s\n' "$out" | tail -15 | sed 's/^/    /'
    fail "README/INSTALL.md block $1 failed"
    return 1
  fi
}

NEW=/var/lib/smtpbox/Maildir/new
# Whether a message holding TAG is in new/, written by smtpbox.
landed() {
  local files owners
  files=$(ct grep -l -r -F "$1" "$NEW" 2>/dev/null)
  [ -n "$files" ] || { echo "no message with $1 in $NEW"; return 1; }
  owners=$(ct stat -c %U:%G $files | sort -u)
  [ "$owners" = smtpbox:smtpbox ] || { echo "owned by $owners"; return 1; }
}
count_new() { ct find "$NEW" -type f 2>/dev/null | wc -l; }
smtp() { T=${T:-60} ct python3 /root/smtp.py "$@" 2>&1; }
# Sends TAG on PORT (options after) and checks that it landed.
send_check() {
  local what=$1 port=$2 tag=$3 out why
  shift 3
  if out=$(smtp send "$port" "$tag" "$@") && why=$(landed "$tag"); then
    pass "$what ($(printf '%s' "$out" | grep -E '^(tls|auth):' | tr '\n' ' ')landed, owned by smtpbox)"
  else
    fail "$what: $(printf '%s' "$out" | tail -1) ${why:-}"
  fi
}
main_pid() { ct systemctl show -P MainPID smtpbox.service; }
sigsys() {
  ct journalctl --no-pager -q 2>/dev/null | grep -E 'status=31/SYS|Bad system call|SIGSYS' | head -3
}

if [ -n "$DEB" ]; then
  . "$SRC/scripts/live-package.sh"
  ct journalctl --no-pager -q -o short-monotonic >"$CACHE/journal.log" 2>&1
  say "INFO: the container's journal: $CACHE/journal.log; took $((SECONDS - started)) s"
  [ $failed = 0 ] && { say "all checks passed"; exit 0; }
  say "$failed check(s) failed"
  exit 1
fi

# 1. The README's install steps.
readme install && readme systemd && pass "INSTALL.md install steps (install, systemd) ran as written"
readme sendmail && pass "INSTALL.md sendmail links made as written"
out=$(T=10 ct mailq 2>&1) && out2=$(T=10 ct newaliases 2>&1) &&
  pass "mailq and newaliases exit 0 without starting a server: $out ${out2:-}" ||
  fail "mailq/newaliases: $out ${out2:-}"

# 2. Socket activation on port 25.
send_check "port 25, socket-activated" 25 plain-25
banner=$(ct python3 -c 'import socket; s=socket.create_connection(("127.0.0.1",25),10); print(s.recv(200).decode().strip())' 2>&1 | tail -1)
if [ "$banner" = "220 smtpbox-live ESMTP smtpbox" ]; then
  pass "banner names the host: $banner"
else
  fail "banner: $banner (want 220 smtpbox-live ESMTP smtpbox)"
fi

# 3. Identity and hardening at run time.
pid=$(main_pid)
status=$(ct cat "/proc/$pid/status" 2>/dev/null)
uid=$(printf '%s\n' "$status" | awk '/^Uid:/ {print $2}')
nnp=$(printf '%s\n' "$status" | awk '/^NoNewPrivs:/ {print $2}')
seccomp=$(printf '%s\n' "$status" | awk '/^Seccomp:/ {print $2}')
want_uid=$(ct id -u smtpbox)
if [ -n "$uid" ] && [ "$uid" != 0 ] && [ "$uid" = "$want_uid" ]; then
  pass "service runs as smtpbox (uid $uid), not root"
else
  fail "service uid '$uid' (smtpbox is '$want_uid', pid '$pid')"
fi
[ "$nnp" = 1 ] && [ "$seccomp" = 2 ] && pass "NoNewPrivs: 1, Seccomp: 2 (filter)" ||
  fail "NoNewPrivs: '$nnp', Seccomp: '$seccomp'"
landlock=$(ct journalctl -u smtpbox.service --no-pager -q -o cat | grep 'sandbox:' | tail -1)
case "$landlock" in
  *"in force"* | *"has no Landlock"*) pass "smtpbox's own sandbox under the unit: ${landlock#*] }" ;;
  *) fail "smtpbox's own sandbox under the unit: ${landlock:-no sandbox: line}" ;;
esac
score=$(ct systemd-analyze security smtpbox.service 2>&1 | tail -1)
say "INFO: systemd-analyze security: $score"

# 4. cron's mail for root (sendmail as root) and a user's (sendmail as them).
printf 'Subject: cron\n\nlive-systemd cron-root\n' | ct /usr/sbin/sendmail root
rc=$?
why=$(landed cron-root) && [ $rc = 0 ] && pass "sendmail as root (cron) landed, owned by smtpbox" ||
  fail "sendmail as root: exit $rc, $why"
ct useradd -m someuser
printf 'Subject: user\n\nlive-systemd cron-user\n' | ct runuser -u someuser -- /usr/sbin/sendmail root
rc=$?
why=$(landed cron-user) && [ $rc = 0 ] &&
  pass "sendmail as an ordinary user landed, owned by smtpbox" ||
  fail "sendmail as an ordinary user: exit $rc, $why (needs the local submission socket)"
perms=$(ct find /var/lib/smtpbox ! -user smtpbox)
[ -z "$perms" ] && pass "everything under /var/lib/smtpbox belongs to smtpbox" ||
  fail "not smtpbox's: $perms"

# 5. The README's TLS steps, then port 25 again (plain and STARTTLS).
tls_ok=1
readme tls-cert && readme tls-users || tls_ok=0
# The user's edit: the three file lines of the README's config example.
lines=$(awk '/^# \/etc\/smtpbox\/smtpbox.conf$/ {on=1; next} on && /^```/ {exit}
  on && /^(tls_cert|tls_key|users) /' README.md)
[ "$(printf '%s\n' "$lines" | wc -l)" = 3 ] || { fail "README config example: tls_cert, tls_key, users lines"; tls_ok=0; }
printf '%s\n' "$lines" | ct tee -a /etc/smtpbox/smtpbox.conf >/dev/null
readme tls-check || tls_ok=0
[ $tls_ok = 1 ] && pass "README TLS steps ran as written (check as smtpbox, restart)"
send_check "port 25 after the TLS steps" 25 after-tls
send_check "port 25 with STARTTLS" 25 starttls-25 --tls

# 6. --check as the service account names a file it cannot read.
ct chmod 600 /etc/smtpbox/key.pem
out=$(ct runuser -u smtpbox -- smtpbox --check -c /etc/smtpbox/smtpbox.conf 2>&1)
rc=$?
[ $rc != 0 ] && printf '%s' "$out" | grep -q key.pem &&
  pass "--check as smtpbox names the unreadable key: $out" ||
  fail "--check as smtpbox with an unreadable key: exit $rc: $out"

# 7. An unreadable key at start: exit 78, not restarted in a loop.
ct systemctl restart smtpbox.service 2>/dev/null # Fails: that is the check.
sleep 6
show=$(ct systemctl show -P ExecMainStatus smtpbox.service)/$(ct systemctl show -P NRestarts smtpbox.service)/$(ct systemctl show -P ActiveState smtpbox.service)
logged=$(ct journalctl -u smtpbox.service --no-pager -q -n 20 | grep -c 'key.pem')
[ "$show" = 78/0/failed ] && [ "$logged" -gt 0 ] &&
  pass "unreadable key: exit 78, logged, not restarted (status/restarts/state $show)" ||
  fail "unreadable key at start: status/restarts/state $show (want 78/0/failed), key.pem logged $logged times"
ct chmod 640 /etc/smtpbox/key.pem
ct systemctl reset-failed smtpbox.service
ct systemctl start smtpbox.service

# 8. The submission socket, enabled on a running system as the README says.
smtp send 25 wake-up >/dev/null # The service is running.
[ "$(ct systemctl is-active smtpbox.service)" = active ] || fail "smtpbox.service not running before enabling 587"
readme submission && pass "INSTALL.md submission steps ran with the service running"
send_check "port 587, STARTTLS + AUTH" 587 submission-587 --tls --auth 'alice:her password'
out=$(smtp send 587 no-auth --tls)
printf '%s' "$out" | grep -q '530' && pass "port 587 without AUTH: 530" || fail "port 587 without AUTH: $out"
send_check "port 25 still served" 25 after-587

# 9. The hardening holds at run time: the same traffic with the system-call
# filter set to kill instead of failing with EPERM.
ct mkdir -p /etc/systemd/system/smtpbox.service.d
printf '[Service]\nSystemCallErrorNumber=\nSystemCallErrorNumber=kill\n' | ct tee /etc/systemd/system/smtpbox.service.d/zz-kill.conf >/dev/null
ct systemctl daemon-reload
ct systemctl restart smtpbox.service
send_check "port 25 under a killing syscall filter" 25 kill-25 --tls
send_check "port 587 under a killing syscall filter" 587 kill-587 --tls --auth 'alice:her password'
printf 'Subject: k\n\nlive-systemd kill-local\n' | ct runuser -u someuser -- /usr/sbin/sendmail root
ct systemctl stop smtpbox.service 2>/dev/null # "can still be activated by"
ct rm /etc/systemd/system/smtpbox.service.d/zz-kill.conf
ct systemctl daemon-reload
found=$(sigsys)
[ -z "$found" ] && pass "no SIGSYS in the journal (filter set to kill, all modes served)" || fail "SIGSYS: $found"

# 10. systemctl stop in the middle of DATA: nothing in new/, then mail flows.
before=$(count_new)
ct rm -f /tmp/ready
smtp middata 25 /tmp/ready >"$CACHE/middata.out" &
client=$!
for _ in $(seq 100); do ct test -e /tmp/ready && break; sleep 0.1; done
T=30 ct systemctl stop smtpbox.service 2>/dev/null
wait "$client"
rc=$?
after=$(count_new)
[ $rc = 0 ] && [ "$before" = "$after" ] &&
  pass "stop mid-DATA: $(tail -1 "$CACHE/middata.out"); new/ still $after files" ||
  fail "stop mid-DATA: client exit $rc ($(tail -1 "$CACHE/middata.out")), new/ $before -> $after"
send_check "mail after the stop (socket activation restarts it)" 25 after-stop

# 11. The LAN drop-in: every address, IPv4 clients seen as IPv4.
readme lan && ct systemctl daemon-reload &&
  T=60 sh_ct "$(block submission | grep -v '^systemctl enable')" || fail "LAN drop-in steps"
if ct grep -qi ':0019 00000000000000000000000000000000:0000 0A' /proc/net/tcp6; then
  pass "LAN drop-in: port 25 on every address"
else
  fail "LAN drop-in: no [::]:25 listener"
fi
send_check "port 25 after the LAN drop-in" 25 lan-25
file=$(ct grep -l -r -F lan-25 "$NEW" | head -1)
received=$(ct grep -m1 '^Received:' "$file")
case "$received" in
  *'[127.0.0.1]'*) pass "IPv4 client written as IPv4: $received" ;;
  *) fail "Received: $received (want [127.0.0.1])" ;;
esac
ct rm -r /etc/systemd/system/smtpbox.socket.d
ct systemctl daemon-reload

# 11b. Notifications (issue #21): with `notify` set, the program runs in
# smtpbox-notify.service, as smtpbox, with the network the server lacks
# (it reads port 25's banner over loopback) while smtpbox.service keeps
# PrivateNetwork= and its own sandbox. The hook prints what it saw; the
# notifier logs its output lines to the journal.
cat <<'EOF' | ct tee /usr/local/bin/smtpbox-hook >/dev/null
#!/bin/bash
read -r first
banner=none
if exec 3<>/dev/tcp/127.0.0.1/25; then
  read -r -t 10 banner <&3
  printf 'QUIT\r\n' >&3
fi
echo "hook: user=$(id -un) subject=$SMTPBOX_SUBJECT stdin=${first:0:12} banner=${banner:0:3} to=$SMTPBOX_RECIPIENTS"
EOF
ct chmod 755 /usr/local/bin/smtpbox-hook
# Waits for the hook's journal line for TAG; prints it.
hook_line() {
  local line
  for _ in $(seq 40); do
    line=$(ct journalctl -u smtpbox-notify.service --no-pager -q -o cat | grep -F "subject=$1 " | tail -1)
    [ -n "$line" ] && { printf '%s' "$line"; return 0; }
    sleep 0.5
  done
  return 1
}
notify_on() {
  ct sed -i '/^notify = /d' /etc/smtpbox/smtpbox.conf
  echo 'notify = /usr/local/bin/smtpbox-hook' | ct tee -a /etc/smtpbox/smtpbox.conf >/dev/null
}
notify_off() {
  ct sed -i '/^notify = /d' /etc/smtpbox/smtpbox.conf
  ct systemctl stop smtpbox-notify.service 2>/dev/null
}
notify_on
out=$(ct runuser -u smtpbox -- /usr/local/sbin/smtpbox --check -c /etc/smtpbox/smtpbox.conf 2>&1) ||
  fail "--check as smtpbox refuses the notify hook: $out"
# The next connection starts it with the new config; the socket listens
# as the unit now says (step 11 took the LAN drop-in away).
ct systemctl stop smtpbox.service
ct systemctl restart smtpbox.socket
out=$(smtp send 25 notify-live)
line=$(hook_line notify-live)
case "$line" in
  *"user=smtpbox subject=notify-live stdin=Return-Path: banner=220 to=root"*)
    pass "notify under smtpbox.service: ${line#*: }" ;;
  *) fail "notify under smtpbox.service: ${line:-no hook line} ($out)" ;;
esac
show=$(ct systemctl show -P PrivateNetwork smtpbox.service)
landlock=$(ct journalctl -u smtpbox.service --no-pager -q -o cat | grep 'sandbox:' | tail -1)
case "$show:$landlock" in
  yes:*"in force"* | yes:*"has no Landlock"*) pass "with notify, smtpbox.service keeps PrivateNetwork=yes and its sandbox" ;;
  *) fail "with notify: PrivateNetwork=$show, ${landlock:-no sandbox: line}" ;;
esac
printf 'Subject: notify-cron\n\nfrom cron\n' | ct /usr/sbin/sendmail root
line=$(hook_line notify-cron)
[ -n "$line" ] && pass "notify for sendmail through the local socket: ${line#*: }" ||
  fail "notify for sendmail through the local socket: no hook line"
notify_off
ct systemctl stop smtpbox.service

# 12. The Accept=yes pair: 20 in a row, 10 at once (8 per address), its
# sessions too under a system-call filter that kills.
ct mkdir -p /etc/systemd/system/smtpbox-inetd@.service.d
printf '[Service]\nSystemCallErrorNumber=\nSystemCallErrorNumber=kill\n' |
  ct tee /etc/systemd/system/smtpbox-inetd@.service.d/zz-kill.conf >/dev/null
ct systemctl daemon-reload
if readme inetd; then
  pass "INSTALL.md Accept=yes steps ran"
  ok=0
  for i in $(seq 20); do
    smtp send 25 "row-$i" >/dev/null && landed "row-$i" >/dev/null && ok=$((ok + 1))
  done
  [ $ok = 20 ] && pass "Accept=yes: 20 in a row delivered" || fail "Accept=yes: $ok of 20 in a row"
  out=$(smtp parallel 25 10 par)
  n=$(ct grep -l -r -F 'live-systemd par-' "$NEW" | wc -l)
  case "$out" in
    *"greeted 8 refused with 421 4.3.2: 2"*"delivered 8 of 8"*)
      [ "$n" = 8 ] && pass "Accept=yes: 10 at once: 8 delivered, 2 read 421 4.3.2" ||
        fail "Accept=yes parallel: $n files for 8 deliveries" ;;
    *) fail "Accept=yes: 10 at once: $(printf '%s' "$out" | tr '\n' ' ')" ;;
  esac
  printf 'Subject: user\n\nlive-systemd inetd-user\n' | ct runuser -u someuser -- /usr/sbin/sendmail root
  rc=$?
  why=$(landed inetd-user) && [ $rc = 0 ] &&
    pass "Accept=yes pair: sendmail as an ordinary user still lands (smtpbox-local.socket)" ||
    fail "Accept=yes pair: sendmail as an ordinary user: exit $rc, $why"
  landlock=$(ct journalctl -u 'smtpbox-inetd@*' --no-pager -q -o cat | grep 'sandbox:' | tail -1)
  case "$landlock" in
    *"in force"* | *"has no Landlock"*) pass "Accept=yes sessions' own sandbox: ${landlock#*] }" ;;
    *) fail "Accept=yes sessions' own sandbox: ${landlock:-no sandbox: line}" ;;
  esac
  found=$(sigsys)
  [ -z "$found" ] && pass "no SIGSYS from the Accept=yes sessions (filter set to kill)" ||
    fail "SIGSYS under Accept=yes: $found"
  # The SIGSYS check's control: a session that may not flock(2) is killed,
  # and the check sees it.
  printf '[Service]\nSystemCallFilter=~flock\n' |
    ct tee /etc/systemd/system/smtpbox-inetd@.service.d/zz-control.conf >/dev/null
  ct systemctl daemon-reload
  smtp send 25 control >/dev/null
  sleep 1
  found=$(sigsys)
  [ -n "$found" ] && pass "control: a session killed by the filter shows up ($(printf '%s' "$found" | head -1 | sed 's/.*: //'))" ||
    fail "control: a session denied flock(2) was not seen killed by SIGSYS"
  ct rm /etc/systemd/system/smtpbox-inetd@.service.d/zz-control.conf
  ct systemctl daemon-reload
  # Notifications from the Accept=yes sessions: each session's process
  # hands its notice to smtpbox-notify.service and ends.
  notify_on
  out=$(smtp send 25 notify-inetd)
  line=$(hook_line notify-inetd)
  case "$line" in
    *"user=smtpbox subject=notify-inetd "*"banner=220"*) pass "notify under Accept=yes: ${line#*: }" ;;
    *) fail "notify under Accept=yes: ${line:-no hook line} ($out)" ;;
  esac
  notify_off
fi

perms=$(ct find /var/lib/smtpbox ! -user smtpbox)
[ -z "$perms" ] || fail "at the end, not smtpbox's: $perms"

ct journalctl --no-pager -q -o short-monotonic >"$CACHE/journal.log" 2>&1
say "INFO: the container's journal: $CACHE/journal.log"
say "INFO: took $((SECONDS - started)) s"
if [ $failed = 0 ]; then
  say "all checks passed"
  exit 0
fi
say "$failed check(s) failed"
exit 1
