#!/usr/bin/env bash
# make-kernel.sh OUT_DIR
#
# Builds banger's guest kernel pieces from Debian's packages alone, without
# installing anything on the host and without compiling:
#
#   OUT_DIR/vmlinux          uncompressed ELF x86-64 kernel (Firecracker needs an
#                            ELF; QEMU microvm boots it too, through its PVH note)
#   OUT_DIR/initrd.img       gzip'd cpio (newc) initramfs: busybox-static, the
#                            virtio, overlay, virtio-console and vsock modules, the
#                            guest agent, and an /init that brings up the NIC from
#                            ip=, switch_roots into root= (default /dev/vda),
#                            layered under banger.upper= if given, and leaves the
#                            agent running in the final root
#   OUT_DIR/initrd.features  what the initrd can do: `layered-root`, `agent`
#   OUT_DIR/initrd.agent.sha256  sha256 of the agent binary inside
#   OUT_DIR/modules/<kver>/  the kernel's whole modules tree, depmod'ed
#   OUT_DIR/kernel.release   the kernel version (<kver>), one line
#   OUT_DIR/kernel.config    the kernel's build configuration
#
# Inputs (environment):
#   AGENT_BIN        the static banger-agent binary (required; `make agent` builds it)
#   KERNEL_PACKAGE   versioned image package (default: what linux-image-cloud-amd64
#                    depends on in the host's apt configuration)
#   BUSYBOX_PACKAGE  default busybox-static
#   SOURCE_DATE_EPOCH  timestamp for the initramfs entries (default 0)
#
# Host tools: apt-get, apt-cache, dpkg-deb, lz4 (or xz/zstd/gzip/bzip2, whichever
# the kernel uses), depmod (kmod), cpio, gzip, readelf (binutils).
# The same kernel package on the same archive and the same agent binary give a
# byte-identical initrd.img.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
OUT_DIR=$1

