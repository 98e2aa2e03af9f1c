#!/usr/bin/env bash
# Prints the path of a tarball of a clean Debian bookworm root file system (debootstrap minbase)
# with systemd as init and the runtime dependencies the .deb declares, made once and cached in
# CACHE_DIR (keyed by that package list, so a changed Depends makes a new one).
#   make_rootfs.sh DEB CACHE_DIR        (QCS_DEBIAN_MIRROR overrides the mirror)
# Needs root and Debian's mirror. Only what the .deb declares is added: a missing dependency
# shows up as a dpkg or a start failure in the boot test.
set -euo pipefail
deb=${1:?usage: make_rootfs.sh DEB CACHE_DIR}
cache=${2:?usage: make_rootfs.sh DEB CACHE_DIR}
mirror=${QCS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
fail() { echo "make_rootfs: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "needs root (debootstrap)"
command -v debootstrap >/dev/null || fail "debootstrap is missing: apt-get install debootstrap (scripts/setup.sh)"
[[ -f $deb ]] || fail "no package at $deb"

# "libc6 (>= 2.34), libfoo1 | libfoo2" -> libc6 libfoo1: the first alternative, no versions.
deps=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep . | sort -u)
# debootstrap installs real packages only: a virtual one (libspdlog1.10-fmt9) becomes its provider,
# as apt would pick it.
real_package() {
  if [[ -n $(apt-cache show --no-all-versions "$1" 2>/dev/null) ]]; then
    echo "$1"
    return
  fi
  local provider
  provider=$(apt-cache showpkg "$1" 2>/dev/null | sed -n '/^Reverse Provides:/,$p' | sed -n '2p' | awk '{print $1}')
  [[ -n $provider ]] || fail "dependency $1 is neither a package nor provided by one in this machine's apt lists (apt-get update?)"
  echo "$provider"
}
resolved=()
for dep in $deps; do resolved+=("$(real_package "$dep")"); done
include=$(printf '%s\n' systemd systemd-sysv dbus "${resolved[@]}" | sort -u | paste -sd, -)
key=$(sha256sum <<<"$include" | cut -c1-16)
mkdir -p "$cache/debs"
tarball=$cache/bookworm-$key.tar

exec 9>"$cache/.lock"
flock 9
if [[ -s $tarball ]]; then
  echo "$tarball"
  exit 0
fi

root=$(mktemp -d "$cache/root-XXXXXX")
cleanup() {
  # debootstrap mounts /proc and /sys inside the target; never remove through a mount.
  { grep -F " $root/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT
echo "make_rootfs: debootstrap bookworm with $include (from $mirror)" >&2
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$include" bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
  { tail -30 "$cache/debootstrap.log" >&2; fail "debootstrap failed (log: $cache/debootstrap.log)"; }
# A machine-id is made at first boot; the image must not carry one of its own.
: >"$root/etc/machine-id"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -cf "$tarball.part" .
mv "$tarball.part" "$tarball"
echo "$tarball"
