#!/usr/bin/env bash
# Build the tend .deb from this workspace with dpkg-deb (no debhelper, no cargo-deb needed).
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR] [--fast]
#
# Without --binary: `cargo build --release --locked` and package target/release/tend.
# --binary PATH: package that binary instead (the tests package their debug build).
# --fast: gzip -1 instead of xz (for tests; the package is bigger, built in a second).
# Prints the path of the .deb.
#
# Contents: /usr/bin/tend; the systemd unit; /etc/tend/tend.toml (a conffile: the commented
# example); bash/zsh/fish completions and man pages generated from the CLI (`tend generate`);
# README, example host configs and the copyright under /usr/share/doc/tend. The maintainer
# scripts (packaging/debian/) create the `tend` group; the service is enabled by the operator.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
binary="" out="$top/target/deb" fast=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=1; shift ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release --locked --quiet --manifest-path "$top/Cargo.toml" --bin tend
  binary="${CARGO_TARGET_DIR:-$top/target}/release/tend"
fi
[ -x "$binary" ] || { echo "build-deb: no executable at $binary" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/agent/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
stage=$(mktemp -d "${TMPDIR:-/tmp}/tend-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
umask 022
chmod 0755 "$stage"   # the package's "./": dpkg would apply a 0700 to /

install -D -m 0755 "$binary" "$stage/usr/bin/tend"
# Debug builds carry DWARF: drop it (symbols stay, for backtraces).
if command -v strip >/dev/null; then strip --strip-debug "$stage/usr/bin/tend"; fi
install -D -m 0644 "$top/packaging/tend.service" "$stage/usr/lib/systemd/system/tend.service"
install -D -m 0640 "$top/examples/tend.toml" "$stage/etc/tend/tend.toml"

gen=$stage/gen
"$stage/usr/bin/tend" generate completions "$gen/completions" >/dev/null
"$stage/usr/bin/tend" generate man "$gen/man" >/dev/null
install -D -m 0644 "$gen/completions/tend.bash" "$stage/usr/share/bash-completion/completions/tend"
install -D -m 0644 "$gen/completions/_tend" "$stage/usr/share/zsh/vendor-completions/_tend"
install -D -m 0644 "$gen/completions/tend.fish" "$stage/usr/share/fish/vendor_completions.d/tend.fish"
mkdir -p "$stage/usr/share/man/man1"
for page in "$gen"/man/*.1; do
  gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
rm -rf "$gen"

doc=$stage/usr/share/doc/tend
install -D -m 0644 "$top/README.md" "$doc/README.md"
gzip -9n "$doc/README.md"
install -d "$doc/examples"
install -m 0644 "$top/examples/tend.toml" "$doc/examples/tend.toml"
for h in "$top"/examples/hosts/*.toml; do
  [ -e "$h" ] && install -m 0644 "$h" "$doc/examples/"
done
cat >"$doc/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tend

Files: *
Copyright: tend developers
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.
COPY

# Shared-library dependencies of the binary, the way debhelper computes them.
depends=""
if command -v dpkg-shlibdeps >/dev/null; then
  shl=$(mktemp -d)
  mkdir -p "$shl/debian"
  printf 'Source: tend\n\nPackage: tend\nArchitecture: any\n' >"$shl/debian/control"
  depends=$(cd "$shl" && dpkg-shlibdeps -O "$stage/usr/bin/tend" 2>/dev/null | sed -n 's/^shlibs:Depends=//p') || true
  rm -rf "$shl"
fi
depends=${depends:-"libc6 (>= 2.34), libgcc-s1 (>= 4.2)"}

# ca-certificates: the HTTP client behind Git fetches and hooks needs the system's roots, and
# refuses to start without any (plain http:// included).
mkdir -p "$stage/DEBIAN"
install -m 0755 "$top"/packaging/debian/postinst "$top"/packaging/debian/prerm "$top"/packaging/debian/postrm "$stage/DEBIAN/"
echo /etc/tend/tend.toml >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: tend
Version: $version
Architecture: $arch
Maintainer: tend developers <tend@example.invalid>
Installed-Size: $size
Depends: $depends, passwd, ca-certificates
Recommends: docker.io | docker-ce
Section: admin
Priority: optional
Description: pull-based GitOps agent for hosts without Kubernetes
 tend follows a Git repository, applies only commits signed by keys the host
 trusts, decrypts SOPS secrets in memory, and keeps the host's Docker
 containers (and systemd units) exactly as the repository declares, repairing
 drift, offline too. One binary and a hardened systemd service per host.
CONTROL

deb="$out/tend_${version}_${arch}.deb"
if [ "$fast" = 1 ]; then comp=(-Zgzip -z1); else comp=(-Zxz -z6); fi
dpkg-deb --root-owner-group "${comp[@]}" --build "$stage" "$deb" >/dev/null
echo "$deb"
