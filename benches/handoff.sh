#!/usr/bin/env bash
# Client throughput while a 4th node joins a 3-node cluster (issue 20:
# at least 70% of the throughput before the join), release build.
#
# Three nodes (`dynokv dev`, --fsync everysec) are loaded with KEYS keys of
# 100 bytes; redis-benchmark (SET and GET, -c 50, random keys among them)
# runs in short rounds before the join, then from the moment a 4th node
# joins until the layout has settled and the old copies are dropped.
# Prints each round's requests/s and the ratio of the rounds during the
# move to those before it.
#
#   benches/handoff.sh
#   KEYS=1000000 RATE=8 benches/handoff.sh    # a longer move (MiB/s)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
RATE=${RATE:-32}
ROUND_REQUESTS=${ROUND_REQUESTS:-20000}
BEFORE_ROUNDS=${BEFORE_ROUNDS:-5}

. benches/lib.sh
bin=target/release/dynokv
port=$(python3 compat/free_ports.py 4)
"$bin" dev --nodes 3 --port "$port" --data-dir "$work/dev" \
    -- --fsync everysec --log-level warn --handoff-rate "$RATE" >/dev/null 2>&1 &
pids+=($!)
for i in 0 1 2; do wait_ping $((port + i)); done
wait_settled "$port"
redis-benchmark -p "$port" -t set -n "$KEYS" -r "$KEYS" -d 100 -P 16 -q >/dev/null

# round -> requests/s of SET and GET together (one redis-benchmark run).
round() {
    redis-benchmark -p $((port + $1 % 3)) -t set,get -n "$ROUND_REQUESTS" -r "$KEYS" -d 100 \
        -c 50 --csv 2>/dev/null | awk -F'","' 'NR>1 {gsub(/"/, "", $2); s += $2; n++} END {printf "%.0f", s / n}'
}

echo "before the join (${KEYS} keys, handoff ${RATE} MiB/s):"
before=()
for r in $(seq "$BEFORE_ROUNDS"); do before+=("$(round "$r")"); echo "  ${before[-1]}"; done

"$bin" serve --port $((port + 3)) --peer-port $((port + 10003)) --data-dir "$work/node-4" \
    --join "127.0.0.1:$((port + 10000))" --fsync everysec --log-level warn \
    --handoff-rate "$RATE" >/dev/null 2>&1 &
pids+=($!)
started=$(date +%s.%N)
during=()
r=0
# Rounds until the layout settled and the copies it moved off are dropped
# (a bounded number: 600 rounds).
while [ $r -lt 600 ]; do
    during+=("$(round $r)")
    r=$((r + 1))
    echo "  during: ${during[-1]}"
    if settled "$port" && [ "$(redis-cli -p "$port" info dynamo | tr -d '\r' | awk -F: '/^handoff_partitions_dropped:/ {print $2}')" != 0 ]; then
        break
    fi
done
took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
received=$(redis-cli -p $((port + 3)) info dynamo | tr -d '\r' | awk -F: '/^handoff_partitions_received:/ {print $2}')
python3 - "${before[*]}" "${during[*]}" "$took" "$received" <<'PY'
import statistics, sys
before = [float(x) for x in sys.argv[1].split()]
during = [float(x) for x in sys.argv[2].split()]
b, d = statistics.mean(before), statistics.mean(during)
print(f"moved {sys.argv[4]} partitions to the new node, settled and dropped in {sys.argv[3]} s")
print(f"requests/s before {b:.0f}, during {d:.0f} (lowest round {min(during):.0f}): "
      f"{d / b:.2f} of before (lowest {min(during) / b:.2f})")
PY
