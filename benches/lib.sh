# Shared by the benchmark scripts (sourced, not run): the release build, a
# work directory and the processes started, all cleaned up on exit.
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
    echo "needs redis-server and redis-benchmark (apt-get install redis-server redis-tools)" >&2
    exit 1
}
cargo build --release --quiet
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() {
    # PONG, not an error: a cluster node answers LOADING until its peers are linked.
    for _ in $(seq 100); do [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.1; done
    echo "server on $1 did not answer" >&2; exit 1
}
settled() { redis-cli -p "$1" info dynamo 2>/dev/null | tr -d '\r' | grep -qx 'layout_settled:1'; }
wait_settled() {
    # A new cluster's nodes join the first and receive their partitions
    # (docs/cluster.md, "Handoff"): measure the steady state, once every
    # member is read from. Builds from before layouts have no such field.
    redis-cli -p "$1" info dynamo 2>/dev/null | grep -q '^layout_settled:' || return 0
    for _ in $(seq 600); do settled "$1" && return 0; sleep 0.1; done
    echo "the cluster behind $1 did not settle" >&2; exit 1
}