log() { echo "make-kernel: $*" >&2; }
die() { echo "make-kernel: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb depmod cpio gzip readelf sha256sum; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (Debian: apt-get install apt dpkg kmod cpio gzip binutils)"
done
[[ -n ${AGENT_BIN:-} ]] || die "AGENT_BIN is not set: build the guest agent with 'make agent' and pass its path"
[[ -x $AGENT_BIN ]] || die "AGENT_BIN=$AGENT_BIN is not an executable"
if readelf -d "$AGENT_BIN" 2>/dev/null | grep -q NEEDED; then
    die "AGENT_BIN=$AGENT_BIN is dynamically linked; build it with crt-static ('make agent')"
fi

# The guest's modules, roots of the dependency closure that goes into the
# initramfs. On Debian's cloud kernel ext4 (with jbd2, mbcache, crc16, crc32c)
# is built in; virtio, virtio-mmio, virtio-blk and virtio-net are modules.
# button + evdev: the ACPI power button (QEMU system_powerdown), so systemd-logind
# can shut the guest down cleanly. virtio-rng: entropy for sshd early in boot.
# The guest agent's channel: virtio_console (QEMU's virtio-serial port), vsock
# and its virtio transport (Firecracker's vsock device).
INITRD_MODULES=(virtio_mmio virtio_blk virtio_net virtio-rng button evdev overlay
    virtio_console vsock vmw_vsock_virtio_transport)

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
BUSYBOX_PACKAGE=${BUSYBOX_PACKAGE:-busybox-static}
if [[ -z ${KERNEL_PACKAGE:-} ]]; then
    KERNEL_PACKAGE=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ { print $2; exit }')
    [[ -n $KERNEL_PACKAGE ]] ||
        die "cannot resolve linux-image-cloud-amd64 (run 'apt-get update' first?)"
fi
KVER=${KERNEL_PACKAGE#linux-image-}
log "kernel package $KERNEL_PACKAGE (kernel $KVER)"

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/banger-kernel.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# --- fetch the packages (downloaded, never installed) ----------------------
mkdir -p "$WORK/debs"
# apt drops privileges to _apt while downloading; let it write there.
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chmod 0755 "$WORK"
    chown _apt "$WORK/debs"
fi
(cd "$WORK/debs" && apt-get download -q "$KERNEL_PACKAGE" "$BUSYBOX_PACKAGE") >&2
kdeb=$(ls "$WORK"/debs/"${KERNEL_PACKAGE}"_*.deb)
bdeb=$(ls "$WORK"/debs/"${BUSYBOX_PACKAGE}"_*.deb)
dpkg-deb -x "$kdeb" "$WORK/kpkg"
dpkg-deb -x "$bdeb" "$WORK/bbpkg"
kdeb_version=$(dpkg-deb -f "$kdeb" Version)

BZIMAGE="$WORK/kpkg/boot/vmlinuz-$KVER"
KCONFIG="$WORK/kpkg/boot/config-$KVER"
MODSRC="$WORK/kpkg/lib/modules/$KVER"
[[ -f $BZIMAGE && -f $KCONFIG && -d $MODSRC ]] || die "unexpected layout in $kdeb"

# --- vmlinux: the ELF inside the bzImage ------------------------------------
# Look for each compressor's magic in the bzImage; decompress from every
# candidate offset until the output is an ELF file (what scripts/extract-vmlinux
# in the kernel tree does).
is_elf() { [[ -s $1 ]] && [[ $(head -c 4 "$1" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; }

try_decompress() { # magic(grep -P escaped) tool args...
    local magic=$1; shift
    command -v "$1" >/dev/null || return 1
    local off
    for off in $(LC_ALL=C grep -aboP "$magic" "$BZIMAGE" | cut -d: -f1); do
        # Trailing data after the compressed stream makes these tools complain;
        # the output is still complete, so only the result is checked.
        tail -c "+$((off + 1))" "$BZIMAGE" | "$@" >"$WORK/vmlinux" 2>/dev/null || true
        if is_elf "$WORK/vmlinux"; then
            log "vmlinux: $1 stream at offset $off"
            return 0
        fi
    done
    return 1
}

grep -q '^CONFIG_KERNEL_LZ4=y' "$KCONFIG" && log "kernel is LZ4-compressed"
try_decompress '\x02\x21\x4c\x18' lz4 -d -c ||
    try_decompress '\x{fd}7zXZ\x00' xz -d -c ||
    try_decompress '\x28\xb5\x2f\xfd' zstd -d -c ||
    try_decompress '\x1f\x8b\x08' gzip -d -c ||
    try_decompress 'BZh' bzip2 -d -c ||
    try_decompress '\x5d\x00\x00\x00' xz --format=lzma -d -c ||
    die "could not find an ELF kernel inside $BZIMAGE (is lz4 installed? apt-get install lz4)"

hdr=$(readelf -h "$WORK/vmlinux")
grep -q 'Class:.*ELF64' <<<"$hdr" || die "vmlinux is not ELF64"
grep -q 'Machine:.*X86-64' <<<"$hdr" || die "vmlinux is not x86-64"
grep -q 'Type:.*EXEC' <<<"$hdr" || die "vmlinux is not an executable"
# QEMU (and cloud-hypervisor) boot an ELF vmlinux through its PVH entry note;
# Firecracker uses the ELF entry point.
if grep -q '^CONFIG_PVH=y' "$KCONFIG"; then
    log "CONFIG_PVH=y: QEMU can boot vmlinux directly"
else
    log "warning: CONFIG_PVH is not set; QEMU microvm needs the bzImage (kept as vmlinuz)"
    install -m 0644 "$BZIMAGE" "$OUT_DIR/vmlinuz.new"
fi
# Firecracker hands virtio-mmio devices over on the command line
# (virtio_mmio.device=...) unless the guest reads its ACPI tables.
grep -q '^CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y' "$KCONFIG" ||
    log "note: CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set: virtio-mmio devices are found through ACPI only"
grep -q '^CONFIG_IP_PNP=y' "$KCONFIG" ||
    log "note: CONFIG_IP_PNP is not set: the kernel ignores ip=, the initramfs applies it"

# --- modules tree ------------------------------------------------------------
rm -rf "$WORK/modules"
mkdir -p "$WORK/modules"
cp -a "$MODSRC" "$WORK/modules/$KVER"
depmod -b "$WORK/kpkg" "$KVER"   # Debian's postinst would do this
cp -a "$MODSRC"/modules.* "$WORK/modules/$KVER/"

# Dependency closure of INITRD_MODULES, dependencies first (modules.dep lists
# every transitive dependency of a module, deepest last).
declare -A seen=()
ordered=()
resolve() {
    local name=$1 line path dep deps=()
    # modules.dep names files with '-' or '_' interchangeably with the module name.
    local pat=${name//[-_]/[-_]}
    line=$(grep -E "/${pat}\.ko(\.[a-z]+)?:" "$MODSRC/modules.dep" || true)
    if [[ -z $line ]]; then
        if grep -qE "/${pat}\.ko" "$MODSRC/modules.builtin"; then
            log "module $name is built in"
            return 0
        fi
        die "module $name not found for $KVER"
    fi
    path=${line%%:*}
    read -r -a deps <<<"${line#*:}"
    local i
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        dep=$(basename "${deps[i]}"); dep=${dep%%.ko*}
        resolve "$dep"
    done
    if [[ -z ${seen[$path]:-} ]]; then
        seen[$path]=1
        ordered+=("$path")
    fi
}
for m in "${INITRD_MODULES[@]}"; do resolve "$m"; done

# --- initramfs ---------------------------------------------------------------
IR="$WORK/initramfs"
mkdir -p "$IR"/{bin,dev,proc,sys,run,tmp,newroot,etc,lib/modules}
install -m 0755 "$WORK/bbpkg/bin/busybox" "$IR/bin/busybox"
for applet in sh ash mount umount mkdir insmod ip hostname switch_root sleep cat \
    echo ls poweroff reboot sync setsid cttyhack findfs mountpoint dmesg mknod \
    grep sed awk cut tr ps kill ln rm cp mv vi; do
    ln -s busybox "$IR/bin/$applet"
done
ln -s bin "$IR/sbin"
: >"$IR/etc/modules"
for path in "${ordered[@]}"; do
    f=$(basename "$path")
    install -m 0644 "$MODSRC/$path" "$IR/lib/modules/$f"
    echo "$f" >>"$IR/etc/modules"
done
echo "$KVER" >"$IR/etc/kernel.release"
# The guest agent. Started as `@banger-agent` (through the symlink) so that
# systemd's final kill at shutdown spares it: argv[0] begins with '@'.
install -m 0755 "$AGENT_BIN" "$IR/bin/banger-agent"
ln -s banger-agent "$IR/bin/@banger-agent"
log "initramfs modules: $(tr '\n' ' ' <"$IR/etc/modules")"

cat >"$IR/init" <<'INIT'
#!/bin/sh
# banger initramfs: load the virtio drivers, configure the NIC from ip=,
# mount root= and hand over to the real init.
# Boot arguments read here:
#   root=/dev/vda | UUID=... | LABEL=...   (default /dev/vda)
#   rootfstype=ext4  rootflags=...  ro|rw (default rw)  init=/sbin/init
#   ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>
#   banger.panic_on_fail   on any failure reboot at once (which ends the VMM
#                          process: Firecracker with reboot=k, QEMU with -no-reboot)
#                          instead of dropping to a shell on the console
#   banger.shell           drop to a shell right before switch_root
#   banger.upper=/dev/vdb  layer the root: root= mounted read-only (the image,
#                          shared by every VM of it) under this VM's upper disk
#                          (ext4 holding /upper and /ovlwork), with overlayfs
#   banger.agent=0         do not start the guest agent
# The guest agent (/bin/banger-agent) starts right before switch_root: it
# opens its channel (virtio-serial port org.banger.agent, else vsock port
# 1024), chroots into /newroot and stays there when switch_root makes it /.
# When the image has no init at init=, the agent is the guest's init.
PATH=/bin
export PATH

mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
exec </dev/console >/dev/console 2>&1

say() { echo "banger-initrd: $*"; }

root=/dev/vda rootfstype=ext4 rootflags= rootmode=rw init=/sbin/init ipconf=
panic_on_fail= want_shell= upper= agent=1
for arg in $(cat /proc/cmdline); do
    case $arg in
    root=*) root=${arg#root=} ;;
    rootfstype=*) rootfstype=${arg#rootfstype=} ;;
    rootflags=*) rootflags=${arg#rootflags=} ;;
    ro) rootmode=ro ;;
    rw) rootmode=rw ;;
    init=*) init=${arg#init=} ;;
    ip=*) ipconf=${arg#ip=} ;;
    banger.panic_on_fail | banger.panic_on_fail=1) panic_on_fail=1 ;;
    banger.shell | banger.shell=1) want_shell=1 ;;
    banger.upper=*) upper=${arg#banger.upper=} ;;
    banger.agent=0) agent= ;;
    esac
done

rescue_shell() {
    say "starting a shell on the console (exit it to retry the boot)"
    setsid cttyhack sh || sh
}

fail() {
    say "ERROR: $*"
    if [ -n "$panic_on_fail" ]; then
        say "banger.panic_on_fail is set: rebooting now (the VMM exits)"
        sync
        reboot -f
        poweroff -f
        sleep 5
        exit 1 # init exiting panics the kernel; panic=N reboots
    fi
    rescue_shell
}

# Modules, dependencies first (computed when the initramfs was built).
while read -r mod; do
    out=$(insmod "/lib/modules/$mod" 2>&1) || case $out in
        *"File exists"*) ;;
        *) say "warning: insmod $mod: $out" ;;
    esac
