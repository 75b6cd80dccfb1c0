#!/usr/bin/env bash
# Boots the runtime bundle's guest again and again under QEMU/TCG, several
# at once (the end-to-end tier's load), and counts the boots that stall:
# the console goes quiet and the guest never reaches its login prompt.
# Settings come from the environment; the figures go to stdout, and the
# console of every stalled boot is kept under $OUT.
#
#   N=30 PARALLEL=3 VCPUS=1 THREAD=multi TSC=1 RNG=0 DEBUG=0 scripts/boot-stall-study.sh
#
# N boots in all, PARALLEL at a time; VCPUS per guest; THREAD multi|single
# (TCG's -accel thread=); TSC=1 adds tsc_early_khz (as banger does);
# RNG=1 adds a virtio-rng device; DEBUG=1 boots with systemd.log_level=debug
# and printk.devkmsg=on. A boot stalls when no login prompt shows within
# LIMIT seconds (default 120). The guest has no network device.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-30} PARALLEL=${PARALLEL:-3} VCPUS=${VCPUS:-1} THREAD=${THREAD:-multi}
TSC=${TSC:-1} RNG=${RNG:-0} DEBUG=${DEBUG:-0} LIMIT=${LIMIT:-120} MEM=${MEM:-384}
RUNTIME=${RUNTIME:-runtime}
OUT=${OUT:-$(mktemp -d /tmp/banger-stall-XXXXXX)}

args="console=ttyS0 reboot=k panic=1 root=/dev/vda rw"
if [ "$TSC" = 1 ]; then
    khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
    args="$args tsc_early_khz=$khz tsc=reliable"
fi
[ "$DEBUG" = 1 ] && args="$args systemd.log_level=debug printk.devkmsg=on"
extra=()
[ "$RNG" = 1 ] && extra+=(-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-device,rng=rng0)

# One boot: 0 when the login prompt showed, 1 when it stalled (console kept).
boot() {
    local i=$1 log="$OUT/boot-$1.log" start=$SECONDS
    qemu-system-x86_64 -M microvm,acpi=on,rtc=on,pit=on,pic=on -accel "tcg,thread=$THREAD" \
        -cpu max -m "$MEM" -smp "$VCPUS" -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$log" -kernel "$RUNTIME/vmlinux" -initrd "$RUNTIME/initrd.img" \
        -append "$args" -snapshot \
        -drive "id=disk0,file=$RUNTIME/rootfs.ext4,format=raw,if=none" \
        -device virtio-blk-device,drive=disk0 "${extra[@]}" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if grep -qa "login:" "$log" 2>/dev/null; then
            kill "$pid"; wait "$pid" 2>/dev/null || true
            echo "boot $i ok $((SECONDS - start)) s"
            rm -f "$log"
            return 0
        fi
        if [ $((SECONDS - start)) -ge "$LIMIT" ]; then
            kill "$pid"; wait "$pid" 2>/dev/null || true
            echo "boot $i STALLED; console ends: $(tail -c 300 "$log" | tr -d '\r' | tail -n 2 | tr '\n' '|')"
            return 1
        fi
        sleep 0.5
    done
    echo "boot $i EXITED; console ends: $(tail -c 300 "$log" | tr -d '\r' | tail -n 2 | tr '\n' '|')"
    return 1
}

echo "setting: VCPUS=$VCPUS THREAD=$THREAD TSC=$TSC RNG=$RNG DEBUG=$DEBUG PARALLEL=$PARALLEL MEM=$MEM, $N boots"
stalled=0 done=0
while [ "$done" -lt "$N" ]; do
    batch=()
    for _ in $(seq 1 "$PARALLEL"); do
        [ "$done" -lt "$N" ] || break
        done=$((done + 1))
        boot "$done" > "$OUT/result-$done" 2>/dev/null &
        batch+=($!)
    done
    for pid in "${batch[@]}"; do wait "$pid" || true; done
done
cat "$OUT"/result-*
stalled=$(cat "$OUT"/result-* | grep -cv ' ok ' || true)
times=$(cat "$OUT"/result-* | awk '$3 == "ok" { print $4 }' | sort -n)
median=$(echo "$times" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
worst=$(echo "$times" | tail -n 1)
echo "result: VCPUS=$VCPUS THREAD=$THREAD TSC=$TSC RNG=$RNG DEBUG=$DEBUG PARALLEL=$PARALLEL: $stalled of $N stalled; login prompt median ${median:-?} s, worst ${worst:-?} s; consoles in $OUT"
