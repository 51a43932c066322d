#!/usr/bin/env bash
# Expiry benchmarks (issue: strings, expiry and keyspace):
#  1. SET key val EX 100 throughput, dynokv vs redis-server, same run;
#  2. GET on a keyspace where half the keys have expired, vs the same
#     keyspace with nothing expired (dynokv; the target is < 10% slower);
#  3. time and disk space to reclaim KEYS_RECLAIM expired keys.
#
#   benches/expiry.sh                       # defaults below
#   KEYS_RECLAIM=1000000 benches/expiry.sh  # the 1M-key reclaim run
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
KEYS_RECLAIM=${KEYS_RECLAIM:-1000000}

. benches/lib.sh
start_dynokv() { # name -> sets $port (not a subshell: the pid must reach cleanup)
    local peer
    port=$(free_port); peer=$(free_port)
    target/release/dynokv serve --port "$port" --peer-port "$peer" --data-dir "$work/$1" \
        --fsync everysec --log-level warn >"$work/$1.out" 2>"$work/$1.log" &
    pids+=($!)
    wait_ping "$port"
}
rps() { # port test args... -> requests per second
    local port=$1; shift
    redis-benchmark -p "$port" -n "$REQUESTS" -c "$CLIENTS" -r "$KEYSPACE" --csv "$@" 2>/dev/null |
        awk -F'","' 'NR==2 {print $2}'
}
# load PORT COUNT WHICH(none|half|all) PX: SETs key:%012d through redis-cli
# --pipe; WHICH keys get PX.
load() {
    python3 - "$2" "$3" "$4" <<'PY' | redis-cli -p "$1" --pipe >/dev/null
import sys
n, which, px = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = sys.stdout.buffer
for i in range(n):
    key = b"key:%012d" % i
    if which == "all" or (which == "half" and i % 2 == 0):
        out.write(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nval\r\n$2\r\nPX\r\n$%d\r\n%s\r\n" % (len(key), key, len(px), px.encode()))
    else:
        out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nval\r\n" % (len(key), key))
PY
}
info_field() { redis-cli -p "$1" info all | tr -d '\r' | awk -F: -v f="$2" '$1 == f {print $2}'; }

echo "# 1. SET key val EX 100 ($REQUESTS requests, $CLIENTS clients)"
redis_port=$(free_port)
redis-server --port "$redis_port" --dir "$work" --appendonly yes --appendfsync everysec \
    --save '' --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_ping "$redis_port"
start_dynokv setex; dyno=$port
r=$(rps "$redis_port" SET "key:__rand_int__" val EX 100)
d=$(rps "$dyno" SET "key:__rand_int__" val EX 100)
python3 -c "print(f'redis {float(\"$r\"):.0f}/s  dynokv {float(\"$d\"):.0f}/s  ratio {float(\"$d\")/float(\"$r\"):.2f}x')"

echo "# 2. GET with half the keyspace expired ($KEYSPACE keys)"
start_dynokv live; live=$port
start_dynokv half; half=$port
load "$live" "$KEYSPACE" none 1
load "$half" "$KEYSPACE" half 1
sleep 3 # every PX 1 key is expired, most reaped
echo "expired_keys reaped on the half-expired node: $(info_field "$half" expired_keys)"
a=$(rps "$live" -t get)
b=$(rps "$half" -t get)
python3 -c "print(f'all live {float(\"$a\"):.0f}/s  half expired {float(\"$b\"):.0f}/s  ratio {float(\"$b\")/float(\"$a\"):.2f}x')"

echo "# 3. reclaiming $KEYS_RECLAIM expired keys"
start_dynokv reclaim; reclaim=$port
load "$reclaim" "$KEYS_RECLAIM" all 5000 # every key expires after 5 s
target=$KEYS_RECLAIM
du_before=$(du -sk "$work/reclaim" | cut -f1)
sleep 5 # now every PX 5000 key has expired; time what is left to reap
start=$(date +%s.%N)
for _ in $(seq 600); do
    n=$(info_field "$reclaim" expired_keys)
    [ "${n:-0}" -ge "$target" ] && break
    sleep 0.1
done
end=$(date +%s.%N)
sleep 2 # let fjall flush and compact what it will
du_after=$(du -sk "$work/reclaim" | cut -f1)
python3 -c "
print(f'reaped {int(\"$n\")} of $target expired keys; {float(\"$end\")-float(\"$start\"):.1f} s after the last one expired')
print(f'disk: {int(\"$du_before\")/1024:.1f} MiB before, {int(\"$du_after\")/1024:.1f} MiB after')"
