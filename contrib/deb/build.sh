#!/usr/bin/env bash
# Builds a Debian package of chatd with dpkg-deb alone (no cargo-deb needed):
# the binaries, the systemd units, the defaults file and the man pages.
#
# Usage: contrib/deb/build.sh [OUTDIR]      (default: target/debian)
# Then:  apt install ./target/debian/chatd_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-target/debian}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

cargo build --release --bins

REL=${RELEASE_DIR:-${CARGO_TARGET_DIR:-target}/release}
install -D -m755 "$REL/chatd" "$STAGE/usr/bin/chatd"
for extra in chatc chatd-bench; do
    if [ -x "$REL/$extra" ]; then
        install -D -m755 "$REL/$extra" "$STAGE/usr/bin/$extra"
    fi
done
for unit in chatd.service chatd.socket chatd-status.socket chatd-tls.socket; do
    install -D -m644 "contrib/systemd/$unit" "$STAGE/lib/systemd/system/$unit"
done
install -D -m644 contrib/systemd/chatd.default "$STAGE/etc/default/chatd"
for page in man/*.[0-9]; do
    section=${page##*.}
    install -D -m644 "$page" "$STAGE/usr/share/man/man$section/$(basename "$page")"
    gzip -9n "$STAGE/usr/share/man/man$section/$(basename "$page")"
done
install -D -m644 README.md "$STAGE/usr/share/doc/chatd/README.md"
install -D -m644 contrib/systemd/examples/override.conf "$STAGE/usr/share/doc/chatd/examples/override.conf"
install -D -m755 contrib/tls/make-cert "$STAGE/usr/share/chatd/make-cert"

mkdir -p "$STAGE/DEBIAN"
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: chatd
Version: $VERSION
Architecture: $ARCH
Maintainer: chatd developers <chatd@localhost>
Depends: libc6
Section: net
Priority: optional
Description: chat daemon that anyone can join with netcat
 chatd is a small chat server for a team, a LAN, a classroom or a homelab.
 People join with nc or telnet; rooms, direct messages, history, accounts
 and images, with a crash-safe journal. It runs as a hardened, socket-
 activated systemd service.
CONTROL
echo "/etc/default/chatd" >"$STAGE/DEBIAN/conffiles"
cat >"$STAGE/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
echo "chatd installed. Start it with: systemctl enable --now chatd.socket"
POSTINST
cat >"$STAGE/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop chatd.service chatd.socket chatd-status.socket chatd-tls.socket >/dev/null 2>&1 || true
fi
PRERM
cat >"$STAGE/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
POSTRM
chmod 755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"

mkdir -p "$OUT"
DEB="$OUT/chatd_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
