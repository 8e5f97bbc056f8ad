#!/bin/sh
# Runs the throughput benchmark (issue #5) with its load tools in place.
# As root on Debian/Ubuntu, installs Postfix (for its smtp-source and
# smtp-sink test programs, and for the peer row, which runs a private
# Postfix instance of its own under target/ and stops it) and strace when
# missing, and perf when it can; the system's Postfix daemon installed
# here is stopped and disabled again. A Postfix that was already
# installed is left alone.
# Without the tools the benchmark falls back to its own client and says so.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if [ ! -x /usr/sbin/smtp-source ] && ! command -v postfix >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
        systemctl disable --now postfix >/dev/null 2>&1 || true
        postfix stop >/dev/null 2>&1 || true
    fi
    command -v strace >/dev/null || apt-get install -y strace
    # perf (row 8g, the untraced system-call count); optional: the row
    # says n/a without it.
    command -v perf >/dev/null || apt-get install -y linux-perf || true
    # gcc, pkg-config, libfuse3-dev and fuse3 build and mount the slow
    # flash device of rows 11c-11l (benches/flash/slowdev.c).
    for pkg in gcc pkg-config libfuse3-dev fuse3; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg"
    done
fi
exec cargo bench --bench throughput "$@"
