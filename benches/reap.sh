#!/usr/bin/env bash
# Mass delete and tombstone reaping (issue 22; docs/cluster.md,
# "Tombstone reaping"): a 3-node cluster (release build, --fsync
# everysec, --aae-interval 5) is filled with KEYS keys of 100 bytes, every
# one of them is deleted (DEL, pipelined), and the script waits until the
# nodes reaped every copy (tombstones_reaped = 3 × the keys). It prints
# the data directories' size full, after the deletes, once reaped, and
# after the nodes' clean stop (their last flush and compaction).
#
#   benches/reap.sh
#   KEYS=1000000 benches/reap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
. benches/lib.sh

port=$(python3 compat/free_ports.py 3)
target/release/dynokv dev --nodes 3 --port "$port" --data-dir "$work/dev" \
    -- --fsync everysec --log-level warn --aae-interval 5 >"$work/dev.log" 2>&1 &
dev=$!
pids+=("$dev")
for i in 0 1 2; do wait_ping $((port + i)); done
wait_settled "$port"

size() { du -sm "$work/dev" | cut -f1; }
sum() {
    local total=0
    for i in 0 1 2; do
        local n
        n=$(redis-cli -p $((port + i)) info dynamo | tr -d '\r' | awk -F: -v f="$1" '$1 == f {print $2}')
        total=$((total + n))
    done
    echo "$total"
}

python3 - "$KEYS" <<'EOF' | redis-cli -p "$port" --pipe >/dev/null
import sys
value = "v" * 100
for i in range(int(sys.argv[1])):
    key = f"key:{i}"
    sys.stdout.write(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(value)}\r\n{value}\r\n")
EOF
sleep 2
echo "keys: $(redis-cli -p "$port" dbsize), data directories: $(size) MiB"
start=$(date +%s)
python3 - "$KEYS" <<'EOF' | redis-cli -p "$port" --pipe >/dev/null
import sys
for i in range(int(sys.argv[1])):
    key = f"key:{i}"
    sys.stdout.write(f"*2\r\n$3\r\nDEL\r\n${len(key)}\r\n{key}\r\n")
EOF
echo "deleted: $(redis-cli -p "$port" dbsize) keys left, data directories: $(size) MiB"
want=$((3 * KEYS))
for _ in $(seq 1800); do
    reaped=$(sum tombstones_reaped)
    [ "$reaped" -ge "$want" ] && break
    sleep 1
done
echo "tombstones reaped: $reaped of $want in $(( $(date +%s) - start )) s, data directories: $(size) MiB"
kill -INT "$dev"
wait "$dev" || true
echo "after a clean stop: data directories: $(size) MiB"
