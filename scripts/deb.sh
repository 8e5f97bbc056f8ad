#!/bin/sh
# Builds the Debian packages with cargo-deb, from the static musl builds of
# scripts/cross.sh (INSTALL.md "Building for an appliance"):
#
#   scripts/deb.sh [ARCH...]     ARCH: amd64 arm64 armhf (default: all three)
#
# Writes target/debian/smtpbox_VERSION-1_ARCH.deb and prints each path.
# Needs cargo-deb (`cargo install cargo-deb`) and what scripts/cross.sh
# needs. The units are staged with /usr/sbin/smtpbox and the packaged
# documentation's path; the config is the commented example
# (maildir = /var/lib/smtpbox/Maildir, user = smtpbox).
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "deb.sh: cargo install cargo-deb" >&2; exit 1; }

stage=target/deb-stage
rm -rf "$stage"
mkdir -p "$stage/units"
for unit in systemd/*.service systemd/*.socket; do
  sed -e 's|/usr/local/sbin/smtpbox|/usr/sbin/smtpbox|g' \
      -e 's|file:///usr/local/share/doc/smtpbox/|file:///usr/share/doc/smtpbox/|g' \
      "$unit" >"$stage/units/${unit##*/}"
done
if grep -q /usr/local "$stage"/units/*; then
  echo "deb.sh: a unit still names /usr/local:" >&2
  grep -n /usr/local "$stage"/units/* >&2
  exit 1
fi
cp etc/smtpbox.conf "$stage/smtpbox.conf"

[ $# -gt 0 ] || set -- amd64 arm64 armhf
for arch in "$@"; do
  case $arch in
    amd64) triple=x86_64-unknown-linux-musl ;;
    arm64) triple=aarch64-unknown-linux-musl ;;
    armhf) triple=armv7-unknown-linux-musleabihf ;;
    *) echo "deb.sh: unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 1 ;;
  esac
  scripts/cross.sh "$triple" >&2
  # Stripped already (the profile strips; the host's strip reads no other CPU).
  cargo deb --no-build --no-strip --target "$triple" --profile appliance --output target/debian/ >&2
  ls target/debian/smtpbox_*_"$arch".deb
done
