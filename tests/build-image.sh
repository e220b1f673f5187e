#!/usr/bin/env bash
# build-image.sh NAME: make a tiny busybox image locally (no registry needed) unless NAME exists.
set -euo pipefail
name=${1:?image name}
docker image inspect "$name" >/dev/null 2>&1 && exit 0
command -v busybox >/dev/null || {
  [ "$(id -u)" = 0 ] || { echo "install busybox-static first" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/www"
cp "$(readlink -f "$(command -v busybox)")" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'hello from a container tend runs' >"$root/www/index.html"
tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$name" >/dev/null
echo "built image $name"
