#!/usr/bin/env bash
# Print the path of a booted-system test root filesystem: Debian 12 with systemd, D-Bus, polkit
# and every package oisp-sensor depends on or recommends already installed, so that
# `apt install ./oisp-sensor_*.deb` inside the container resolves without the network.
#
# Built once per package list and cached (OISP_SYSTEM_CACHE, default /var/cache/oisp-sensor-test)
# as bookworm-<hash of the package list and RECIPE>; built in a .tmp directory and renamed, so an interrupted build
# is never taken for a finished one. Containers boot from a copy, never from the cache itself.
set -euo pipefail
[[ $(id -u) -eq 0 ]] || { echo "rootfs.sh: run as root" >&2; exit 2; }
cache=${OISP_SYSTEM_CACHE:-/var/cache/oisp-sensor-test}
# What the .deb's Depends and Recommends name (packaging/deb/debian/control), plus the system the
# test drives: systemd as PID 1, the bus, polkit, and curl/openssl for an HTTPS request.
packages=(
  systemd systemd-sysv dbus polkitd libpam-systemd
  python3 python3-bpfcc python3-capstone python3-dbus-next python3-sdnotify python3-yaml python3-requests
  python3-jsonschema python3-pyelftools python3-regex
  linux-headers-amd64 python3-aiohttp python3-hpack python3-brotli python3-zstandard
  curl openssl ca-certificates procps
)
# Bump when the way the tree is built changes (the package list changes the hash by itself).
RECIPE=2
hash=$(printf '%s\n' "recipe $RECIPE" "${packages[@]}" | sha256sum | cut -c1-12)
root=$cache/bookworm-$hash
if [[ -x $root/usr/bin/python3 ]]; then echo "$root"; exit 0; fi

command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
mkdir -p "$cache"
tmp=$root.tmp
rm -rf --one-file-system "$tmp"
log=$cache/bookworm-$hash.log
echo "rootfs.sh: building $root (once; log in $log)" >&2
debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$log" 2>&1 || { tail -5 "$log" >&2; exit 1; }
# The host's apt sources and settings (its mirror), so the chroot installs the same way the host does.
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/apt.conf.d/99*; do
  [[ -f $f ]] || continue
  mkdir -p "$tmp$(dirname "$f")"; cp -L "$f" "$tmp$f"
done
# debootstrap wrote a sources.list for the same mirror: with the host's deb822 file it would be
# configured twice (apt warns on every run).
[[ -f /etc/apt/sources.list.d/debian.sources ]] && rm -f "$tmp/etc/apt/sources.list"
cp -L /etc/resolv.conf "$tmp/etc/resolv.conf"
mount --bind /proc "$tmp/proc"
trap 'umount "$tmp/proc" 2>/dev/null || true' EXIT
chroot "$tmp" apt-get update -qq >>"$log" 2>&1
DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y --no-install-recommends "${packages[@]}" >>"$log" 2>&1 \
  || { tail -5 "$log" >&2; exit 1; }
chroot "$tmp" apt-get clean
umount "$tmp/proc"; trap - EXIT
# A container of its own: its name, no host resolver, the journal kept in memory only.
echo oisp-test >"$tmp/etc/hostname"
: >"$tmp/etc/resolv.conf"
mv "$tmp" "$root"
# Trees of older package lists are never used again: keep the disk to one tree.
for old in "$cache"/bookworm-*; do
  [[ $old == "$root" || $old == "$log" ]] || rm -rf --one-file-system "$old"
done
echo "$root"
