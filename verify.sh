#!/usr/bin/env bash
# Smoke test of a real VM, as README shows it: create, SSH, write to the work
# disk, stop, start, read it back, delete, and check nothing is left.
# Prints each step's time. Needs root (or sudo rules for ip), a runtime
# bundle (make runtime-debian) and ./banger (make build).
#
#   ./verify.sh [--vmm auto|firecracker|qemu] [--name NAME]
set -euo pipefail

vmm=auto
name="verify-$$"
while [ $# -gt 0 ]; do
  case "$1" in
    --vmm) vmm="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    *) echo "usage: $0 [--vmm auto|firecracker|qemu] [--name NAME]" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
banger="${BANGER:-$here/banger}"
[ -x "$banger" ] || { echo "no $banger: run make build first" >&2; exit 1; }

step() {
  local label="$1"; shift
  local start end
  start=$(date +%s%N)
  "$@"
  end=$(date +%s%N)
  printf '%-34s %7d ms\n' "$label" $(( (end - start) / 1000000 ))
}

cleanup() { "$banger" vm delete --force "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "create ($vmm)" "$banger" vm create --name "$name" --vmm "$vmm" --memory 512
ip=$("$banger" vm show "$name" --json | sed -n 's/.*"ip": "\([0-9.]*\)".*/\1/p')
tap=$("$banger" vm show "$name" --json | sed -n 's/.*"tap": "\([^"]*\)".*/\1/p')
dir=$("$banger" vm show "$name" --json | sed -n 's/.*"dir": "\([^"]*\)".*/\1/p')
step "ssh uname -a" "$banger" vm ssh "$name" -- uname -a
step "write /work/marker" "$banger" vm ssh "$name" -- "echo persisted-$$ > /work/marker && sync"
step "stop" "$banger" vm stop "$name"
step "start" "$banger" vm start "$name"
got=$("$banger" vm ssh "$name" -- cat /work/marker)
[ "$got" = "persisted-$$" ] || { echo "FAIL: /work/marker reads '$got' after restart" >&2; exit 1; }
echo "work disk survived stop/start      ok"
pid=$("$banger" vm show "$name" --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
step "delete" "$banger" vm delete "$name"
trap - EXIT

# Nothing may be left behind.
left=0
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "FAIL: VMM $pid still runs" >&2; left=1; fi
if [ -e "/sys/class/net/$tap" ]; then echo "FAIL: tap $tap still exists" >&2; left=1; fi
if [ -e "$dir" ]; then echo "FAIL: $dir still exists" >&2; left=1; fi
if "$banger" vm list --json | grep -q "\"$ip\""; then echo "FAIL: lease $ip still held" >&2; left=1; fi
[ "$left" = 0 ] || exit 1
echo "nothing left (process, tap, files, lease)  ok"
echo "verify: all steps passed"
