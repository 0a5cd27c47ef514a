#!/usr/bin/env bash
# Fan-out across a chatd cluster versus one node, on this machine's loopback:
# a three-server NATS cluster with JetStream (nats-server from Debian), then
# for each round and layout a fresh set of chatd nodes and chatd-bench.
#
#   contrib/bench/cluster.sh            # 3 rounds, figures as JSON lines + medians
#   ROUNDS=5 contrib/bench/cluster.sh
#
# Layouts: "single" (one chatd, no --cluster), "cluster1" (one chatd with
# --cluster: the cost of going through NATS), "cluster3" (three chatd nodes,
# receivers and senders spread over them). Scenarios: fanout10 (R=1000 S=10,
# 1000 messages as fast as allowed) and steady (1000 msg/s, 5000 messages).
# Everything shares this machine's cores: the figures compare layouts, they
# do not say what three machines would do.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/chatd-cluster-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
command -v nats-server >/dev/null || { echo "apt-get install nats-server" >&2; exit 1; }
cargo build --release --bins -q
cp target/release/chatd target/release/chatd-bench "$WORK/"
ulimit -n "$(ulimit -Hn)"
git rev-parse --short HEAD | sed 's/^/commit /' >&2

for i in 1 2 3; do
    routes=""
    for j in 1 2 3; do [ "$j" != "$i" ] && routes="$routes,nats://127.0.0.1:1723$j"; done
    nats-server -js -sd "$WORK/nats$i" -n "bench$i" -a 127.0.0.1 -p "1722$i" \
        --cluster_name chatdbench --cluster "nats://127.0.0.1:1723$i" --routes "${routes#,}" \
        >"$WORK/nats$i.log" 2>&1 &
done

wait_port() {
    for _ in $(seq 300); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing on port $1" >&2
    return 1
}
wait_log() { # file text
    for _ in $(seq 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no '$2' in $1" >&2
    return 1
}

PIDS=()
start_nodes() { # layout
    PIDS=()
    local n=1 cluster=1
    case $1 in
    single) cluster=0 ;;
    cluster3) n=3 ;;
    esac
    for i in $(seq "$n"); do
        local flags=(--listen "127.0.0.1:1724$i" --ephemeral --rate 0 --conn-rate 0
            --max-per-ip 1000000 --max-rooms-per-ip 1000000 --max-conns 100000)
        if [ "$cluster" = 1 ]; then
            flags+=(--cluster "nats://127.0.0.1:1722$i" --node "bench$i")
        fi
        RUST_LOG=info "$WORK/chatd" "${flags[@]}" 2>"$WORK/chatd$i.log" &
        PIDS+=($!)
    done
    for i in $(seq "$n"); do
        wait_port "1724$i"
        [ "$cluster" = 1 ] && wait_log "$WORK/chatd$i.log" "buckets ready"
        if [ "$n" = 3 ]; then
            for j in 1 2 3; do
                [ "$j" != "$i" ] && wait_log "$WORK/chatd$i.log" "node bench$j is here"
            done
        fi
    done
    return 0
}
stop_nodes() {
    kill "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
}

RESULTS=$WORK/results.jsonl
for round in $(seq "$ROUNDS"); do
    for layout in single cluster1 cluster3; do
        for sc in fanout10 steady; do
            start_nodes "$layout"
            addrs=(--addr 127.0.0.1:17241 --pid "${PIDS[0]}")
            [ "$layout" = cluster3 ] && addrs+=(--also 127.0.0.1:17242 --also 127.0.0.1:17243)
            case $sc in
            fanout10) args=(--receivers 1000 --senders 10 --messages 1000) ;;
            steady) args=(--receivers 1000 --senders 10 --messages 5000 --rate 1000) ;;
            esac
            if out=$("$WORK/chatd-bench" fanout "${addrs[@]}" "${args[@]}" 2>>"$WORK/bench.log"); then
                echo "$out" | sed "s/^{/{\"round\":$round,\"layout\":\"$layout\",\"case\":\"$sc\",/" | tee -a "$RESULTS"
            else
                echo "round $round $layout $sc failed" >&2
            fi
            stop_nodes
        done
    done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(layout, sc, key):
    v = [r[key] for r in rows if r["layout"] == layout and r["case"] == sc and r.get(key) is not None]
    return statistics.median(v) if v else None
print("\n(medians; cluster3 spreads receivers and senders over three nodes)")
print(f"{'':34}{'single':>12}{'cluster1':>12}{'cluster3':>12}")
for sc, key, label in [("fanout10", "deliveries_per_sec", "R=1000 S=10 deliveries/s"),
                       ("fanout10", "p99_ms", "R=1000 S=10 p99 ms"),
                       ("steady", "p50_ms", "steady 1000 msg/s p50 ms"),
                       ("steady", "p99_ms", "steady 1000 msg/s p99 ms"),
                       ("steady", "lost", "steady lost")]:
    cells = [med(l, sc, key) for l in ("single", "cluster1", "cluster3")]
    print(f"{label:34}" + "".join(f"{c:>12.1f}" if isinstance(c, float) else f"{str(c):>12}" for c in cells))
PY
