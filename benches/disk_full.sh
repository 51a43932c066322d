#!/usr/bin/env bash
# A full disk, for real (issue 19): a node whose data directory is a small
# tmpfs takes redis-benchmark SETs until the tmpfs is full; then, while it
# is full, SETs are refused (MISCONF) and GETs served; the tmpfs grows
# (mount -o remount,size=) and the time until a SET succeeds again is
# measured; SETs run again; SIGTERM; a restart must find the same keys.
# The same SETs on a tmpfs that does not fill are the baseline; then
# redis-server (appendonly, appendfsync FSYNC) fills the same small tmpfs,
# for what Redis does. Needs root (it mounts tmpfs); results in
# docs/benchmarks.md, "Full disk".
#
#   sudo benches/disk_full.sh                        # --fsync always, 40 MiB, 4 KiB values
#   FSYNC=everysec sudo -E benches/disk_full.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-40m}
GROWN=${GROWN:-256m}
BYTES=${BYTES:-4096}
FSYNC=${FSYNC:-always}
CLIENTS=${CLIENTS:-8}
FAILING_SECS=${FAILING_SECS:-5}

. benches/lib.sh
mnt="$work/mnt"
mkdir "$mnt"
mount -t tmpfs -o size="$SIZE" tmpfs "$mnt"
unmount_and_clean() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap unmount_and_clean EXIT

port=$(free_port); peer=$((port < 55535 ? port + 10000 : port - 10000))
log="$work/node.log"
start() { # DATA_DIR
    target/release/dynokv serve --port "$port" --peer-port "$peer" --data-dir "$1" \
        --fsync "$FSYNC" >>"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_ping "$port"
}
now() { date +%s.%N; }
resume_ms() { # after a remount: ms until a SET is acknowledged (60 s at most)
    local begin
    begin=$(now)
    for _ in $(seq 6000); do
        if [ "$(redis-cli -p "$port" set resumed x 2>/dev/null)" = OK ]; then
            echo "first SET acknowledged $(echo "($(now) - $begin) * 1000 / 1" | bc) ms after the remount"
            return
        fi
        sleep 0.01
    done
    echo "no SET acknowledged within 60 s of the remount"
}
keys_digest() { redis-cli -p "$port" --scan | sort | sha1sum | cut -c1-12; }
sets() { # N [more flags]: N SETs of BYTES on random keys; prints redis-benchmark's last lines
    local n=$1
    shift
    redis-benchmark -p "$port" -t set -n "$n" -r 1000000000 -d "$BYTES" -c "$CLIENTS" "$@" 2>&1 |
        tr '\r' '\n' | grep -E 'requests per second|Error|rps=' | tail -2 || true
}
refused() { # N: N SETs of BYTES in one pipe; prints the errors and the time taken
    python3 - "$1" "$BYTES" <<'PY' >"$work/sets.resp"
import sys
out, value = sys.stdout.buffer, b"v" * int(sys.argv[2])
for i in range(int(sys.argv[1])):
    key = b"refused:%d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
PY
    local begin
    begin=$(now)
    redis-cli -p "$port" --pipe <"$work/sets.resp" 2>&1 | grep -o 'errors: [0-9]*, replies: [0-9]*' || true
    echo "in $(echo "($(now) - $begin) * 1000 / 1" | bc) ms"
}
gets() { # N: N GETs of random keys (most of them absent)
    redis-benchmark -p "$port" -t get -n "$1" -r 1000000000 -c "$CLIENTS" -q 2>&1 |
        tr '\r' '\n' | grep 'requests per second' || true
}

echo "== fsync $FSYNC, tmpfs $SIZE, values of $BYTES bytes, $CLIENTS clients"
start "$mnt/data"
# Until writes stay refused: an ingestion (a new table before its log
# file goes) can fill the disk for a moment, and the store takes writes
# again once it has room.
begin=$(now)
for round in $(seq 20); do
    sets 1000000
    sleep 2.5
    redis-cli -p "$port" info persistence | grep -q aof_last_write_status:err && break
    echo "(writes resumed by themselves: the disk had room again)"
done
took=$(echo "$(now) - $begin - 2.5 * $round" | bc)
acked=$(redis-cli -p "$port" dbsize)
echo "fill: $acked keys acknowledged in $took s ($(echo "$acked / $took" | bc) SET/s), $round round(s), then:"
df -h "$mnt" | tail -1
redis-cli -p "$port" set one-more x || true
echo "-- while full: SETs (through redis-cli --pipe: redis-benchmark stops at an error), then GETs"
refused 20000
gets 100000
redis-cli -p "$port" info persistence | grep aof_last
redis-cli -p "$port" dynamo status | paste - - | grep store_
sleep "$FAILING_SECS"
echo "log lines after $FAILING_SECS s more of failing: $(grep -c 'cannot take writes' "$log") failure," \
    "$(grep -c 'cannot save the member list' "$log") member list," \
    "$(grep -c 'background sync failed\|expiry reaper' "$log") sync/reaper"

echo "-- grow to $GROWN"
mount -o remount,size="$GROWN" "$mnt"
resume_ms
grep -o 'fjall reopened.*\|takes writes again.*' "$log" | sed 's/\x1b\[[0-9;]*m//g' || true
redis-cli -p "$port" info persistence | grep aof_last_write_status
echo "-- SETs after the recovery"
sets "$acked" -q | tail -1
before_keys=$(redis-cli -p "$port" dbsize)
before_digest=$(keys_digest)
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
echo "SIGTERM: exit $status"
start "$mnt/data"
echo "restart: $(redis-cli -p "$port" dbsize) keys (before: $before_keys); key digest $(keys_digest) (before: $before_digest)"
kill -TERM "$pid"
wait "$pid" || true

echo "== baseline: the same $acked SETs on a tmpfs of $GROWN that does not fill"
umount "$mnt"
mount -t tmpfs -o size="$GROWN" tmpfs "$mnt"
start "$mnt/data"
sets "$acked" -q | tail -1
gets 100000
kill -TERM "$pid"
wait "$pid" || true

echo "== redis-server $(redis-server --version | grep -o 'v=[0-9.]*'), appendonly yes, appendfsync $FSYNC, tmpfs $SIZE"
umount "$mnt"
mount -t tmpfs -o size="$SIZE" tmpfs "$mnt"
redis-server --port "$port" --dir "$mnt" --appendonly yes --appendfsync "$FSYNC" --save '' \
    --logfile "$work/redis.log" &
pid=$!
pids+=("$pid")
wait_ping "$port"
begin=$(now)
sets 1000000
took=$(echo "$(now) - $begin" | bc)
if kill -0 "$pid" 2>/dev/null; then
    acked=$(redis-cli -p "$port" dbsize)
    echo "fill: $acked keys acknowledged in $took s, then:"
    redis-cli -p "$port" set one-more x || true
    gets 100000
    redis-cli -p "$port" info persistence | grep aof_last_write_status
    mount -o remount,size="$GROWN" "$mnt"
    resume_ms
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    echo "SIGTERM: exit $status"
else
    status=0
    wait "$pid" || status=$?
    echo "redis-server exited ($status) at the failed write, after $took s:"
fi
grep -i 'error\|exiting\|can write again' "$work/redis.log" | sed 's/^[0-9]*:[A-Z] //' | sort | uniq -c | head -5