done </etc/modules

# netmask (dotted) -> prefix length
mask2len() {
    len=0
    for octet in $(echo "$1" | tr . ' '); do
        case $octet in
        255) len=$((len + 8)) ;; 254) len=$((len + 7)) ;; 252) len=$((len + 6)) ;;
        248) len=$((len + 5)) ;; 240) len=$((len + 4)) ;; 224) len=$((len + 3)) ;;
        192) len=$((len + 2)) ;; 128) len=$((len + 1)) ;; 0) ;;
        *) return 1 ;;
        esac
    done
    echo "$len"
}

wait_for() { # path seconds(x10)
    n=0
    while [ ! -e "$1" ] && [ "$n" -lt "$2" ]; do sleep 0.1; n=$((n + 1)); done
    [ -e "$1" ]
}

setup_net() {
    case $ipconf in
    "" | off | none) return 0 ;;
    dhcp | on | any | both | bootp | rarp)
        say "ip=$ipconf: only static configuration is supported, skipping"
        return 0 ;;
    esac
    old_ifs=$IFS
    IFS=:
    set -- $ipconf
    IFS=$old_ifs
    client=$1 gw=$3 mask=$4 name=$5 dev=${6:-eth0}
    [ -n "$client" ] || { say "ip=$ipconf: no client address"; return 1; }
    if [ -n "$name" ]; then
        hostname "$name" || say "warning: cannot set hostname $name"
    fi
    wait_for "/sys/class/net/$dev" 50 || { say "no network device $dev"; return 1; }
    prefix=24
    if [ -n "$mask" ]; then
        prefix=$(mask2len "$mask") || { say "bad netmask $mask"; return 1; }
    fi
    ip link set lo up
    ip addr flush dev "$dev"
    ip addr add "$client/$prefix" dev "$dev" || return 1
    ip link set "$dev" up || return 1
    if [ -n "$gw" ]; then
        ip route add default via "$gw" dev "$dev" || return 1
    fi
    say "$dev $client/$prefix gw ${gw:-none} host ${name:-unset}"
}

