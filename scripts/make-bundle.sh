#!/usr/bin/env bash
# make-bundle.sh [RUNTIME_DIR]      (make runtime-debian)
#
# Builds a complete runtime bundle from Debian's packages into RUNTIME_DIR
# (default ./runtime): kernel, initramfs and modules (make-kernel.sh), the
# default rootfs (make-rootfs.sh), and bundle.json. Idempotent: pieces that are
# present and valid are kept; FORCE=1 rebuilds everything, FORCE=kernel or
# FORCE=rootfs one piece. ROOTFS_SIZE (default 2G, the default disk size, so a default create need not grow it; the image is sparse) is the image size.
# A `firecracker` binary already in RUNTIME_DIR is kept and listed.
# AGENT_BIN (required) is the static guest agent the initramfs carries
# (`make agent`); an initrd without it, or with another agent binary, is
# rebuilt.
# Needs root (debootstrap).
set -euo pipefail

RUNTIME_DIR=${1:-./runtime}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOTFS_SIZE=${ROOTFS_SIZE:-2G}
FORCE=${FORCE:-}

log() { echo "make-bundle: $*" >&2; }
die() { echo "make-bundle: error: $*" >&2; exit 1; }

[[ -n ${AGENT_BIN:-} && -x ${AGENT_BIN:-} ]] ||
    die "AGENT_BIN must name the static guest agent (build it with 'make agent')"
AGENT_BIN=$(cd "$(dirname "$AGENT_BIN")" && pwd)/$(basename "$AGENT_BIN")
export AGENT_BIN

mkdir -p "$RUNTIME_DIR"
RUNTIME_DIR=$(cd "$RUNTIME_DIR" && pwd)
start=$SECONDS

