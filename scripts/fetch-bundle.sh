#!/usr/bin/env bash
# fetch-bundle.sh [RUNTIME_DIR]      (make runtime-bundle)
#
# Fills RUNTIME_DIR (default ./runtime) from a runtime bundle archive described
# by the TOML manifest RUNTIME_MANIFEST (default runtime-bundle.toml):
#
#   location = "<local path (relative to the manifest) or http(s):// URL>"
#   sha256   = "<hex sha256 of the archive>"
#
# The archive (.tar.gz, .tar.zst or .tar) holds bundle.json, vmlinux, ... at its
# top level, as made by `tar -C runtime -czf banger-runtime.tar.gz .`.
# The sha256 is checked before anything is unpacked; on any failure RUNTIME_DIR
# is left as it was. The new bundle is unpacked next to RUNTIME_DIR and renamed
# into place only once complete.
set -euo pipefail

RUNTIME_DIR=${1:-./runtime}
MANIFEST=${RUNTIME_MANIFEST:-runtime-bundle.toml}

log() { echo "fetch-bundle: $*" >&2; }
die() { echo "fetch-bundle: error: $*" >&2; exit 1; }

for tool in sha256sum tar; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool'"
done
[[ -f $MANIFEST ]] || die "manifest $MANIFEST not found (set RUNTIME_MANIFEST)"

# Minimal TOML: top-level `key = "string"` lines; comments and blank lines ignored.
toml_get() {
    local key=$1 line value found=
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*\[ ]] && break # stop at the first table
        if [[ $line =~ ^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"([^\"]*)\"[[:space:]]*(#.*)?$ ]]; then
            value=${BASH_REMATCH[1]}
            found=1
        fi
    done <"$MANIFEST"
    [[ -n $found ]] || return 1
    printf '%s\n' "$value"
}

location=$(toml_get location) || die "$MANIFEST: no location = \"...\""
want=$(toml_get sha256) || die "$MANIFEST: no sha256 = \"...\""
want=${want,,}
[[ $want =~ ^[0-9a-f]{64}$ ]] || die "$MANIFEST: sha256 is not 64 hex digits"
[[ $want =~ ^0+$ ]] && die "$MANIFEST is the unconfigured template: set location and sha256"

parent=$(dirname "$RUNTIME_DIR")
mkdir -p "$parent"
parent=$(cd "$parent" && pwd)
RUNTIME_DIR="$parent/$(basename "$RUNTIME_DIR")"

# Temporary files live next to RUNTIME_DIR, so the final rename stays on one
# file system.
STAGE=$(mktemp -d "$parent/.runtime-fetch.XXXXXX")
cleanup() { rm -rf "$STAGE"; }
trap cleanup EXIT
archive="$STAGE/archive"

case $location in
http://* | https://*)
    command -v curl >/dev/null || die "curl is needed to download $location"
    log "downloading $location"
    curl -fsSL --retry 3 --connect-timeout 20 -o "$archive" "$location" ||
        die "download failed: $location"
    ;;
file://*)
    cp "${location#file://}" "$archive" || die "cannot read ${location#file://}"
    ;;
*)
    src=$location
    [[ $src == /* ]] || src="$(cd "$(dirname "$MANIFEST")" && pwd)/$src"
    [[ -f $src ]] || die "archive not found: $src"
    log "copying $src"
    cp "$src" "$archive"
    ;;
esac

got=$(sha256sum "$archive" | cut -d' ' -f1)
if [[ $got != "$want" ]]; then
    die "sha256 mismatch for $location: expected $want, got $got; $RUNTIME_DIR left untouched"
fi
log "sha256 ok ($got)"

magic=$(head -c 4 "$archive" | od -An -tx1 | tr -d ' \n')
case $magic in
1f8b*) decompress=(-z) ;;
28b52ffd)
    command -v zstd >/dev/null || die "zstd is needed for this archive (apt-get install zstd)"
    decompress=(-I zstd) ;;
fd377a58) decompress=(-J) ;;
*) decompress=() ;;
esac
mkdir "$STAGE/new"
tar -C "$STAGE/new" "${decompress[@]}" --no-same-owner --no-same-permissions -xf "$archive" ||
    die "cannot unpack the archive; $RUNTIME_DIR left untouched"
rm -f "$archive"

new="$STAGE/new"
# Accept an archive with one top-level directory holding the bundle, too.
if [[ ! -f $new/bundle.json ]]; then
    mapfile -t entries < <(find "$new" -mindepth 1 -maxdepth 1)
    if [[ ${#entries[@]} -eq 1 && -f ${entries[0]}/bundle.json ]]; then
        new=${entries[0]}
    else
        die "the archive has no bundle.json at its top level; $RUNTIME_DIR left untouched"
    fi
fi
for f in $(grep -oE '"(kernel|initrd|rootfs|firecracker|qemu_kernel)"[[:space:]]*:[[:space:]]*"[^"]*"' "$new/bundle.json" |
    sed 's/.*"\([^"]*\)"$/\1/'); do
    [[ -e $new/$f ]] || die "bundle.json names $f, which the archive lacks; $RUNTIME_DIR left untouched"
done
chmod 0755 "$new"

if [[ -e $RUNTIME_DIR ]]; then
    old="$STAGE/old"
    mv "$RUNTIME_DIR" "$old"
    if ! mv "$new" "$RUNTIME_DIR"; then
        mv "$old" "$RUNTIME_DIR"
        die "cannot move the new bundle into place; $RUNTIME_DIR restored"
    fi
else
    mv "$new" "$RUNTIME_DIR"
fi
log "runtime bundle installed in $RUNTIME_DIR"
