#!/usr/bin/env bash
# Assembles the DaemonSet image's root file system: the agent binary, exactly the shared libraries
# it loads (from ldd, with the dynamic loader), the CA certificates (HTTPS to registries, the
# Qualys platform and cloud APIs), and name-service files. No shell, no package manager.
#   build-rootfs.sh BINARY OUT.tar      (then: docker import --change ... OUT.tar qcs-agent:TAG)
# The Dockerfile beside this script runs it in a build stage; the tests run it directly.
set -euo pipefail
binary=${1:?usage: build-rootfs.sh BINARY OUT.tar}
out=${2:?usage: build-rootfs.sh BINARY OUT.tar}
certs=/etc/ssl/certs/ca-certificates.crt
[[ -x $binary ]] || { echo "build-rootfs: $binary is not an executable" >&2; exit 1; }
[[ -r $certs ]] || { echo "build-rootfs: $certs missing (apt-get install ca-certificates)" >&2; exit 1; }

root=$(mktemp -d /tmp/qcs-rootfs-XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{usr/bin,etc/ssl/certs,etc/qcs-agent,tmp,proc,sys,dev,host}
chmod 0755 "$root"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/usr/bin/qcs-agent"
strip --strip-unneeded "$root/usr/bin/qcs-agent" 2>/dev/null || true

# "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" and the loader "/lib64/ld-linux-x86-64.so.2 (0x...)".
# A library that ldd cannot find makes the image useless: fail here, not at the first pod start.
deps=$(ldd "$binary")
if grep -q 'not found' <<<"$deps"; then
  echo "build-rootfs: unresolved libraries:" >&2
  grep 'not found' <<<"$deps" >&2
  exit 1
fi
while read -r lib; do
  [[ -n $lib ]] || continue
  real=$(readlink -f "$lib")
  mkdir -p "$root$(dirname "$lib")"
  cp "$real" "$root$lib"
done < <(awk '/=> \// {print $3} /^\t\// {print $1}' <<<"$deps" | sort -u)
# Debian is merged-/usr: /lib and /lib64 are links into /usr, where the loader's search finds them.
for d in lib lib64; do
  if [[ -d $root/$d && ! -L $root/$d ]]; then
    mkdir -p "$root/usr/$d"
    cp -a "$root/$d/." "$root/usr/$d/"
    rm -rf "${root:?}/$d"
    ln -s "usr/$d" "$root/$d"
  fi
done

install -m 0644 "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/usr/bin/qcs-agent\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" .
echo "build-rootfs: $out ($(du -h "$out" | cut -f1)) from $binary with $(grep -c '/' <<<"$deps") libraries"