# The image read-only at /lower, the upper disk at /upperfs, and the two
# merged at /newroot. What the VM writes lands on the upper disk.
mount_layered() { # image-device
    wait_for "$upper" 50 || { say "upper disk $upper did not appear"; return 1; }
    mkdir -p /lower /upperfs
    # noload: a registered image is clean and must never be written.
    mount -t "$rootfstype" -o ro,noload "$1" /lower || return 1
    # noinit_itable: banger made it sparse; zeroing inode tables would fill it.
    if ! mount -t ext4 -o rw,noinit_itable "$upper" /upperfs; then
        umount /lower
        return 1
    fi
    mkdir -p /upperfs/upper /upperfs/ovlwork
    if ! mount -t overlay -o lowerdir=/lower,upperdir=/upperfs/upper,workdir=/upperfs/ovlwork overlay /newroot; then
        umount /upperfs /lower
        return 1
    fi
}

while :; do
    setup_net || fail "network configuration from ip=$ipconf failed"

    case $root in
    UUID=* | LABEL=*)
        n=0
        dev=
        while [ -z "$dev" ] && [ $n -lt 50 ]; do
            dev=$(findfs "$root" 2>/dev/null) || dev=
            [ -n "$dev" ] || sleep 0.1
            n=$((n + 1))
        done
        [ -n "$dev" ] || { fail "root device $root not found"; continue; } ;;
    *)
        dev=$root
        wait_for "$dev" 50 || { fail "root device $dev did not appear (is virtio_blk loaded? is there a disk?)"; continue; } ;;
    esac

    opts=$rootmode
    [ -n "$rootflags" ] && opts="$opts,$rootflags"
    if [ -n "$upper" ]; then
        if ! mount_layered "$dev"; then
            fail "cannot layer $dev (read-only) under $upper on /newroot"
            continue
        fi
    elif ! mount -t "$rootfstype" -o "$opts" "$dev" /newroot; then
        fail "cannot mount $dev ($rootfstype, $opts) on /newroot"
        continue
    fi
    agent_init=
    if [ ! -x "/newroot$init" ] && [ ! -L "/newroot$init" ]; then
        if [ -n "$agent" ]; then
            say "$init not found on $dev: the guest agent is init"
            agent_init=1
            break
        fi
        umount /newroot
        fail "$init not found on $dev"
        continue
    fi
    break
