#!/usr/bin/env bash
# Smoke test of a real VM, as README shows it: create, SSH, write to the work
# disk, stop, start, read it back, delete, and check nothing is left.
# Prints each step's time. Needs root (or sudo rules for ip), a runtime
# bundle (make runtime-debian) and ./banger (make build).
#
#   ./verify.sh [--vmm auto|firecracker|qemu] [--name NAME] [--nat]
#
# --nat also makes an upstream test host in a network namespace of its own
# (10.215.0.2, joined to the host by a veth pair; never an outside address),
# checks the guest reaches it through NAT and that it sees the host's address,
# and that the NAT table is gone once the VM is deleted.
set -euo pipefail

vmm=auto
name="verify-$$"
nat=0
while [ $# -gt 0 ]; do
  case "$1" in
    --vmm) vmm="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --nat) nat=1; shift ;;
    *) echo "usage: $0 [--vmm auto|firecracker|qemu] [--name NAME] [--nat]" >&2; exit 2 ;;
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

upns="banger-verify-up"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  "$banger" vm delete --force "$name" >/dev/null 2>&1 || true
  if [ "$nat" = 1 ]; then
    ip link del bgverify0 2>/dev/null || true
    ip netns del "$upns" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ "$nat" = 1 ]; then
  command -v python3 >/dev/null || { echo "--nat needs python3 for the upstream test server" >&2; exit 1; }
  ip netns add "$upns"
  ip link add bgverify0 type veth peer name eth0 netns "$upns"
  ip addr add 10.215.0.1/30 dev bgverify0 && ip link set bgverify0 up
  ip -n "$upns" addr add 10.215.0.2/30 dev eth0
  ip -n "$upns" link set eth0 up && ip -n "$upns" link set lo up
  # The upstream answers each connection with the address it came from.
  ip netns exec "$upns" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.215.0.2", 8080)); s.listen()
while True:
    c, peer = s.accept(); c.sendall(("peer %s\n" % peer[0]).encode()); c.close()
' >/dev/null 2>&1 &
  server=$!
  sleep 0.5
fi

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
if [ "$nat" = 1 ]; then
  got=$("$banger" vm ssh "$name" -- "timeout 10 bash -c 'exec 3<>/dev/tcp/10.215.0.2/8080; cat <&3'")
  [ "$got" = "peer 10.215.0.1" ] || { echo "FAIL: upstream saw '$got', not the host's masqueraded 10.215.0.1" >&2; exit 1; }
  echo "guest reached the upstream via NAT   ok ($got)"
fi
pid=$("$banger" vm show "$name" --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
step "delete" "$banger" vm delete "$name"

# Nothing may be left behind.
left=0
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "FAIL: VMM $pid still runs" >&2; left=1; fi
if [ -e "/sys/class/net/$tap" ]; then echo "FAIL: tap $tap still exists" >&2; left=1; fi
if [ -e "$dir" ]; then echo "FAIL: $dir still exists" >&2; left=1; fi
if "$banger" vm list --json | grep -q "\"$ip\""; then echo "FAIL: lease $ip still held" >&2; left=1; fi
if [ "$nat" = 1 ] && "$banger" network status --json | grep -q '"nat_table": "table'; then
  echo "FAIL: the NAT table is still there after the last VM" >&2; left=1
fi
[ "$left" = 0 ] || exit 1
echo "nothing left (process, tap, files, lease)  ok"
echo "verify: all steps passed"
