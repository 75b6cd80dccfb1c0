#!/usr/bin/env bash
# interactive.sh [RUNTIME_DIR] [ROOTFS]
#
# Boots a throwaway copy of ROOTFS (default RUNTIME_DIR/rootfs.ext4) with the
# bundle's kernel and initramfs under QEMU's microvm machine, its serial console
# on this terminal, for debugging by hand. Log in as root on the console (no
# password). Quit with Ctrl-A X (Ctrl-A C: QEMU monitor); `poweroff` in the guest
# also ends it.
#
# Environment:
#   ACCEL      kvm or tcg (default: kvm when /dev/kvm is hardware kvm_intel or
#              kvm_amd, else tcg; kvm_pvm does not boot a standard guest)
#   NET=user   add a NIC on QEMU user networking, guest 10.0.2.15, with host
#              127.0.0.1:$SSH_PORT (default 2222) forwarded to the guest's SSH
#   MEM, CPUS  default 1024 and 2
#   APPEND     extra kernel arguments (e.g. banger.shell, systemd.unit=rescue.target)
#   KEEP=1     keep the disk copy afterwards (its path is printed)
set -euo pipefail

RUNTIME_DIR=${1:-./runtime}
ROOTFS=${2:-$RUNTIME_DIR/rootfs.ext4}
MEM=${MEM:-1024}
CPUS=${CPUS:-2}
NET=${NET:-none}
SSH_PORT=${SSH_PORT:-2222}

die() { echo "interactive: error: $*" >&2; exit 1; }

BUNDLE=$RUNTIME_DIR/bundle.json
[[ -f $BUNDLE ]] || die "$BUNDLE not found (make runtime-debian or make runtime-bundle)"
[[ -f $ROOTFS ]] || die "$ROOTFS not found"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

json_get() { sed -n "s/^ *\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$BUNDLE" | head -n 1; }
kernel=$(json_get qemu_kernel)
[[ -n $kernel ]] || kernel=$(json_get kernel)
initrd=$(json_get initrd)
args=$(json_get kernel_args)
[[ -n $args ]] || args="console=ttyS0 reboot=k panic=1 root=/dev/vda rw"

if [[ -z ${ACCEL:-} ]]; then
    ACCEL=tcg
    if [[ -r /dev/kvm && -w /dev/kvm ]] && { [[ -d /sys/module/kvm_intel ]] || [[ -d /sys/module/kvm_amd ]]; }; then
        ACCEL=kvm
    fi
fi

host_tsc_khz() {
    local khz
    if [[ -r /sys/devices/system/cpu/cpu0/tsc_freq_khz ]]; then
        cat /sys/devices/system/cpu/cpu0/tsc_freq_khz
        return
    fi
    # The kernel's own calibration, when the log is readable.
    khz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p; s/.*tsc: Detected \([0-9.]*\) MHz.*/\1/p' |
        tail -n 1 | awk '{ printf "%d", $1 * 1000 }')
    if [[ -z $khz ]]; then
        # cpu MHz is cpu_khz (the TSC rate) unless cpufreq/APERF report otherwise.
        khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
    fi
    echo "$khz"
}

cpu=(-cpu host)
if [[ $ACCEL == tcg ]]; then
    cpu=(-cpu max)
    # The PIT calibration of the TSC sometimes hangs under TCG (E2E.md); the
    # guest TSC runs at the host's rate, so hand that over.
    khz=$(host_tsc_khz)
    [[ -n $khz && $khz -gt 0 ]] && args="$args tsc_early_khz=$khz"
    # Else the guest finds its TSCs "unsynchronized" and keeps time with jiffies.
    args="$args tsc=reliable"
fi

net=()
if [[ $NET == user ]]; then
    net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22"
        -device virtio-net-device,netdev=n0,mac=06:00:0a:00:02:0f)
    args="$args ip=10.0.2.15::10.0.2.2:255.255.255.0:interactive:eth0:off"
    echo "interactive: guest SSH on 127.0.0.1:$SSH_PORT" >&2
fi
args="$args ${APPEND:-}"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/banger-interactive.XXXXXX")
cleanup() {
    if [[ -n ${KEEP:-} ]]; then
        echo "interactive: disk kept at $WORK/rootfs.ext4" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
cp --sparse=always "$ROOTFS" "$WORK/rootfs.ext4"

echo "interactive: $ACCEL, kernel $kernel, append: $args" >&2
echo "interactive: Ctrl-A X quits, Ctrl-A C is the QEMU monitor" >&2
qemu-system-x86_64 \
    -M microvm,acpi=on,rtc=on,pit=on,pic=on -accel "$ACCEL" "${cpu[@]}" \
    -m "$MEM" -smp "$CPUS" -nodefaults -no-user-config -display none -no-reboot \
    -serial mon:stdio \
    -kernel "$RUNTIME_DIR/$kernel" -initrd "$RUNTIME_DIR/$initrd" -append "$args" \
    -drive "id=root,file=$WORK/rootfs.ext4,format=raw,if=none" -device virtio-blk-device,drive=root \
    "${net[@]}"
