#!/usr/bin/env bash
# make-rootfs.sh OUT_IMAGE [SIZE]
#
# Builds banger's default guest root filesystem: Debian (bookworm) minbase with
# systemd, openssh-server and iproute2, prepared for banger, written into an
# ext4 image with `mkfs.ext4 -d` (nothing is mounted). SIZE defaults to 1G.
#
# Environment (all optional):
#   MODULES_DIR    a kernel modules tree (.../modules/<kver>) to install as
#                  /lib/modules/<kver> in the guest
#   SUITE          Debian suite, default bookworm
#   EXTRA_PACKAGES comma-separated packages added to the default set
#   CACHE_DIR      where debootstrap's result is cached as a tarball, keyed by
#                  the suite, package list and architecture (default
#                  /var/cache/banger); NO_CACHE=1 ignores it, CACHE_MAX_AGE_DAYS
#                  (default 7) bounds how stale its packages may get
#
# The packages come from debootstrap's default mirror. Needs root (debootstrap).
#
# What the image expects banger to do per VM, before boot (e.g. with debugfs):
#   /etc/ssh/ssh_host_ed25519_key{,.pub}  host key pair (0600 / 0644); if absent,
#                                          banger-ssh-hostkey.service makes one
#   /root/.ssh/authorized_keys            the user's key
#   /etc/hostname                         the VM's name (shipped empty)
# and on the kernel command line: ip=<ip>::<gw>:<mask>:<name>:eth0:off (applied
# by banger's initramfs; the image has no network manager that would undo it).
set -euo pipefail

