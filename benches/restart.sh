#!/usr/bin/env bash
# Restart time (issue 17 §3): how long a node takes from its start to its
# first PING reply, on a directory holding KEYS keys of 100 bytes,
#  1. fresh: the keys loaded into a new directory;
#  2. after FLUSHES FLUSHDBs: the same keys loaded after that many flushes;
# each after a SIGTERM (clean: saved counts) and after a kill -9 (the key
# counts are rebuilt by a scan, so that restart grows with the data).
#
#   benches/restart.sh                               # defaults below
#   KEYS=1000000 benches/restart.sh                  # the 1M-key figure
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-100000}
FLUSHES=${FLUSHES:-1000}

. benches/lib.sh
# start NAME: a node on $work/NAME; sets $pid, and $took to the seconds
# to its first PING reply.
start() {
    local begin
    begin=$(date +%s.%N)
    target/release/dynokv serve --port "$port" --peer-port "$peer" --data-dir "$work/$1" \
        --fsync everysec --log-level warn >>"$work/$1.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 6000); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.01; done
    took=$(echo "$(date +%s.%N) - $begin" | bc)
}
stop() { # SIG
    kill -"$1" "$pid"
    wait "$pid" 2>/dev/null || true
}
load() { # KEYS distinct keys of 100 bytes, through redis-cli --pipe
    python3 - "$KEYS" <<'PY' | redis-cli -p "$port" --pipe >/dev/null
import sys
out, value = sys.stdout.buffer, b"v" * 100
for i in range(int(sys.argv[1])):
    key = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(key), key, value))
PY
}
port=$(free_port); peer=$((port < 55535 ? port + 10000 : port - 10000))
for dir in fresh flushed; do
    start "$dir"
    if [[ $dir == flushed ]]; then
        for _ in $(seq "$FLUSHES"); do echo FLUSHDB; done | redis-cli -p "$port" >/dev/null
    fi
    load
    keys=$(redis-cli -p "$port" dbsize)
    for sig in TERM KILL; do
        stop "$sig"
        start "$dir"
        echo "$dir ($keys keys$([[ $dir == flushed ]] && echo ", after $FLUSHES FLUSHDBs")), restart after SIG$sig: $took s"
    done
    stop TERM
done