done

[ -n "$want_shell" ] && rescue_shell

for fs in dev proc sys; do
    mount --move "/$fs" "/newroot/$fs" 2>/dev/null || umount "/$fs" 2>/dev/null
done
if [ -n "$agent_init" ]; then
    exec @banger-agent --init --root /newroot
fi
# The agent returns once it serves from inside /newroot (its child stays).
if [ -n "$agent" ]; then
    @banger-agent --root /newroot || say "warning: the guest agent did not start"
fi
say "switching to $init on $dev"
exec switch_root /newroot "$init" "$@"
# Only reached if switch_root itself failed; the mounts are gone, so just stop.
echo "banger-initrd: ERROR: switch_root failed"
[ -n "$panic_on_fail" ] && reboot -f
exec sh
INIT
chmod 0755 "$IR/init"

# Reproducible archive: fixed timestamps and owners, sorted names.
find "$IR" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 >"$WORK/initrd.img"

# --- install into OUT_DIR (each piece replaced whole) ------------------------
install -m 0644 "$WORK/vmlinux" "$OUT_DIR/vmlinux.new"
install -m 0644 "$WORK/initrd.img" "$OUT_DIR/initrd.img.new"
install -m 0644 "$KCONFIG" "$OUT_DIR/kernel.config"
rm -rf "$OUT_DIR/modules/$KVER"
mkdir -p "$OUT_DIR/modules"
mv "$WORK/modules/$KVER" "$OUT_DIR/modules/$KVER"
mv -f "$OUT_DIR/vmlinux.new" "$OUT_DIR/vmlinux"
mv -f "$OUT_DIR/initrd.img.new" "$OUT_DIR/initrd.img"
[[ -f $OUT_DIR/vmlinuz.new ]] && mv -f "$OUT_DIR/vmlinuz.new" "$OUT_DIR/vmlinuz"
echo "$KVER" >"$OUT_DIR/kernel.release"
# What this initrd can do beyond mounting root=, for make-bundle.sh.
printf '%s\n' layered-root agent >"$OUT_DIR/initrd.features"
sha256sum <"$AGENT_BIN" | cut -d' ' -f1 >"$OUT_DIR/initrd.agent.sha256"
echo "$KERNEL_PACKAGE $kdeb_version" >"$OUT_DIR/kernel.package"

log "vmlinux $(du -h "$OUT_DIR/vmlinux" | cut -f1), initrd.img $(du -h "$OUT_DIR/initrd.img" | cut -f1), modules/$KVER $(du -sh "$OUT_DIR/modules/$KVER" | cut -f1)"
log "done: $OUT_DIR (kernel $KVER)"