kernel_ok() {
    local d=$RUNTIME_DIR kver
    [[ -s $d/kernel.release && -s $d/vmlinux && -s $d/initrd.img ]] || return 1
    kver=$(<"$d/kernel.release")
    [[ $(head -c 4 "$d/vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] || return 1
    gzip -t "$d/initrd.img" 2>/dev/null || return 1
    # An initrd from before layered roots, or without this agent, is rebuilt.
    grep -qx layered-root "$d/initrd.features" 2>/dev/null || return 1
    grep -qx agent "$d/initrd.features" 2>/dev/null || return 1
    [[ $(cat "$d/initrd.agent.sha256" 2>/dev/null) == "$(sha256sum <"$AGENT_BIN" | cut -d' ' -f1)" ]] || return 1
    [[ -s $d/modules/$kver/modules.dep ]] || return 1
}

rootfs_ok() {
    local img=$RUNTIME_DIR/rootfs.ext4 kver
    [[ -s $img ]] || return 1
    dumpe2fs -h "$img" 2>/dev/null | grep -q '^Filesystem volume name: *banger-root$' || return 1
    # The image must carry the bundle kernel's modules.
    kver=$(<"$RUNTIME_DIR/kernel.release")
    debugfs -R "stat /usr/lib/modules/$kver/modules.dep" "$img" 2>/dev/null | grep -q '^Inode:' || return 1
    e2fsck -fn "$img" >/dev/null 2>&1 || return 1
}

if [[ $FORCE == 1 || $FORCE == kernel ]] || ! kernel_ok; then
    log "building kernel, initramfs and modules"
    "$HERE/make-kernel.sh" "$RUNTIME_DIR"
    kernel_ok || die "make-kernel.sh did not produce a valid kernel"
    # A new kernel means new modules in the rootfs.
    rootfs_ok || rm -f "$RUNTIME_DIR/rootfs.ext4"
else
    log "kernel $(<"$RUNTIME_DIR/kernel.release") present, keeping it"
fi
KVER=$(<"$RUNTIME_DIR/kernel.release")

if [[ $FORCE == 1 || $FORCE == rootfs ]] || ! rootfs_ok; then
    log "building rootfs.ext4 ($ROOTFS_SIZE)"
    MODULES_DIR="$RUNTIME_DIR/modules/$KVER" "$HERE/make-rootfs.sh" "$RUNTIME_DIR/rootfs.ext4" "$ROOTFS_SIZE"
    rootfs_ok || die "make-rootfs.sh did not produce a valid rootfs"
else
    log "rootfs.ext4 present, keeping it"
fi

# --- package manifest ------------------------------------------------------
# rootfs.ext4.packages: one `name version` per line, sorted bytewise, read from
# the image's dpkg database (no mount). `image import` and the default image
# take it along, and builds from it start from it.
if [[ ! -s $RUNTIME_DIR/rootfs.ext4.packages || $RUNTIME_DIR/rootfs.ext4 -nt $RUNTIME_DIR/rootfs.ext4.packages ]]; then
    debugfs -R "cat /var/lib/dpkg/status" "$RUNTIME_DIR/rootfs.ext4" 2>/dev/null |
        awk '/^Package: / { p = $2 } /^Status: / { s = $4 } /^Version: / { v = $2 }
             /^$/ { if (s == "installed") print p, v; p = s = v = "" }
             END { if (s == "installed") print p, v }' |
        LC_ALL=C sort -u >"$RUNTIME_DIR/rootfs.ext4.packages.tmp"
    [[ -s $RUNTIME_DIR/rootfs.ext4.packages.tmp ]] || die "cannot read the package list of rootfs.ext4"
    mv -f "$RUNTIME_DIR/rootfs.ext4.packages.tmp" "$RUNTIME_DIR/rootfs.ext4.packages"
    log "rootfs.ext4.packages: $(wc -l <"$RUNTIME_DIR/rootfs.ext4.packages") packages"
fi

# --- bundle.json ----------------------------------------------------------
# Kernel arguments every backend uses. The VMM backend adds its own: ip=... per
# VM, and under QEMU with software emulation `tsc_early_khz=<host TSC kHz>
# tsc=reliable` (without the first the PIT calibration can hang, E2E.md; without
# the second the guest marks its TSC unstable and keeps time with jiffies, which
# lag real time under load). No `quiet`: the console log is the first thing to
# read when a boot fails, and under TCG it made no difference we could measure.
KERNEL_ARGS="console=ttyS0 reboot=k panic=1 root=/dev/vda rw"
{
    echo "{"
    echo "  \"kernel\": \"vmlinux\","
    echo "  \"initrd\": \"initrd.img\","
    echo "  \"modules\": \"modules/$KVER\","
    echo "  \"rootfs\": \"rootfs.ext4\","
    [[ -x $RUNTIME_DIR/firecracker ]] && echo "  \"firecracker\": \"firecracker\","
    echo "  \"kernel_version\": \"$KVER\","
    grep -qx layered-root "$RUNTIME_DIR/initrd.features" 2>/dev/null && echo "  \"layered_root\": true,"
    grep -qx agent "$RUNTIME_DIR/initrd.features" 2>/dev/null && echo "  \"agent\": true,"
    echo "  \"defaults\": {"
    echo "    \"vcpus\": 2,"
    echo "    \"memory_mib\": 1024,"
    echo "    \"disk_size\": \"2G\","
    echo "    \"work_disk_size\": \"1G\","
    echo "    \"kernel_args\": \"$KERNEL_ARGS\""
    echo "  }"
    echo "}"
} >"$RUNTIME_DIR/bundle.json.tmp"
mv -f "$RUNTIME_DIR/bundle.json.tmp" "$RUNTIME_DIR/bundle.json"

log "bundle ready in $RUNTIME_DIR ($((SECONDS - start)) s):"
(cd "$RUNTIME_DIR" && du -sh --apparent-size vmlinux initrd.img rootfs.ext4 "modules/$KVER" >&2)
cat "$RUNTIME_DIR/bundle.json"
