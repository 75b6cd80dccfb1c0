#!/usr/bin/env bash
# fetch-debs.sh OUT_DIR ROOTFS PACKAGE...      (make nested-debs)
#
# Downloads PACKAGE... and every dependency the ext4 image ROOTFS does not
# already have, as .deb files into OUT_DIR, using the host's own apt
# configuration (its release must be ROOTFS's). Nothing is installed on the
# host. The nested Firecracker tier installs them into its outer VM's image,
# so its tests reach nothing off the machine. Needs root (apt's cache lock)
# and `apt-get update` done once.
set -euo pipefail

die() { echo "fetch-debs: error: $*" >&2; exit 1; }
[[ $# -ge 3 ]] || { echo "usage: $0 OUT_DIR ROOTFS PACKAGE..." >&2; exit 2; }
OUT_DIR=$1 ROOTFS=$2
shift 2
[[ -f $ROOTFS ]] || die "$ROOTFS not found (make runtime-debian)"
for tool in apt-get debugfs; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (Debian: apt-get install apt e2fsprogs)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/banger-debs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The image's dpkg database decides what is missing, not the host's.
debugfs -R "cat /var/lib/dpkg/status" "$ROOTFS" >"$WORK/status" 2>/dev/null
[[ -s $WORK/status ]] || die "cannot read /var/lib/dpkg/status from $ROOTFS"

mkdir -p "$WORK/archives/partial"
# apt drops privileges to _apt while downloading; let it write there.
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chmod 0755 "$WORK"
    chown -R _apt "$WORK/archives"
fi
apt-get -q -y --download-only \
    -o Dir::State::status="$WORK/status" \
    -o Dir::Cache::archives="$WORK/archives" \
    -o Debug::NoLocking=1 \
    install "$@" >&2 ||
    die "apt-get could not download $* (run 'apt-get update' first?)"

mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/*.deb
cp "$WORK"/archives/*.deb "$OUT_DIR"/ 2>/dev/null || true
printf '%s\n' "$@" >"$OUT_DIR/requested"
echo "fetch-debs: $(find "$OUT_DIR" -name '*.deb' | wc -l) packages in $OUT_DIR:" >&2
ls "$OUT_DIR" >&2
