#!/usr/bin/env bash
# Interleaved A/B of two dynokv builds (or two flag sets) on a 3-node
# cluster (NODES=1: one node): node CPU per operation (perf stat
# task-clock over the nodes) and requests/s, round after round, A and B in alternating order
# (A first in odd rounds, B first in even ones). On a shared machine
# requests/s move by 10-25% between runs, redis-server's too; CPU per op
# of interleaved rounds is the steadier figure for a change to one build.
#
#   A=/tmp/old/dynokv B=target/release/dynokv benches/ab.sh
#   A_FLAGS="--cache-mb 0" benches/ab.sh        # one build, two flag sets
#   TEST=get PIPELINE=16 ROUNDS=5 benches/ab.sh
#   NODES=1 A=/tmp/old/dynokv benches/ab.sh     # one node: the client path
#
# Noise on a shared 2-core machine is 10-25% per round: run 5 rounds or
# more, and believe a change that wins most rounds twice over.
#
# Each round fills KEYSPACE keys first (SET -P 16), then measures
# redis-benchmark -t TEST -P PIPELINE -c 50 -d 100 -n REQUESTS.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "needs perf (linux-perf)" >&2; exit 1; }

A=${A:-target/release/dynokv}
B=${B:-target/release/dynokv}
A_FLAGS=${A_FLAGS:-}
B_FLAGS=${B_FLAGS:-}
TEST=${TEST:-set}
PIPELINE=${PIPELINE:-1}
REQUESTS=${REQUESTS:-200000}
KEYSPACE=${KEYSPACE:-100000}
ROUNDS=${ROUNDS:-3}
NODES=${NODES:-3}

. benches/lib.sh

# round BIN FLAGS -> "rps cpu_us_per_op"
round() {
    local port dev pids
    port=$(python3 compat/free_ports.py "$NODES")
    # shellcheck disable=SC2086 # FLAGS are words
    "$1" dev --nodes "$NODES" --port "$port" --data-dir "$work/dev-$port" \
        -- --fsync everysec --log-level warn $2 >/dev/null 2>&1 &
    dev=$!
    local ports=()
    for i in $(seq 0 $((NODES - 1))); do
        wait_ping $((port + i))
        ports+=($((port + i)))
    done
    wait_settled "$port"
    redis-benchmark -p "$port" -t set -n "$KEYSPACE" -r "$KEYSPACE" -d 100 -P 16 -q >/dev/null
    pids=$(pgrep -d, -f -- "serve.*--port ($(IFS='|'; echo "${ports[*]}")) ")
    perf stat -e task-clock -x, -p "$pids" -o "$work/stat" &
    local stat=$!
    sleep 0.2
    local rps
    rps=$(redis-benchmark -p "$port" -t "$TEST" -n "$REQUESTS" -r "$KEYSPACE" -d 100 \
        -P "$PIPELINE" -c 50 --csv 2>/dev/null | awk -F'","' 'NR==2 {print $2}')
    kill -INT "$stat"; wait "$stat" 2>/dev/null || true
    kill "$dev"; wait "$dev" 2>/dev/null || true
    rm -rf "$work/dev-$port"
    local ms
    ms=$(awk -F, '/task-clock/ {print $1}' "$work/stat")
    python3 -c "print(f'{float(\"$rps\"):.0f} {float(\"$ms\") * 1000 / $REQUESTS:.1f}')"
}

echo "$TEST -P $PIPELINE, $NODES node(s), $ROUNDS rounds; A: $A $A_FLAGS; B: $B $B_FLAGS"
printf '%-6s %-3s %10s %12s\n' round ab 'req/s' 'cpu_us/op'
for r in $(seq "$ROUNDS"); do
    # Odd rounds run A first, even rounds B first: the second run of a
    # pair can be faster (a 2-round A/A run showed 10%), and a fixed order
    # would credit that to B.
    order="A B"
    [ $((r % 2)) -eq 0 ] && order="B A"
    for side in $order; do
        if [ "$side" = A ]; then bin=$A flags=$A_FLAGS; else bin=$B flags=$B_FLAGS; fi
        read -r rps cpu < <(round "$bin" "$flags")
        printf '%-6s %-3s %10s %12s\n' "$r" "$side" "$rps" "$cpu"
        echo "$side $rps $cpu" >>"$work/rounds"
    done
done
awk '{n[$1]++; r[$1]+=$2; c[$1]+=$3} END {for (s in n) printf "mean %s %10.0f %12.1f\n", s, r[s]/n[s], c[s]/n[s]}' \
    "$work/rounds" | sort
# Round by round, how often B beat A: a mean can hide one outlier round,
# and 5 of 5 happens by chance 1 time in 32.
paste -d' ' <(grep '^A' "$work/rounds") <(grep '^B' "$work/rounds") | awk '
    {n++; if ($6 < $3) cpu++; if ($5 > $2) rps++}
    END {printf "B better in %d of %d rounds by cpu_us/op, %d of %d by req/s\n", cpu, n, rps, n}'
