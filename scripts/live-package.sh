# The Debian package's live test, sourced by `scripts/live-systemd.sh
# --package DEB` once its container (Debian bookworm with exim4, bsd-mailx
# and cron, as a stock box has an MTA) has booted. Uses its helpers: ct,
# sh_ct, pass, fail, landed, count_new, send_check, say; $CACHE, $BASE.
#
# First the same package in a chroot with no systemd running (an image
# builder's rootfs): it installs, makes the account and the Maildir's home,
# starts nothing, and sendmail there delivers directly. Then, on the booted
# system: apt replaces exim4; mail(1) and a real crontab's output land in
# /var/lib/smtpbox/Maildir owned by smtpbox; SMTP on port 25 works; a
# changed conffile survives a reinstall, which restarts the service once;
# remove stops it and keeps the mail and the config; purge removes the
# config and keeps the mail.

installed_state() { ct dpkg-query -W -f='${Status}' "$1" 2>/dev/null; }
# Waits up to $2 seconds for a message holding TAG $1.
wait_landed() {
  local i why
  for i in $(seq "$2"); do
    why=$(landed "$1") && return 0
    sleep 1
  done
  echo "$why"
  return 1
}

# 0. A chroot without a running systemd.
CHROOT=$CACHE/chroot
rm -rf "$CHROOT"
cp -a "$BASE" "$CHROOT"
cp "$ROOT/root/smtpbox.deb" "$CHROOT/root/smtpbox.deb"
in_chroot() { timeout 300 chroot "$CHROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
if out=$(in_chroot sh -c 'cd /root && apt-get install -y ./smtpbox.deb' 2>&1); then
  owner=$(in_chroot stat -c %U:%G:%a /var/lib/smtpbox 2>&1)
  enabled=$(in_chroot sh -c 'ls /etc/systemd/system/sockets.target.wants/' 2>&1 | tr '\n' ' ')
  [ "$owner" = smtpbox:smtpbox:700 ] && case "$enabled" in *smtpbox.socket*smtpbox-local.socket* | *smtpbox-local.socket*smtpbox.socket*) true ;; *) false ;; esac &&
    pass "chroot without systemd: installs, account and /var/lib/smtpbox ($owner), sockets enabled for the next boot ($enabled)" ||
    fail "chroot: /var/lib/smtpbox $owner, enabled: $enabled"
  # Nothing listens there: sendmail delivers directly.
  if in_chroot sh -c 'printf "Subject: chroot-tag\n\nchroot\n" | /usr/sbin/sendmail root' 2>&1 &&
    in_chroot sh -c 'grep -l -r chroot-tag /var/lib/smtpbox/Maildir/new' >/dev/null 2>&1; then
    pass "chroot: sendmail delivered directly into /var/lib/smtpbox/Maildir"
  else
    fail "chroot: sendmail did not deliver"
  fi
else
  printf '%s\n' "$out" | tail -8 | sed 's/^/    /'
  fail "chroot: apt-get install ./smtpbox.deb failed"
fi
rm -rf "$CHROOT"

# 1. A stock box: exim4 is the MTA.
[ "$(installed_state exim4-daemon-light)" = "install ok installed" ] &&
  pass "before: exim4 is installed" || fail "before: exim4 is not installed"

