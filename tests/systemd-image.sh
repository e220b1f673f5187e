#!/usr/bin/env bash
# Build the `tend-test/systemd:bookworm` image: a minimal Debian bookworm root with systemd as
# PID 1, dbus and apt, used as a whole "host" (systemd + the host's Docker socket) by the tests
# that install tend's .deb and manage units (testbed.md, "A real systemd").
# Cached: does nothing when the image already exists (pass --force to rebuild). The image name
# is shared with other tests: keep the content compatible (same masked units, same packages).
set -euo pipefail

IMAGE="${TEND_SYSTEMD_IMAGE:-tend-test/systemd:bookworm}"

if [[ "${1:-}" != "--force" ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE already present"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi

# Mirror: the first `URIs:` line of the machine's deb822 sources, falling back
# to the classic sources.list, then to deb.debian.org.
MIRROR=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
if [[ -z "$MIRROR" && -r /etc/apt/sources.list ]]; then
    MIRROR="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)"
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

DIR="$(mktemp -d /tmp/tend-systemd-rootfs.XXXXXX)"
cleanup() { rm -rf "$DIR"; }
trap cleanup EXIT

echo "debootstrap bookworm from $MIRROR into $DIR"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$DIR" "$MIRROR"

# Units that cannot work inside a container: mask them so the node reaches
# `running` (or at worst `degraded`) quickly.
for unit in getty@tty1.service console-getty.service \
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-udev-trigger.service systemd-udev-settle.service \
    systemd-modules-load.service systemd-remount-fs.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    systemd-firstboot.service systemd-journald-audit.socket; do
    ln -sf /dev/null "$DIR/etc/systemd/system/$unit"
done

# An empty machine-id: systemd generates a transient one at boot.
: > "$DIR/etc/machine-id"
rm -f "$DIR/var/lib/dbus/machine-id"

# Keep the image small.
rm -rf "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/*

tar -C "$DIR" -c . | docker import \
    -c 'CMD ["/sbin/init"]' \
    -c 'ENV container=docker' \
    - "$IMAGE"
echo "built $IMAGE"
