#!/usr/bin/env bash
# customize.sh IN_IMAGE OUT_IMAGE [options]
#
# A manual helper for people: customizes a copy of an ext4 rootfs image by
# hand, in a chroot on the host, and writes OUT_IMAGE plus its package
# manifest OUT_IMAGE.packages. banger's daemon never runs this: `banger image
# build` is the way images are built (in a VM, over SSH, with a build cache).
# Use this when you want to poke at an image with the host's tools, then
# `banger image import NAME OUT_IMAGE`.
#
# Options:
#   --packages a,b,...   apt-get install these (no recommends), then clean apt
#   --run SCRIPT         copy SCRIPT into the chroot and run it there (repeatable)
#   --size SIZE          grow OUT_IMAGE to SIZE first (truncate -s syntax, e.g. 4G)
#   --shell              open a shell in the chroot before unmounting
#
# The chroot gets the host's /etc/resolv.conf for apt while it runs (it is put
# back afterwards). Needs root (mount, chroot). The input image is not changed.
set -euo pipefail

usage() { sed -n '2,20p' "$0" >&2; exit 2; }
die() { echo "customize: error: $*" >&2; exit 1; }
log() { echo "customize: $*" >&2; }

[[ $# -ge 2 ]] || usage
IN=$1 OUT=$2
shift 2
PACKAGES="" SIZE="" SHELL_AT_END="" SCRIPTS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --packages) PACKAGES=${2:?--packages needs a list}; shift 2 ;;
    --run) SCRIPTS+=("${2:?--run needs a script}"); shift 2 ;;
    --size) SIZE=${2:?--size needs a size}; shift 2 ;;
    --shell) SHELL_AT_END=1; shift ;;
    *) usage ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (mount and chroot)"
[[ -f $IN ]] || die "$IN not found"
[[ -e $OUT ]] && die "$OUT exists; remove it or pick another name"
for s in "${SCRIPTS[@]}"; do [[ -f $s ]] || die "script $s not found"; done
for tool in e2fsck resize2fs mount chroot; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (Debian: apt-get install e2fsprogs mount coreutils)"
done

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/banger-customize.XXXXXX")
ROOT=$WORK/root
mkdir -p "$ROOT"
cleanup() {
    local m
    for m in $(awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$WORK"
    if [[ -z ${DONE:-} ]]; then rm -f "$OUT.tmp"; fi
}
trap cleanup EXIT

log "copying $IN"
cp --sparse=always --reflink=auto "$IN" "$OUT.tmp"
if [[ -n $SIZE ]]; then
    log "growing to $SIZE"
    truncate -s "$SIZE" "$OUT.tmp"
    e2fsck -fp "$OUT.tmp" >/dev/null || [[ $? -eq 1 ]]
    resize2fs "$OUT.tmp" >/dev/null
fi

mount -o loop "$OUT.tmp" "$ROOT"
for fs in proc sys dev; do mount --rbind "/$fs" "$ROOT/$fs"; done
resolv_backup=""
if [[ -e $ROOT/etc/resolv.conf || -L $ROOT/etc/resolv.conf ]]; then
    resolv_backup=$WORK/resolv.conf
    cp -a "$ROOT/etc/resolv.conf" "$resolv_backup"
fi
rm -f "$ROOT/etc/resolv.conf"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

if [[ -n $PACKAGES ]]; then
    log "installing ${PACKAGES//,/ }"
    IFS=, read -r -a pkgs <<<"$PACKAGES"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -- "${pkgs[@]}"
    chroot "$ROOT" apt-get clean
    rm -rf "$ROOT"/var/lib/apt/lists/*
fi
i=0
for s in "${SCRIPTS[@]}"; do
    i=$((i + 1))
    dest=/tmp/customize-$i-$(basename "$s")
    install -m 0755 "$s" "$ROOT$dest"
    log "running $s"
    chroot "$ROOT" "$dest"
    rm -f "$ROOT$dest"
done
if [[ -n $SHELL_AT_END ]]; then
    log "shell in the chroot; exit it to finish"
    chroot "$ROOT" /bin/sh || true
fi

rm -f "$ROOT/etc/resolv.conf"
[[ -n $resolv_backup ]] && cp -a "$resolv_backup" "$ROOT/etc/resolv.conf"
if [[ -x $ROOT/usr/bin/dpkg-query ]]; then
    chroot "$ROOT" dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' |
        awk '$1 == "installed" { print $2, $3 }' | LC_ALL=C sort -u >"$OUT.tmp.packages"
fi
for m in $(awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
done
e2fsck -fn "$OUT.tmp" >/dev/null || die "the customized filesystem does not check clean"
mv -f "$OUT.tmp" "$OUT"
[[ -f $OUT.tmp.packages ]] && mv -f "$OUT.tmp.packages" "$OUT.packages"
DONE=1
log "done: $OUT${PACKAGES:+ (manifest: $OUT.packages)}; register it with: banger image import NAME $OUT"