# 2. apt replaces it.
if out=$(T=300 sh_ct 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y ./smtpbox.deb' 2>&1); then
  pass "apt-get install ./smtpbox.deb"
else
  printf '%s\n' "$out" | tail -8 | sed 's/^/    /'
  fail "apt-get install ./smtpbox.deb failed"
fi
state=$(installed_state exim4-daemon-light)
[ "$state" != "install ok installed" ] && pass "exim4 removed (${state:-not installed})" ||
  fail "exim4 still installed"
[ "$(ct readlink -f /usr/sbin/sendmail)" = /usr/sbin/smtpbox ] &&
  pass "/usr/sbin/sendmail is smtpbox" || fail "/usr/sbin/sendmail: $(ct readlink -f /usr/sbin/sendmail)"
active=$(ct systemctl is-active smtpbox.socket smtpbox-local.socket | tr '\n' ' ')
enabled=$(ct systemctl is-enabled smtpbox.socket smtpbox-local.socket | tr '\n' ' ')
[ "$active" = "active active " ] && [ "$enabled" = "enabled enabled " ] &&
  pass "sockets enabled and started on install" || fail "sockets: active $active enabled $enabled"
ct test -f /usr/share/man/man8/smtpbox.8.gz && ct test -f /usr/share/man/man5/smtpbox.conf.5.gz &&
  pass "man pages installed" || fail "man pages missing"

# 3. The box's own mail: mail(1), cron, SMTP.
sh_ct 'echo "body of pkg-mail-tag" | mail -s pkg-mail-tag root' >/dev/null 2>&1
why=$(wait_landed pkg-mail-tag 20) && pass "mail -s ... root landed, owned by smtpbox" ||
  fail "mail(1): $why"
sh_ct 'printf "* * * * * root echo pkg-cron-tag\n" >/etc/cron.d/smtpbox-test'
why=$(T=100 wait_landed pkg-cron-tag 90) && pass "a crontab's output landed, owned by smtpbox" ||
  fail "cron: $why"
ct rm -f /etc/cron.d/smtpbox-test
send_check "port 25 after the package" 25 pkg-smtp-tag

# 4. A changed conffile survives a reinstall; the service restarts once.
sh_ct 'echo "# changed by the live package test" >>/etc/smtpbox/smtpbox.conf'
before_pid=$(ct systemctl show -P MainPID smtpbox.service)
if out=$(T=300 sh_ct 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall ./smtpbox.deb' 2>&1); then
  ct grep -q "changed by the live package test" /etc/smtpbox/smtpbox.conf &&
    pass "reinstall keeps the changed conffile" || fail "reinstall lost the change to smtpbox.conf"
  after_pid=$(ct systemctl show -P MainPID smtpbox.service)
  starts=$(ct journalctl --no-pager -q -u smtpbox.service -g 'Started smtpbox' | wc -l)
  [ "$before_pid" != 0 ] && [ "$after_pid" != 0 ] && [ "$after_pid" != "$before_pid" ] &&
    pass "reinstall restarted the running service (pid $before_pid -> $after_pid; $starts start(s) in all)" ||
    fail "reinstall: service pid $before_pid -> $after_pid"
else
  printf '%s\n' "$out" | tail -8 | sed 's/^/    /'
  fail "apt-get install --reinstall failed"
fi

# 5. remove: stopped, mail and config stay.
mail_before=$(count_new)
if T=300 sh_ct 'DEBIAN_FRONTEND=noninteractive apt-get remove -y smtpbox' >/dev/null 2>&1; then
  active=$(ct systemctl is-active smtpbox.service smtpbox.socket smtpbox-local.socket | tr '\n' ' ')
  case " $active" in *" active "*) fail "after remove, still running: $active" ;;
    *) pass "remove stops the service and sockets ($active)" ;; esac
  [ "$(count_new)" = "$mail_before" ] && [ "$mail_before" -gt 0 ] &&
    pass "remove keeps the mail ($mail_before messages)" || fail "after remove: $(count_new) of $mail_before messages"
  ct grep -q "changed by the live package test" /etc/smtpbox/smtpbox.conf &&
    pass "remove keeps the config" || fail "remove lost /etc/smtpbox/smtpbox.conf"
else
  fail "apt-get remove smtpbox failed"
fi

# 6. Installed again: the kept, changed conffile stays.
T=300 sh_ct 'cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y ./smtpbox.deb' >/dev/null 2>&1 &&
  ct grep -q "changed by the live package test" /etc/smtpbox/smtpbox.conf &&
  pass "installed again after remove: the changed conffile is kept" ||
  fail "install after remove: the changed conffile is gone"

# 7. purge: the config goes, the mail stays.
if T=300 sh_ct 'DEBIAN_FRONTEND=noninteractive apt-get purge -y smtpbox' >/dev/null 2>&1; then
  ct test -e /etc/smtpbox && fail "purge left /etc/smtpbox: $(ct ls -A /etc/smtpbox | tr '\n' ' ')" ||
    pass "purge removes /etc/smtpbox"
  [ "$(count_new)" -ge "$mail_before" ] && [ "$mail_before" -gt 0 ] &&
    pass "purge keeps the mail ($(count_new) messages in /var/lib/smtpbox/Maildir/new)" ||
    fail "after purge: $(count_new) messages"
else
  fail "apt-get purge smtpbox failed"
fi
