#!/bin/bash
# Runs docs/bench/openloop-check.c and courier-bench's open-loop pubsub against nats-server and
# Courier, interleaved, each run on a fresh server pinned to CPU 0 with the load on CPU 1, and
# prints one line per run. Usage (from the repository root, after a release build):
#   docs/bench/openloop-check.sh RUNS RATE SIZE [MODE]     MODE: poll (default), sleep or spin
set -eu
runs=${1:-5} rate=${2:-200000} size=${3:-128} mode=${4:-poll}
secs=4 warm=1 tick=5
[ "$mode" = sleep ] && tick=100
check=$(mktemp -d)/openloop-check
cc -O2 -pthread "$(dirname "$0")/openloop-check.c" -o "$check"
bench=target/release/courier-bench
start() { # start <cmd...>: runs the server on CPU 0, waits for its port
    taskset -c 0 "$@" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return; sleep 0.05; done
    echo "server did not start: $*" >&2; exit 1
}
for i in $(seq "$runs"); do
    for server in nats-server courier; do
        for tool in check bench; do
            port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
            if [ $server = nats-server ]; then start nats-server -a 127.0.0.1 -p "$port"
            else start target/release/courier -a 127.0.0.1 -p "$port"; fi
            if [ $tool = check ]; then
                out=$(timeout 60 taskset -c 1 "$check" "$port" "$rate" "$size" $secs $tick "$mode" $warm | head -1)
            else
                out=$(timeout 60 taskset -c 1 $bench pubsub --server "nats://127.0.0.1:$port" --size "$size" \
                    --rate "$rate" --duration ${secs}s -n $((rate * secs)) --warmup ${warm}s --json |
                    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency"]
print("p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f p99.99 %.1f max %.1f us steal %s" % (l["p50_us"],l["p90_us"],l["p99_us"],l["p999_us"],l["p9999_us"],l["max_us"],r["steal_ms"]))')
            fi
            kill "$pid"; wait "$pid" 2>/dev/null || true
            echo "$i $server $tool $out" | tee -a "$check.runs"
        done
    done
done
# Medians per server and tool, and Courier / nats-server per tool.
python3 - "$check.runs" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, server, tool, rest = line.split(" ", 3)
    for q, v in re.findall(r"(p[0-9.]+) ([0-9.]+)", rest):
        runs.setdefault((server, tool, q), []).append(float(v))
qs = ["p50", "p90", "p99", "p99.9", "p99.99"]
print("medians (us)        " + "".join(f"{q:>10}" for q in qs))
for tool in ["check", "bench"]:
    for server in ["nats-server", "courier"]:
        print(f"{server:>11} {tool:<7} " + "".join(f"{statistics.median(runs[(server, tool, q)]):>10.1f}" for q in qs))
    print(f"{'ratio':>11} {tool:<7} " + "".join(
        f"{statistics.median(runs[('courier', tool, q)]) / statistics.median(runs[('nats-server', tool, q)]):>10.2f}" for q in qs))
PY
