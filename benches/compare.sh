#!/usr/bin/env bash
# Side-by-side redis-benchmark: dynokv vs a real redis-server, same machine,
# same run, same flags; prints requests/s for each and the ratio.
#
#   benches/compare.sh                 # defaults below: one dynokv node
#   NODES=3 benches/compare.sh         # a 3-node cluster (N=3, R=2, W=2), clients on node 1
#   REQUESTS=200000 benches/compare.sh # longer run
#   DYNOKV_BIN=/tmp/old/dynokv benches/compare.sh  # another build, e.g. to interleave with this one
#
# redis-server runs with AOF everysec and dynokv with --fsync everysec, so
# both acknowledge a write once it is in the OS and sync once a second.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
SIZE=${SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
TESTS=${TESTS:-set,get,incr}
PIPELINES=${PIPELINES:-"1 16"}

. benches/lib.sh
# DYNOKV_BIN: another build to measure (e.g. an older one, interleaved).
bin=${DYNOKV_BIN:-target/release/dynokv}

redis_port=$(free_port)
redis-server --port "$redis_port" --dir "$work" --appendonly yes --appendfsync everysec \
    --save '' --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
NODES=${NODES:-1}
if [ "$NODES" -eq 1 ]; then
    dyno_port=$(free_port)
    dyno_peer=$(free_port)
    "$bin" serve --port "$dyno_port" --peer-port "$dyno_peer" \
        --data-dir "$work/dynokv" --fsync everysec --log-level warn 2>"$work/dynokv.log" &
    pids+=($!)
else
    # NODES consecutive free client ports whose peer ports (+10000) are free.
    dyno_port=$(python3 compat/free_ports.py "$NODES")
    "$bin" dev --nodes "$NODES" --port "$dyno_port" --data-dir "$work/dev" \
        -- --fsync everysec --replicas 3 --read-quorum 2 --write-quorum 2 --log-level warn \
        >"$work/dev.out" 2>"$work/dynokv.log" &
    pids+=($!)
    for i in $(seq 0 $((NODES - 1))); do wait_ping $((dyno_port + i)); done
    wait_settled "$dyno_port"
    # every node must see every member before measuring
    for _ in $(seq 100); do
        up=$(redis-cli -p "$dyno_port" info dynamo | tr -d '\r' | sed -n 's/^members_up://p')
        [ "$up" = "$NODES" ] && break
        sleep 0.1
    done
fi
wait_ping "$redis_port"
wait_ping "$dyno_port"
echo "redis-server (AOF everysec) vs dynokv ($NODES node(s), fsync everysec); -n $REQUESTS -c $CLIENTS -d $SIZE -r $KEYSPACE"

# rps PORT PIPELINE TEST -> requests per second (redis-benchmark --csv)
rps() {
    redis-benchmark -p "$1" -P "$2" -t "$3" -n "$REQUESTS" -c "$CLIENTS" -d "$SIZE" \
        -r "$KEYSPACE" --csv 2>/dev/null | awk -F'","' 'NR==2 {print $2}'
}

printf '%-6s %-4s %14s %14s %7s\n' test P redis dynokv ratio
for p in $PIPELINES; do
    for t in ${TESTS//,/ }; do
        r=$(rps "$redis_port" "$p" "$t")
        d=$(rps "$dyno_port" "$p" "$t")
        ratio=$(python3 -c "print(f'{float(\"$d\")/float(\"$r\"):.2f}')")
        printf '%-6s %-4s %14s %14s %6sx\n' "$t" "$p" "$r" "$d" "$ratio"
    done
done

# Latency per request at one client: the cost of a round trip.
# redis-benchmark --csv columns: test, rps, avg, min, p50, p95, p99, max.
for port in "$redis_port" "$dyno_port"; do
    name=redis; [ "$port" = "$dyno_port" ] && name=dynokv
    redis-benchmark -p "$port" -t set,get -n 20000 -c 1 -d "$SIZE" -r "$KEYSPACE" --csv 2>/dev/null \
        | awk -F'","' -v n="$name" 'NR>1 {gsub(/"/,"",$1); gsub(/"/,"",$8); print n, $1, "p50_ms=" $5, "p99_ms=" $7, "max_ms=" $8}'
done
