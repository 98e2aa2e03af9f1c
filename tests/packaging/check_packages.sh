#!/usr/bin/env bash
# Builds the .deb and .rpm with CPack from the build tree and checks what they contain: the binary,
# the unit, the tmpfiles entry, the default config as a root-only (0600) config file, the docs,
# the maintainer scripts (enable without start), and dependencies computed from the binary.
#   check_packages.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: check_packages.sh BUILD_DIR}
out=$build/packages
fail() { echo "check_packages: FAIL: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing (install Debian package $2: scripts/setup.sh)"; }
need cpack cmake
need dpkg-deb dpkg
need rpmbuild rpm
need dpkg-shlibdeps dpkg-dev

rm -rf "$out"
mkdir -p "$out"
(cd "$build" && cpack --config CPackConfig.cmake -B "$out") >"$out/cpack.log" 2>&1 ||
  { cat "$out/cpack.log" >&2; fail "cpack failed"; }

deb=$(ls "$out"/qcs-agent_*.deb 2>/dev/null | head -1)
rpmfile=$(ls "$out"/qcs-agent-*.rpm 2>/dev/null | head -1)
[[ -f $deb ]] || fail "no .deb in $out"
[[ -f $rpmfile ]] || fail "no .rpm in $out"
echo "built: $deb $rpmfile"

# --- .deb ---------------------------------------------------------------------------------------
listing=$(dpkg-deb -c "$deb")
expect_entry() { # listing mode path
  grep -Eq "^$2 root/root +[0-9]+ [0-9-]+ [0-9:]+ \./${3#/}\$" <<<"$1" ||
    fail "$deb: expected $3 with mode $2; got: $(grep -F "${3#/}" <<<"$1" || echo absent)"
}
expect_entry "$listing" '-rwxr-xr-x' /usr/bin/qcs-agent
expect_entry "$listing" '-rw-r--r--' /usr/lib/systemd/system/qcs-agent.service
expect_entry "$listing" '-rw-r--r--' /usr/lib/tmpfiles.d/qcs-agent.conf
expect_entry "$listing" '-rw-------' /etc/qcs-agent/agent.yaml
expect_entry "$listing" 'drwx------' /etc/qcs-agent/secrets/
expect_entry "$listing" '-rw-r--r--' /usr/share/doc/qcs-agent/README.md
expect_entry "$listing" '-rw-r--r--' /usr/share/doc/qcs-agent/qcs-agent.env.example
for doc in README ecs eks aks gke; do
  expect_entry "$listing" '-rw-r--r--' /usr/share/doc/qcs-agent/install/$doc.md
done

ctl=$(mktemp -d)
trap 'rm -rf "$ctl"' EXIT
dpkg-deb -e "$deb" "$ctl"
[[ "$(cat "$ctl/conffiles")" == "/etc/qcs-agent/agent.yaml" ]] || fail "conffiles: $(cat "$ctl/conffiles")"
for s in postinst prerm postrm; do
  [[ -x $ctl/$s ]] || fail "$s missing or not executable in the .deb"
  sh -n "$ctl/$s" || fail "$s: shell syntax error"
done
grep -q 'systemctl enable qcs-agent.service' "$ctl/postinst" || fail "postinst does not enable the unit"
grep -Eq 'systemctl (start|restart|enable --now)' "$ctl/postinst" && fail "postinst starts the unit on install"
depends=$(dpkg-deb -f "$deb" Depends)
echo "deb Depends: $depends"
for lib in libc6 libstdc++6 libsystemd0 libcurl4 libgrpc++; do
  grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib (shlibdeps): $depends"
done
file_out=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/qcs-agent | file -)
grep -q 'stripped' <<<"$file_out" && ! grep -q 'not stripped' <<<"$file_out" || fail "binary not stripped: $file_out"

# --- .rpm ---------------------------------------------------------------------------------------
rpmq() { rpm -qp --nosignature "$@" "$rpmfile" 2>/dev/null; }
rlist=$(rpmq --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]')
echo "$rlist"
expect_rpm() { # perms path [flags]
  grep -Eq "^$1 root root ${3:-[a-z]*} $2\$" <<<"$rlist" ||
    fail "$rpmfile: expected $2 with $1 ${3:-}; got: $(grep -F "$2" <<<"$rlist" || echo absent)"
}
expect_rpm '-rwxr-xr-x' /usr/bin/qcs-agent
expect_rpm '-rw-r--r--' /usr/lib/systemd/system/qcs-agent.service
expect_rpm '-rw-r--r--' /usr/lib/tmpfiles.d/qcs-agent.conf
expect_rpm '-rw-------' /etc/qcs-agent/agent.yaml cn
expect_rpm 'drwx------' /etc/qcs-agent/secrets
expect_rpm '-rw-r--r--' /usr/share/doc/qcs-agent/install/ecs.md
# The distribution's directories stay the distribution's.
for owned in /usr/lib/systemd/system /usr/lib/tmpfiles.d /usr/bin /etc; do
  grep -Eq " $owned\$" <<<"$rlist" && fail "the rpm claims $owned"
done
scripts=$(rpmq --scripts)
grep -q 'systemctl enable qcs-agent.service' <<<"$scripts" || fail "rpm %post does not enable the unit"
grep -Eq 'systemctl (start|enable --now)' <<<"$scripts" && fail "rpm scripts start the unit on install"
grep -q 'preuninstall' <<<"$scripts" || fail "rpm has no %preun"
requires=$(rpmq --requires)
grep -q 'libgrpc++' <<<"$requires" || fail "rpm Requires lacks the gRPC library (autoreq): $requires"

echo "check_packages: OK"