usage() { echo "usage: $0 OUT_IMAGE [SIZE]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
OUT_IMAGE=$1
SIZE=${2:-1G}

log() { echo "make-rootfs: $*" >&2; }
die() { echo "make-rootfs: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
for tool in debootstrap mkfs.ext4 tar sha256sum systemctl; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (Debian: apt-get install debootstrap e2fsprogs systemd)"
done

SUITE=${SUITE:-bookworm}
CACHE_DIR=${CACHE_DIR:-/var/cache/banger}
# systemd + udev + dbus: a normal boot, logind handling the ACPI power button.
# kmod: modprobe for udev and the user. iputils-ping, procps: basic debugging.
PACKAGES=systemd,systemd-sysv,udev,dbus,kmod,openssh-server,iproute2,ca-certificates,iputils-ping,procps
[[ -n ${EXTRA_PACKAGES:-} ]] && PACKAGES="$PACKAGES,$EXTRA_PACKAGES"
if [[ -n ${MODULES_DIR:-} ]]; then
    [[ -f $MODULES_DIR/modules.dep ]] || die "MODULES_DIR=$MODULES_DIR has no modules.dep"
fi

if command -v zstd >/dev/null; then
    COMPRESS=(-I "zstd -T0 -3"); EXT=tar.zst
else
    COMPRESS=(-z); EXT=tar.gz
fi
DEBOOTSTRAP_ARGS=(--variant=minbase "--include=$PACKAGES")
# The cache holds debootstrap's result only (the slow part), keyed by what
# determines it; customize_tree() runs on every build. Security updates: the
# tree is rebuilt when older than CACHE_MAX_AGE_DAYS (default 7) or with NO_CACHE=1.
CACHE_MAX_AGE_DAYS=${CACHE_MAX_AGE_DAYS:-7}
key=$(echo "v1 $SUITE ${DEBOOTSTRAP_ARGS[*]} $(dpkg --print-architecture)" | sha256sum | cut -c1-16)
CACHE_TAR="$CACHE_DIR/rootfs-$SUITE-$key.$EXT"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/banger-rootfs.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys inside the target while it runs;
    # make sure nothing is left mounted before deleting.
    local m
    for m in $(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"

bootstrap_tree() {
    local r=$ROOT
    log "debootstrap $SUITE (minbase + $PACKAGES)"
    debootstrap "${DEBOOTSTRAP_ARGS[@]}" "$SUITE" "$r" >&2 ||
        { tail -n 30 "$r/debootstrap/debootstrap.log" >&2 2>/dev/null || true; die "debootstrap failed"; }
    # Package caches and lists are stale as soon as the image is.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin \
        "$r"/var/lib/apt/lists/* "$r"/var/log/*.log "$r"/var/log/apt/* \
        "$r/debootstrap" "$r"/tmp/* "$r"/var/tmp/*
    mkdir -p "$r/var/lib/apt/lists/partial"
}

# Everything banger needs on top of the Debian tree. Idempotent, and cheap: it
# runs on every build, so changing it does not invalidate the debootstrap cache.
customize_tree() {
    local r=$ROOT
    log "preparing the tree for banger"
    # --- SSH: no host keys in the image; banger injects a fresh pair per VM.
    rm -f "$r"/etc/ssh/ssh_host_*
    mkdir -p "$r/etc/ssh/sshd_config.d"
    cat >"$r/etc/ssh/sshd_config.d/banger.conf" <<'EOF'
# banger: one ed25519 host key (injected per VM), key-only root login.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UseDNS no
EOF
    # Fallback for boots without an injected key (interactive.sh): make one.
    cat >"$r/etc/systemd/system/banger-ssh-hostkey.service" <<'EOF'
[Unit]
Description=Generate an SSH host key when none was injected
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=ssh.service
EOF
    install -d -m 0700 "$r/root/.ssh"
    systemctl --root="$r" enable ssh.service banger-ssh-hostkey.service >&2

    # --- console: serial-getty@ttyS0 comes from console=ttyS0; root logs in
    # there without a password (sshd still refuses empty passwords).
    sed -i 's/^root:[^:]*:/root::/' "$r/etc/shadow"
    # No VGA console on microVMs: no getty on tty1 (the serial one stays).
    systemctl --root="$r" disable getty@tty1.service >&2

    # --- identity: banger writes /etc/hostname; machine-id is made on first boot.
    : >"$r/etc/hostname"
    : >"$r/etc/machine-id"
    rm -f "$r/var/lib/dbus/machine-id"
    ln -s /etc/machine-id "$r/var/lib/dbus/machine-id"
    cat >"$r/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
    # debootstrap copied the build host's resolver configuration; drop it.
    echo "# written by banger at VM creation" >"$r/etc/resolv.conf"
    # No /etc/fstab: the initramfs mounts root= read-write, and without the
    # file systemd-remount-fs (on the boot's critical path) is skipped. An
    # fstab written later (e.g. for a work disk) simply brings it back.
    rm -f "$r/etc/fstab"

    # --- network: keep the kernel's eth0 name the initramfs configured.
    mkdir -p "$r/etc/systemd/network"
    ln -sf /dev/null "$r/etc/systemd/network/99-default.link"

    # --- boot time: nothing that waits for a network or runs maintenance.
    # Masked (not just disabled) so first-boot preset application cannot bring
    # them back; units that do not exist are skipped.
    # Under software emulation every unit costs ~0.5 s of CPU, so also the
    # boot-time module preloads (the modules still load on demand: /dev/fuse,
    # /dev/loop-control come from kmod-static-nodes) and debug/huge-page mounts.
    local unit units=()
    for unit in systemd-firstboot.service systemd-networkd-wait-online.service \
        apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
        fstrim.timer e2scrub_all.timer e2scrub_reap.service dpkg-db-backup.timer \
        man-db.timer systemd-pstore.service \
        sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
        dev-mqueue.mount dev-hugepages.mount sys-fs-fuse-connections.mount \
        modprobe@.service; do
        if [[ -e $r/lib/systemd/system/$unit || -e $r/usr/lib/systemd/system/$unit ]]; then
            if [[ $unit == modprobe@.service ]]; then
                units+=(modprobe@drm.service modprobe@fuse.service modprobe@configfs.service
                    modprobe@dm_mod.service modprobe@loop.service modprobe@efi_pstore.service)
            else
                units+=("$unit")
            fi
        fi
    done
    systemctl --root="$r" mask "${units[@]}" >&2
    # Generators run before anything starts (~0.2 s each here); these have
    # nothing to do in a microVM (no GPT autodiscovery, LUKS, dm-verity,
    # dm-integrity, hibernation, boot counting, offline updates). Kept: fstab,
    # getty (serial console), sysv (init scripts), debug (systemd.mask= etc.).
    mkdir -p "$r/etc/systemd/system-generators"
    for unit in systemd-gpt-auto-generator systemd-cryptsetup-generator \
        systemd-veritysetup-generator systemd-integritysetup-generator \
        systemd-hibernate-resume-generator systemd-bless-boot-generator \
        systemd-system-update-generator; do
        if [[ -e $r/lib/systemd/system-generators/$unit ]]; then
            ln -sf /dev/null "$r/etc/systemd/system-generators/$unit"
        fi
    done
    # sshd -t before every start only re-checks the config we ship: ~1 s here.
    mkdir -p "$r/etc/systemd/system/ssh.service.d"
    printf '[Service]\nExecStartPre=\n' >"$r/etc/systemd/system/ssh.service.d/banger.conf"
    # Mark /etc and /var as up to date with /usr, so the ConditionNeedsUpdate
    # units (sysusers, ldconfig, hwdb and catalog updates) do not run on every
    # fresh VM: the package scripts already did their work.
    local usr_s d
    usr_s=$(stat -c %Y "$r/usr")
    for d in etc var; do
        printf '# This file was created by systemd-update-done. Its only\n# purpose is to hold a timestamp of the time this directory\n# was updated. See man:systemd-update-done.service(8).\nTIMESTAMP_NSEC=%s\n' \
            "$((usr_s + 1))000000000" >"$r/$d/.updated"
        touch -d "@$((usr_s + 1))" "$r/$d/.updated"
    done
    # A console session per boot is plenty of logs for a throwaway VM.
    mkdir -p "$r/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' \
        >"$r/etc/systemd/journald.conf.d/banger.conf"

    # --- power button (QEMU system_powerdown): logind powers off on it.
    mkdir -p "$r/etc/systemd/logind.conf.d"
    printf '[Login]\nHandlePowerKey=poweroff\nPowerKeyIgnoreInhibited=yes\n' \
        >"$r/etc/systemd/logind.conf.d/banger.conf"
}

if [[ -z ${NO_CACHE:-} && -f $CACHE_TAR && -z $(find "$CACHE_TAR" -mtime "+$CACHE_MAX_AGE_DAYS") ]]; then
    log "using cached debootstrap tree $CACHE_TAR"
    tar -C "$ROOT" "${COMPRESS[@]}" --numeric-owner --xattrs --xattrs-include='*' -xpf "$CACHE_TAR"
else
    bootstrap_tree
    if [[ -z ${NO_CACHE:-} ]]; then
        rm -f "$CACHE_DIR"/rootfs-"$SUITE"-*."$EXT"
        mkdir -p "$CACHE_DIR"
        tar -C "$ROOT" "${COMPRESS[@]}" --numeric-owner --xattrs --xattrs-include='*' \
            -cf "$CACHE_TAR.tmp" .
        mv -f "$CACHE_TAR.tmp" "$CACHE_TAR"
        log "cached the debootstrap tree as $CACHE_TAR"
    fi
fi
customize_tree

if [[ -n ${MODULES_DIR:-} ]]; then
    kver=$(basename "$MODULES_DIR")
    log "installing modules $kver"
    mkdir -p "$ROOT/usr/lib/modules"
    rm -rf "$ROOT/usr/lib/modules/$kver"
    cp -a "$MODULES_DIR" "$ROOT/usr/lib/modules/$kver"
fi

log "mkfs.ext4 -d ($SIZE) -> $OUT_IMAGE"
mkdir -p "$(dirname "$OUT_IMAGE")"
rm -f "$OUT_IMAGE.tmp"
truncate -s "$SIZE" "$OUT_IMAGE.tmp"
mkfs.ext4 -q -F -L banger-root -d "$ROOT" "$OUT_IMAGE.tmp"
mv -f "$OUT_IMAGE.tmp" "$OUT_IMAGE"
used=$(dumpe2fs -h "$OUT_IMAGE" 2>/dev/null |
    awk -F: '/^Block count/ { t = $2 } /^Free blocks/ { f = $2 } /^Block size/ { b = $2 }
             END { printf "%d MiB used of %d MiB", (t - f) * b / 1048576, t * b / 1048576 }')
log "done: $OUT_IMAGE ($used)"
